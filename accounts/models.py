from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Lower


class User(AbstractUser):
    """The chat user. Custom from the first migration, as Django advises."""

    # When the user last went offline (logged out or disconnected).
    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        constraints = [
            # "Alice" and "alice" would be two people nobody can tell apart.
            models.UniqueConstraint(Lower("username"), name="accounts_user_username_ci_unique"),
        ]


class LoginAttempt(models.Model):
    """One login attempt, from the HTTP form or the WebSocket alike.

    The lockout is derived from these rows: deleting them unlocks.
    """

    class Result(models.TextChoices):
        SUCCESS = "success", "success"
        FAILURE = "failure", "wrong credentials"
        LOCKED = "locked", "refused: locked"

    username = models.CharField(max_length=150, db_index=True)
    ip = models.GenericIPAddressField(unpack_ipv4=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    result = models.CharField(max_length=10, choices=Result.choices)
    # Set on the failure that started a lockout.
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["username", "ip", "-id"], name="accounts_attempt_pair")]

    def __str__(self):
        return f"{self.username} from {self.ip}: {self.result}"
