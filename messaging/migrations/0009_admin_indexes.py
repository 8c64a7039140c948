"""Indexes for the admin's message filters at ten million messages (issue
23): room messages and deleted messages, newest first (broadcasts have
theirs from 0008). Partial, so a private message (most of them) pays
nothing more when stored; built without stopping writes on PostgreSQL."""

from django.db import migrations, models

from accounts.operations import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY runs outside a transaction

    dependencies = [("messaging", "0008_broadcast_cursors")]

    operations = [
        AddIndexOnline(
            model_name="message",
            index=models.Index(condition=models.Q(kind="room"), fields=["id"], name="messaging_msg_in_rooms"),
        ),
        AddIndexOnline(
            model_name="message",
            index=models.Index(
                condition=models.Q(deleted_at__isnull=False), fields=["id", "room"], name="messaging_msg_deleted"
            ),
        ),
    ]
