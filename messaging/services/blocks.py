"""Blocking: `blocker` receives nothing more from `blocked`."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from accounts.models import User as UserModel
from core.errors import ServiceError

from ..models import Block, Delivery
from ..selectors import user_by_name


def block_create(*, blocker: UserModel, username: str) -> Block:
    """Block `username`: nothing more from them reaches `blocker`, and what of
    theirs is still pending for `blocker` is dropped."""
    if username == blocker.username:
        raise ServiceError("invalid", "You cannot block yourself.")
    with transaction.atomic():
        blocked = user_by_name(username)
        try:
            with transaction.atomic():
                block = Block.objects.create(blocker=blocker, blocked=blocked)
        except IntegrityError:
            raise ServiceError("already_blocked", f"You already block {blocked.username}.") from None
        Delivery.objects.filter(recipient=blocker, message__sender=blocked, acked_at__isnull=True).delete()
    return block


def block_delete(*, blocker: UserModel, username: str) -> UserModel:
    with transaction.atomic():
        blocked = user_by_name(username)
        deleted, _ = Block.objects.filter(blocker=blocker, blocked=blocked).delete()
        if not deleted:
            raise ServiceError("not_blocked", f"You do not block {blocked.username}.")
    return blocked
