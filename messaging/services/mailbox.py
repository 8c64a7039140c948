"""Broadcasts in the mailboxes of users who were offline (BroadcastCursor).

A broadcast writes a row only for the users with presence; everyone else
gets theirs when they come online, written in one INSERT ... SELECT. The
invariant: every broadcast up to a user's cursor that belongs in their
mailbox is there (or was, and was acked or dropped); a later one has a row
if the user had presence when it was stored, or is caught up at their next
login. So the cursor moves whenever presence comes or goes, and nothing in
between can slip past it: that is what the fence is for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import connection
from django.db.models import BigIntegerField, Value

from accounts.models import User as UserModel

from ..models import BroadcastCursor, Delivery
from ..selectors import broadcast_cursors, broadcasts_waiting, latest_broadcast_id

# The PostgreSQL advisory lock of the fence ("bcst").
_FENCE_KEY = 0x62637374


def broadcasts_fence(*, exclusive: bool) -> None:
    """Order broadcasts and presence changes, until the transaction ends.

    On PostgreSQL a broadcast takes its id before it commits, and commits
    may land out of order: a login that read the latest broadcast id while
    an earlier broadcast (which stored no row for the user, not seeing their
    presence yet) was still uncommitted would move the cursor past it, and
    the user would never get it. Broadcasts take this lock exclusively and
    presence changes take it shared, each first thing in its transaction:
    a presence change waits for the broadcasts in flight and no broadcast
    starts before it commits, so the latest id it reads is a clean cut.
    Presence changes do not wait for each other. SQLite writes one
    transaction at a time, which is the same cut for free.
    """
    if connection.vendor == "postgresql":
        lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {lock}(%s)", [_FENCE_KEY])


def mailbox_catch_up(*, user: UserModel) -> int:
    """Write into `user`'s mailbox the broadcasts they missed while offline,
    and move their cursor to the latest. Call in the transaction that gives
    them presence, after broadcasts_fence(exclusive=False). Returns how many
    rows were written."""
    return mailboxes_catch_up(users=[user])


def mailboxes_catch_up(*, users: Sequence[UserModel]) -> int:
    """mailbox_catch_up for many users at once (a batch of logins): their
    cursors in one query, and a write only for those behind the latest
    broadcast (none, after a restart, whose stop moved every cursor)."""
    latest = latest_broadcast_id()
    cursors = broadcast_cursors(user_ids=[user.pk for user in users])
    behind = [user for user in users if cursors.get(user.pk, 0) < latest]
    written = 0
    for user in behind:
        waiting = broadcasts_waiting(user=user, after=cursors.get(user.pk, 0)).filter(pk__lte=latest)
        rows = waiting.annotate(to_user=Value(user.pk, output_field=BigIntegerField())).values_list("pk", "to_user")
        select, params = rows.query.sql_with_params()
        with connection.cursor() as cursor:
            # The SELECT has a WHERE, so SQLite does not read ON CONFLICT as a join's ON.
            cursor.execute(
                f"INSERT INTO {Delivery._meta.db_table} (message_id, recipient_id) {select} ON CONFLICT DO NOTHING",
                params,
            )
            written += max(cursor.rowcount, 0)
    if behind:
        mailbox_mark(user_ids=[user.pk for user in behind], latest=latest)
    return written


def mailbox_mark(*, user_ids: Iterable[int], latest: int | None = None) -> None:
    """Move these users' cursors to the latest broadcast: every broadcast so
    far is in their mailboxes (they had presence when it was stored). Call
    in the transaction that ends their presence, after the fence."""
    if latest is None:
        latest = latest_broadcast_id()
    BroadcastCursor.objects.bulk_create(
        [BroadcastCursor(user_id=user_id, up_to=latest) for user_id in user_ids],
        update_conflicts=True,
        unique_fields=["user"],
        update_fields=["up_to"],
    )
