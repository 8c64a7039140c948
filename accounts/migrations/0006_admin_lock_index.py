"""Lockouts in force, found through the few attempts that set one (the
admin's "locked out" filters), not by reading every login attempt."""

from django.db import migrations, models

from accounts.operations import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY runs outside a transaction

    dependencies = [("accounts", "0005_active_user_count")]

    operations = [
        AddIndexOnline(
            model_name="loginattempt",
            index=models.Index(
                condition=models.Q(locked_until__isnull=False), fields=["locked_until"], name="accounts_attempt_locked"
            ),
        ),
    ]
