"""Account reads."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db.models import Subquery
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from .models import ActiveUserCount
from .models import User as UserModel

User = get_user_model()

# The longest resume token: a token is a Django session key (session_create),
# 32 characters today and at most 40, the session table's key column. A
# longer one is no session, and is not looked up.
TOKEN_MAX = 40


class SessionEnded(enum.Enum):
    """Why a session no longer logs its user in."""

    GONE = "gone"  # logged out, expired, or never logged in
    DEACTIVATED = "deactivated"
    PASSWORD_CHANGED = "password_changed"  # made before the password last changed


@dataclass(frozen=True)
class SessionCheck:
    """`user`: whom the session is logged in as (None when GONE); `ended`:
    None while the session is valid."""

    user: UserModel | None
    ended: SessionEnded | None


def _sessions_data(session_keys: Collection[str], batch_size: int = 500) -> dict[str, Mapping[str, Any]]:
    """The data of those of `session_keys` that are still there and not
    expired, with any session engine: a database-backed one (db,
    cached_db, which writes through) is read in one query per
    `batch_size` keys, any other loaded key by key by its SessionStore."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    keys = [k for k in dict.fromkeys(session_keys) if k and len(k) <= TOKEN_MAX]
    found: dict[str, Mapping[str, Any]] = {}
    if issubclass(store, DatabaseSessionStore):
        model = store.get_model_class()
        now = timezone.now()
        for i in range(0, len(keys), batch_size):
            for session in model.objects.filter(session_key__in=keys[i : i + batch_size], expire_date__gt=now):
                found[session.session_key] = store().decode(session.session_data)
        return found
    for key in keys:
        data = store(key).load()  # {} when missing or expired
        if data:
            found[key] = data
    return found


def session_stamp(session_key: Any) -> Subquery | None:
    """The stored data of the session whose key is `session_key` (an
    expression of the outer query, e.g. ``OuterRef("session_key")``), if
    it is still there and not expired, undecoded: while it and its user's
    password and active flag stay the same, so does its sessions_check
    verdict, so a caller that checks again and again may skip what did not
    change. A subquery, so that the caller reads its rows and their
    sessions in one query. None with a session engine that keeps sessions
    outside the database: there only sessions_check can tell."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if not issubclass(store, DatabaseSessionStore):
        return None
    live = store.get_model_class().objects.filter(session_key=session_key, expire_date__gt=timezone.now())
    return Subquery(live.values("session_data")[:1])


def sessions_check(session_keys: Collection[str]) -> dict[str, SessionCheck]:
    """Whether each Django session (or resume token: its key) still logs its
    user in: a key of at most TOKEN_MAX characters, not logged out,
    not expired, the account active, and the session made since the
    user's password last changed (Django's session auth hash). The one
    rule for resume tokens, browser sessions and live sockets alike."""
    data = _sessions_data(session_keys)
    ids = {d[SESSION_KEY] for d in data.values() if d.get(SESSION_KEY) and d.get(BACKEND_SESSION_KEY)}
    users = {str(u.pk): u for u in User.objects.filter(pk__in=ids)} if ids else {}
    checks = {}
    for key in session_keys:
        d = data.get(key, {})
        user = users.get(str(d.get(SESSION_KEY))) if d.get(BACKEND_SESSION_KEY) else None
        if user is None:
            checks[key] = SessionCheck(user=None, ended=SessionEnded.GONE)
        elif not user.is_active:
            checks[key] = SessionCheck(user=user, ended=SessionEnded.DEACTIVATED)
        elif not constant_time_compare(d.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
            checks[key] = SessionCheck(user=user, ended=SessionEnded.PASSWORD_CHANGED)
        else:
            checks[key] = SessionCheck(user=user, ended=None)
    return checks


def user_for_session(session_key: str | None) -> UserModel | None:
    """The active user a Django session is logged in as, if the session is
    still valid (sessions_check)."""
    if not session_key:
        return None
    check = sessions_check([session_key])[session_key]
    return check.user if check.ended is None else None


def active_user_count() -> int:
    """How many users are active: one row kept by triggers, not a count of
    the user table. Where a TRUNCATE took the row (test flushes), count
    once and put it back."""
    active = ActiveUserCount.objects.values_list("active", flat=True).first()
    if active is None:
        active = get_user_model().objects.filter(is_active=True).count()
        ActiveUserCount.objects.bulk_create([ActiveUserCount(pk=1, active=active)], ignore_conflicts=True)
    return active
