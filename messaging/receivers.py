"""What Django tells us of that ends a live connection at once.

A page's logout and a saved account (a password set, the account
deactivated: the admin, the account page, ``changepassword``, the shell)
end the connection they concern as they happen, on whichever process
holds it. The pump's sessions check, every CHAT_SESSIONS_CHECK_SECONDS,
is the safety net for what sends no signal: an expiry, an ``UPDATE`` from
the shell, a session store outside the database; and for a login whose
session was checked just before the change committed but whose presence
row came just after the recheck looked. Checking every socket
every few seconds instead was a tenth of an idle process's CPU at 10,000
connections.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_save

from . import services

log = logging.getLogger("chat")

# The fields of a user whose change can end their login.
_ENDS_A_LOGIN = frozenset({"password", "is_active"})


def connect() -> None:
    user_logged_out.connect(_logged_out, dispatch_uid="chat.logged_out")
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="chat.user_saved")


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Sent before the session is flushed: its key is still there. A logout
    goes on if this fails: the pump's check ends the socket later."""
    session = getattr(request, "session", None)
    if user is not None and session is not None and session.session_key:
        try:
            services.presence_session_logged_out(session_key=session.session_key)
        except Exception:
            log.exception("could not end the connections of a session logging out")


def _user_saved(sender: Any, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    if created or (update_fields is not None and not _ENDS_A_LOGIN & set(update_fields)):
        return
    user_id = instance.pk
    # robust: a save goes on if this fails; the pump's check ends the socket later.
    transaction.on_commit(lambda: services.presence_user_recheck(user_id=user_id), robust=True)
