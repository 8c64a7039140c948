"""Presence.auth_hash was written at every login and never read: a password
change ends a connection through its session (whose auth hash
accounts.selectors checks), so the code stops writing it and the HMAC
computed for it per login goes.

The column stays in the database this release, with a default of its own
so the new code's inserts need not name it: the old processes, which go on
serving during an upgrade (docs/deploy.md, "Upgrading"), still write and
read it. The release after this one drops it."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0009_admin_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.AlterField(
                    model_name="presence",
                    name="auth_hash",
                    field=models.CharField(max_length=128, blank=True, db_default=""),
                ),
            ],
            state_operations=[
                migrations.RemoveField(model_name="presence", name="auth_hash"),
            ],
        ),
    ]
