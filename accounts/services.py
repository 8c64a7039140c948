"""Account writes: signup, credential checks with lockout, unlock.

The HTTP forms and the WebSocket consumer both call these, so both share one
set of rules and one failure count per (username, client IP). So does the
admin's login form.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, authenticate, get_user_model
from django.contrib.auth import hashers as django_hashers
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, QuerySet
from django.utils import timezone

from core import metrics
from core.addresses import in_networks, trusted_networks, untrusted_forwarding
from core.errors import ServiceError

from . import names
from .models import LoginAttempt, NameHold, PasswordResetAttempt, SignupAttempt
from .models import User as UserModel

User = get_user_model()
log = logging.getLogger("chat")

# Deleted accounts are renamed deleted-<id>; nobody may sign up so.
DELETED_PREFIX = "deleted-"


def _validation_text(error: ValidationError) -> str:
    return " ".join(error.messages)


def _address_budget(budget: int, ip: str) -> int:
    """`budget`, or 0 (no budget) for an address in CHAT_ADDRESS_BUDGET_EXEMPT
    (nobody by default). Never 0 for a request a proxy nobody trusted
    forwarded: its address is the proxy's, shared by every client behind
    it. The (username, IP) lockout applies to every address."""
    if not in_networks(ip, trusted_networks(list(settings.CHAT_ADDRESS_BUDGET_EXEMPT))):
        return budget
    if untrusted_forwarding.get():
        _warn_exempt_proxy(ip)
        return budget
    return 0


_warned: set[str] = set()


def _warn_exempt_proxy(ip: str) -> None:
    """Say so, loudly but once per address and process: the exemption is
    refused, and the operator should list the proxy in TRUSTED_PROXIES."""
    if ip in _warned:
        return
    _warned.add(ip)
    log.warning(
        "A proxy at %s forwards clients (X-Forwarded-For) but is not in TRUSTED_PROXIES: every client behind it"
        " has its address, so CHAT_ADDRESS_BUDGET_EXEMPT does not spare it. List the proxy in TRUSTED_PROXIES.",
        ip,
    )


def _address_wait(attempts: QuerySet[Any], *, budget: int, window: float, now: datetime) -> int:
    """Seconds until one more attempt fits in an address's budget (0: now)."""
    if budget <= 0:
        return 0
    since = now - timedelta(seconds=window)
    times: list[datetime] = list(attempts.filter(at__gte=since).order_by("-at").values_list("at", flat=True)[:budget])
    if len(times) < budget:
        return 0
    return max(1, math.ceil((times[-1] + timedelta(seconds=window) - now).total_seconds()))


def user_signup(*, username: str, password: str, ip: str = "0.0.0.0", email: str = "") -> UserModel:
    """Create an account (not logged in). ServiceError invalid, username_taken,
    or rate_limited when this address has signed up too often lately (every
    attempt counts, so probing which names are taken is as slow as signing up).
    `email` is optional: it is only for resetting a forgotten password."""
    wait = _address_wait(
        SignupAttempt.objects.filter(ip=ip),
        budget=_address_budget(settings.CHAT_SIGNUPS_PER_ADDRESS, ip),
        window=settings.CHAT_SIGNUP_WINDOW_SECONDS,
        now=timezone.now(),
    )
    if wait:
        raise ServiceError(
            "rate_limited", f"Too many sign-ups from your address. Try again in {wait} seconds.", retry_after=wait
        )
    SignupAttempt.objects.create(ip=ip, username=username[: names.USERNAME_MAX])
    username = username_clean(username)
    try:
        validate_password(password, User(username=username))
    except ValidationError as e:
        raise ServiceError("invalid", f"Password: {_validation_text(e)}") from None
    email = _clean_email(email)
    if _name_unavailable(names.fold(username)):
        raise ServiceError("username_taken", f"The username {username!r} is taken.")
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password, email=email)
    except IntegrityError:
        raise ServiceError("username_taken", f"The username {username!r} is taken.") from None


def _name_unavailable(key: str) -> bool:
    """Taken, held after an account's deletion, or of the deleted-<id> form."""
    return (
        key.startswith(DELETED_PREFIX)
        or User.objects.filter(username_key=key).exists()
        or NameHold.objects.filter(username_key=key, until__gt=timezone.now()).exists()
    )


def _clean_email(email: str) -> str:
    """The address as stored ("" for none), or ServiceError invalid."""
    email = User.objects.normalize_email((email or "").strip())
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise ServiceError("invalid", "Email: enter a valid email address.") from None
    return email


def user_email_set(*, user: UserModel, email: str) -> str:
    """Set (or with "" remove) the address password resets are sent to."""
    user.email = _clean_email(email)
    User.objects.filter(pk=user.pk).update(email=user.email)
    return user.email


def password_change(*, user: UserModel, old_password: str, new_password: str, ip: str) -> None:
    """Change the password, knowing the old one.

    The old password is checked by user_authenticate, so a wrong one counts
    toward the login lockout like a failed login (a stolen session cannot
    be used to guess it). The new one must pass the validators. Every
    session and resume token of the user made before now stops working:
    they carry the hash of the old password (the caller keeps its own with
    update_session_auth_hash), and live sockets are closed by the presence
    check, which compares the same hash. ServiceError
    invalid_credentials, locked, invalid."""
    try:
        user_authenticate(username=user.username, password=old_password, ip=ip)
    except ServiceError as e:
        if e.code == "invalid_credentials":
            raise ServiceError("invalid_credentials", "Your current password is wrong.") from None
        raise
    try:
        validate_password(new_password, user)
    except ValidationError as e:
        raise ServiceError("invalid", f"Password: {_validation_text(e)}") from None
    user.set_password(new_password)
    user.save(update_fields=["password"])


def password_reset_budget(*, email: str, ip: str) -> bool:
    """Count a request for a reset email; whether to send one.

    ServiceError rate_limited when this client address asked too often
    (CHAT_RESETS_PER_ADDRESS per window): that says nothing about any
    account. Past CHAT_RESETS_PER_ACCOUNT for one email address it returns
    False, and the caller sends nothing but answers as usual, so the answer
    never tells whether an address has an account, and nobody can flood a
    mailbox."""
    now = timezone.now()
    email = (email or "").strip().lower()[:254]
    window = settings.CHAT_RESET_WINDOW_SECONDS
    wait = _address_wait(
        PasswordResetAttempt.objects.filter(ip=ip),
        budget=_address_budget(settings.CHAT_RESETS_PER_ADDRESS, ip),
        window=window,
        now=now,
    )
    if wait:
        raise ServiceError(
            "rate_limited", f"Too many requests from your address. Try again in {wait} seconds.", retry_after=wait
        )
    recent = PasswordResetAttempt.objects.filter(email=email, at__gte=now - timedelta(seconds=window)).count()
    PasswordResetAttempt.objects.create(ip=ip, email=email)
    return settings.CHAT_RESETS_PER_ACCOUNT <= 0 or recent < settings.CHAT_RESETS_PER_ACCOUNT


def account_anonymise(*, user: UserModel) -> None:
    """The accounts half of deleting an account (messaging.services.
    account_delete is the whole): no login, no personal data, the name
    renamed to deleted-<id> so others' conversations stay readable, and the
    old name held from new sign-ups for CHAT_DELETED_NAME_DAYS. A new
    unusable password changes the session hash: every session and resume
    token ends."""
    key = names.fold(user.username)
    until = timezone.now() + timedelta(days=settings.CHAT_DELETED_NAME_DAYS)
    NameHold.objects.update_or_create(username_key=key, defaults={"until": until})
    user.username = f"{DELETED_PREFIX}{user.pk}"
    user.email = ""
    user.first_name = user.last_name = ""
    user.is_active = user.is_staff = user.is_superuser = False
    user.set_unusable_password()
    user.save()


def _serialize_pair(username: str, ip: str) -> None:
    """Make concurrent attempts for one (username, IP) take turns.

    SQLite already runs one write transaction at a time (IMMEDIATE); on
    PostgreSQL an advisory lock held to the end of the transaction does it.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"login:{ip}:{username}"])


def _lock_state(username: str, ip: str, now: datetime) -> tuple[float, int]:
    """(seconds left on a lock or 0, failures in the current streak)."""
    attempts = LoginAttempt.objects.filter(username=username, ip=ip)
    last_success = attempts.filter(result=LoginAttempt.Result.SUCCESS).aggregate(m=Max("id"))["m"] or 0
    last_lock = (
        attempts.filter(id__gt=last_success, locked_until__isnull=False)
        .order_by("-id")
        .only("id", "locked_until")
        .first()
    )
    if last_lock and last_lock.locked_until and last_lock.locked_until > now:
        return (last_lock.locked_until - now).total_seconds(), 0
    since = last_lock.id if last_lock else last_success
    return 0, attempts.filter(id__gt=since, result=LoginAttempt.Result.FAILURE).count()


def login_lock_remaining(*, username: str, ip: str) -> int:
    """Seconds (rounded up) until this pair may try again; 0 when not locked."""
    remaining, _ = _lock_state(username, ip, timezone.now())
    return math.ceil(remaining)


def lockout_warning(attempts_left: int) -> str:
    """What to add to a failed login's message when the lock is one failure
    away, or has just been set; empty before that."""
    seconds = settings.LOGIN_LOCKOUT_SECONDS
    span = "a minute" if seconds == 60 else f"{seconds} seconds"
    if attempts_left == 1:
        return f" One more wrong password locks this name for {span}."
    if attempts_left == 0:
        return f" This name is now locked for {span}."
    return ""


def user_authenticate(*, username: str, password: str, ip: str) -> UserModel:
    """Check credentials under the lockout rules; return the user.

    Two budgets: LOGIN_FAILURE_LIMIT failures in a row lock one (username,
    IP) pair for LOGIN_LOCKOUT_SECONDS, and CHAT_PASSWORD_FAILURES_PER_ADDRESS
    failures within CHAT_PASSWORD_WINDOW_SECONDS lock the address for every
    username, so one address cannot make the server hash passwords for
    name after name. While locked, the password is not checked; the refusal
    is recorded.

    The attempt is recorded as a failure *before* the password is checked,
    in a short serialized transaction, so a burst of parallel attempts can
    never get more than LOGIN_FAILURE_LIMIT passwords checked; a right
    password then turns it into a success. The slow hash runs outside any
    lock.
    """
    now = timezone.now()
    with transaction.atomic():
        _serialize_pair(username, ip)
        remaining, failures = _lock_state(username, ip, now)
        address_wait = _address_wait(
            LoginAttempt.objects.filter(ip=ip, result=LoginAttempt.Result.FAILURE),
            budget=_address_budget(settings.CHAT_PASSWORD_FAILURES_PER_ADDRESS, ip),
            window=settings.CHAT_PASSWORD_WINDOW_SECONDS,
            now=now,
        )
        attempt = None
        if not remaining and not address_wait:
            locked_until = None
            if failures + 1 >= settings.LOGIN_FAILURE_LIMIT:
                locked_until = now + timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
            attempt = LoginAttempt.objects.create(
                username=username, ip=ip, result=LoginAttempt.Result.FAILURE, locked_until=locked_until
            )
    if attempt is None:
        LoginAttempt.objects.create(username=username, ip=ip, result=LoginAttempt.Result.LOCKED)
        retry_after = max(1, math.ceil(remaining), address_wait)
        whom = "logins" if remaining else "failed logins from your address"
        log.warning("login refused: %s from %s is locked for %s s (%s)", username, ip, retry_after, whom)
        metrics.locked_out.inc()
        raise ServiceError("locked", f"Too many {whom}. Try again in {retry_after} seconds.", retry_after=retry_after)
    user = authenticate(None, username=username, password=password)
    if user is None:
        locks = attempt.locked_until is not None
        log.warning("login failed: %s from %s%s", username, ip, ", now locked" if locks else "")
        metrics.failed_logins.inc()
        # Said before it bites: how many more failures the lock allows.
        left = max(0, settings.LOGIN_FAILURE_LIMIT - failures - 1)
        message = "Wrong username or password." + lockout_warning(left)
        raise ServiceError("invalid_credentials", message, attempts_left=left)
    LoginAttempt.objects.filter(pk=attempt.pk).update(result=LoginAttempt.Result.SUCCESS, locked_until=None)
    return user


def login_unlock(*, username: str, ip: str | None = None) -> int:
    """Forget failed and refused attempts, which lifts any lockout."""
    attempts = LoginAttempt.objects.filter(username=username).exclude(result=LoginAttempt.Result.SUCCESS)
    if ip is not None:
        attempts = attempts.filter(ip=ip)
    deleted, _ = attempts.delete()
    return deleted


def session_create(*, user: UserModel) -> str:
    """A Django session logged in as `user`, for a client that is not a
    browser; its key is the protocol's resume token. It ends like any other
    session: logout, a password change, deactivation, expiry."""
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.set_expiry(settings.CHAT_TOKEN_SECONDS)
    session.create()
    key: str = session.session_key  # create() has set it
    return key


def session_end(*, session_key: str) -> None:
    """Log a session out (the resume token or cookie behind it stops working)."""
    if session_key:
        import_module(settings.SESSION_ENGINE).SessionStore(session_key).delete()


def login_attempts_prune(*, older_than: datetime) -> int:
    """Delete login attempts older than `older_than` that no lock depends on."""
    deleted, _ = LoginAttempt.objects.filter(at__lt=older_than).exclude(locked_until__gt=timezone.now()).delete()
    return deleted


def account_records_prune(*, now: datetime) -> dict[str, int]:
    """Forget password-reset requests past their window and name holds past
    their date: neither limits anything any more."""
    resets, _ = PasswordResetAttempt.objects.filter(
        at__lt=now - timedelta(seconds=settings.CHAT_RESET_WINDOW_SECONDS)
    ).delete()
    holds, _ = NameHold.objects.filter(until__lt=now).delete()
    return {"reset requests": resets, "name holds": holds}


def username_clean(username: str) -> str:
    """The username as stored (NFKC), or ServiceError invalid: signing up,
    seeding and the old server's import all take names through it."""
    username = names.normalize(username)
    try:
        # First, alone: Django's own validator refuses these characters too,
        # with a message that does not say what is wrong.
        names.validate_no_bidi_controls(username)
        cleaned: str = User._meta.get_field("username").clean(username, None)
        return cleaned
    except ValidationError as e:
        raise ServiceError("invalid", f"Username: {_validation_text(e)}") from None


def user_bulk_create(
    *,
    usernames: Iterable[str],
    password: str,
    batch_size: int = 1000,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Create many users sharing one password (seeding); return how many were new.

    The password is hashed once: hashing it per user would take minutes for
    ten thousand users. Existing names are skipped. `progress(n)` is called
    after each batch of n names.
    """
    encoded = django_hashers.make_password(password)
    usernames = [username_clean(name) for name in usernames]
    created = 0
    for i in range(0, len(usernames), batch_size):
        batch = usernames[i : i + batch_size]
        keys = {n: names.fold(n) for n in batch}
        taken = set(User.objects.filter(username_key__in=keys.values()).values_list("username_key", flat=True))
        new = [User(username=n, username_key=keys[n], password=encoded) for n in batch if keys[n] not in taken]
        with transaction.atomic():
            User.objects.bulk_create(new, ignore_conflicts=True)
        created += len(new)
        if progress:
            progress(len(batch))
    return created


def account_deactivate(*, user: UserModel) -> None:
    """No more logins for this account. (Ending its live connection is the
    chat's part: messaging.services.user_deactivate.)"""
    User.objects.filter(pk=user.pk).update(is_active=False)
