from typing import Any

from django.contrib.auth.models import AbstractUser
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.db import models

from . import names


class User(AbstractUser):
    """The chat user. Custom from the first migration, as Django advises."""

    username = models.CharField(
        "username",
        max_length=names.USERNAME_MAX,
        unique=True,
        help_text=f"{names.USERNAME_MAX} characters or fewer, of one alphabet. Letters, digits and @/./+/-/_ only.",
        validators=[names.validate_no_bidi_controls, UnicodeUsernameValidator(), names.validate_one_script],
        error_messages={"unique": "A user with that username already exists."},
    )
    # The name as people read it (accounts.names.fold): unique, so "Alice"
    # cannot sign up beside "alice", nor "ÉMILE" beside "émile". Null only
    # for an old duplicate the migration could not give a key.
    username_key = models.CharField(max_length=600, unique=True, null=True, editable=False)
    # When the user last went offline (logged out or disconnected).
    last_seen = models.DateTimeField(null=True, blank=True)

    # django-stubs declares no AbstractUser.Meta (Django has one).
    class Meta(AbstractUser.Meta):  # type: ignore[name-defined,misc]
        swappable = "AUTH_USER_MODEL"

    def clean(self) -> None:
        super().clean()
        self.username_key = names.fold(self.username)

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Derived from the username, however it was set (admin, shell, services).
        self.username_key = names.fold(self.username)
        if kwargs.get("update_fields") is not None and "username" in kwargs["update_fields"]:
            kwargs["update_fields"] = {*kwargs["update_fields"], "username_key"}
        super().save(*args, **kwargs)


class LoginAttempt(models.Model):
    """One login attempt, from the HTTP form or the WebSocket alike.

    The lockout is derived from these rows: deleting them unlocks.
    """

    class Result(models.TextChoices):
        SUCCESS = "success", "success"
        FAILURE = "failure", "wrong credentials"
        LOCKED = "locked", "refused: locked"

    username = models.CharField(max_length=names.USERNAME_MAX, db_index=True)
    ip = models.GenericIPAddressField(unpack_ipv4=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    result = models.CharField(max_length=10, choices=Result.choices)
    # Set on the failure that started a lockout.
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["username", "ip", "-id"], name="accounts_attempt_pair"),
            models.Index(fields=["ip", "at"], name="accounts_attempt_address"),
            # Lockouts in force (the admin's filters): the few rows that set one.
            models.Index(
                fields=["locked_until"], name="accounts_attempt_locked", condition=models.Q(locked_until__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.username} from {self.ip}: {self.result}"


class SignupAttempt(models.Model):
    """One signup (made or refused), for the per-address signup budget."""

    ip = models.GenericIPAddressField(unpack_ipv4=True)
    at = models.DateTimeField(auto_now_add=True)
    username = models.CharField(max_length=names.USERNAME_MAX)

    class Meta:
        indexes = [models.Index(fields=["ip", "at"], name="accounts_signup_address")]

    def __str__(self) -> str:
        return f"{self.username} from {self.ip}"


class NameHold(models.Model):
    """The name of a deleted account, kept from new sign-ups until `until`,
    so nobody can pose as that person to their contacts right away."""

    username_key = models.CharField(max_length=600, unique=True)
    until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.username_key} until {self.until:%Y-%m-%d}"


class PasswordResetAttempt(models.Model):
    """One request for a password-reset email, for its two budgets: per
    client address, and per email address (an account)."""

    ip = models.GenericIPAddressField(unpack_ipv4=True)
    email = models.CharField(max_length=254)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["ip", "at"], name="accounts_reset_address"),
            models.Index(fields=["email", "at"], name="accounts_reset_email"),
        ]

    def __str__(self) -> str:
        return f"reset for {self.email} from {self.ip}"


class ActiveUserCount(models.Model):
    """How many users are active, kept by database triggers on the user
    table (migration 0005), whoever writes it: signup, the admin, imports,
    raw SQL. One row. A broadcast answers how many users it will reach;
    counting 100,000 rows for each would make its cost grow with the
    number of registered users. A TRUNCATE (test flushes) removes the row
    without a trigger; selectors.active_user_count counts and puts it back.
    """

    active = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.active} active users"
