"""Account reads."""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

from .models import User as UserModel

User = get_user_model()


def user_for_session(session_key: str | None) -> UserModel | None:
    """The active user a Django session is logged in as, if the session is
    still valid: not logged out, not expired, and made before the user's
    password last changed (Django's session auth hash)."""
    if not session_key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = session.load()  # {} when missing or expired
    if not data.get(SESSION_KEY) or not data.get(BACKEND_SESSION_KEY):
        return None
    user = User.objects.filter(pk=data[SESSION_KEY], is_active=True).first()
    if user is None or not constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
        return None
    return user
