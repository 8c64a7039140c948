"""Presence.auth_hash was written at every login and never read: a password
change ends a connection through its session (whose auth hash
accounts.selectors checks), so the column and the HMAC computed for it per
login go."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0009_admin_indexes"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="presence",
            name="auth_hash",
        ),
    ]
