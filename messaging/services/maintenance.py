"""Clean-up of rows nobody needs any more."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.services import account_records_prune, login_attempts_prune

from ..models import ClientRequest, Edit


def records_prune() -> dict[str, int]:
    """Forget client ids older than a day, old login attempts, edits no
    rate limit counts any more (kept an hour at least, should the window be
    made longer), and password-reset requests and name holds that no longer
    limit anything."""
    now = timezone.now()
    edits, _ = Edit.objects.filter(
        edited_at__lt=now - timedelta(seconds=max(settings.CHAT_RATE_LIMIT_SECONDS, 3600))
    ).delete()
    client_ids, _ = ClientRequest.objects.filter(
        created_at__lt=now - timedelta(seconds=settings.CHAT_CLIENT_ID_SECONDS)
    ).delete()
    attempts = login_attempts_prune(older_than=now - timedelta(days=settings.CHAT_LOGIN_ATTEMPTS_KEEP_DAYS))
    return {"client ids": client_ids, "login attempts": attempts, "edits": edits, **account_records_prune(now=now)}
