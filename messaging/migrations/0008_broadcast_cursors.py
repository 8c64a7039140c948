"""Broadcasts stop writing a row per registered user (BroadcastCursor).

Every mailbox already holds its broadcasts, so each existing user's
cursor starts at the latest broadcast: their next login writes nothing
old again (a row dropped by a block or a deletion stays dropped).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def cursors_at_latest(apps, schema_editor):  # type: ignore[no-untyped-def]
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    Message = apps.get_model("messaging", "Message")
    BroadcastCursor = apps.get_model("messaging", "BroadcastCursor")
    latest = Message.objects.filter(kind="broadcast").order_by("-id").values_list("id", flat=True).first() or 0
    ids = User.objects.values_list("id", flat=True).order_by("id").iterator(chunk_size=5000)
    batch = []
    for user_id in ids:
        batch.append(BroadcastCursor(user_id=user_id, up_to=latest))
        if len(batch) == 5000:
            BroadcastCursor.objects.bulk_create(batch)
            batch = []
    BroadcastCursor.objects.bulk_create(batch)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_refuse_direction_controls"),
        ("messaging", "0007_reaction_kept_inactive"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="BroadcastCursor",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("up_to", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("kind", "broadcast")), fields=["id"], name="messaging_msg_broadcast"
            ),
        ),
        migrations.RunPython(cursors_at_latest, migrations.RunPython.noop),
    ]
