"""Rooms at size: `rooms` for a user in many rooms, and the query plans of
a room's history, search and unread counts.

    .venv/bin/python bench/room_plans.py                      # SQLite
    .venv/bin/python bench/room_plans.py --database-url postgres://postgres@127.0.0.1:5432/test

Makes a fresh database (as bench/search_bench.py does), seeds --users users,
a user `user1` in --rooms rooms of three members with --per-room messages
each (half of them unread), and one big room of --members members with
--messages messages delivered to all of them; then times
`messaging.selectors.room_list` (what `rooms` runs) for user1 and prints
the database's plan of each query that history, search and `rooms` run in
a room. Seeding goes around the services (bulk inserts): it is set-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.search_bench import plan  # noqa: E402

WORDS = ["lunch", "standup", "deploy", "review", "coffee", "release", "bug", "fix", "the", "plan"]


def seed(*, users: int, rooms: int, per_room: int, members: int, messages: int) -> None:
    """Bulk inserts: users; user1's small rooms; the big room and its history."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from messaging.models import Delivery, Message, ReadMark, Room, RoomMember

    User = get_user_model()
    User.objects.bulk_create(
        [User(username=f"user{i}", username_key=f"user{i}", password="!") for i in range(1, users + 1)],
        batch_size=1000,
    )
    people = list(User.objects.order_by("id"))
    me, two, three = people[:3]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction.atomic():
        small = Room.objects.bulk_create(Room(name=f"small-{i}", created_at=start) for i in range(rooms))
        RoomMember.objects.bulk_create(
            RoomMember(room=r, user=u, admin=u == me, joined_at=start) for r in small for u in (me, two, three)
        )
        rows = [
            Message(kind="room", room=r, sender=(two if k % 2 else me), body=f"{WORDS[k % 10]} {k}", sent_at=start)
            for r in small
            for k in range(per_room)
        ]
        Message.objects.bulk_create(rows, batch_size=2000)
        Delivery.objects.bulk_create(
            (Delivery(message=m, recipient=u, pushed_at=start, acked_at=start) for m in rows for u in (me, two, three)
             if u.pk != m.sender_id),
            batch_size=5000,
        )  # fmt: skip
        # user1 has read the first half of each small room.
        ReadMark.objects.bulk_create(
            ReadMark(user=me, room=r, up_to=rows[i * per_room + per_room // 2 - 1].pk) for i, r in enumerate(small)
        )
        big = Room.objects.create(name="big", created_at=start)
        crowd = people[:members]
        RoomMember.objects.bulk_create(RoomMember(room=big, user=u, admin=u == me, joined_at=start) for u in crowd)
    done = 0
    while done < messages:
        n = min(10_000, messages - done)
        with transaction.atomic():
            batch = Message.objects.bulk_create(
                (
                    Message(kind="room", room=big, sender=crowd[(done + i) % members],
                            body=f"{WORDS[(done + i) % 10]} {WORDS[(done + i) // 10 % 10]} {done + i}",
                            sent_at=start + timedelta(seconds=done + i))
                    for i in range(n)
                ),
                batch_size=2000,
            )  # fmt: skip
            first, last = batch[0].pk, batch[-1].pk
            with connection.cursor() as cursor:  # every member but the sender, acked
                cursor.execute(
                    f"INSERT INTO {Delivery._meta.db_table} (message_id, recipient_id, pushed_at, acked_at)"
                    f" SELECT m.id, rm.user_id, m.sent_at, m.sent_at FROM {Message._meta.db_table} m"
                    f" JOIN {RoomMember._meta.db_table} rm ON rm.room_id = m.room_id"
                    " WHERE m.id BETWEEN %s AND %s AND rm.user_id <> m.sender_id",
                    [first, last],
                )
        done += n
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # planner statistics, as autovacuum would gather in time


def measure(*, samples: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from messaging import selectors
    from messaging.models import Message, ReadMark, Room

    me = get_user_model().objects.get(username="user1")
    big = Room.objects.get(name="big")
    for when in ("big room unread", "big room read"):
        if when == "big room read":
            ReadMark.objects.create(user=me, room=big, up_to=Message.objects.filter(room=big).latest("id").pk)
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            listed = selectors.room_list(user=me)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        unread = sum(r["unread"] for r in listed)
        print(
            f"rooms for a user in {len(listed)} rooms, {when} ({unread} unread in all):"
            f" p50 {statistics.median(times):.1f} ms, p99 {times[min(len(times) - 1, int(len(times) * 0.99))]:.1f} ms"
            f" ({samples} calls)"
        )
    cases: list[tuple[str, Any]] = [
        ("history of the big room (latest 50)", lambda: selectors.message_history(user=me, peer=None, room_id=big.pk)),
        (
            "search 'lunch' in the big room",
            lambda: selectors.message_search(user=me, query="lunch", peer=None, room_id=big.pk),
        ),
        ("rooms (unread counts, last message; the big room read)", lambda: selectors.room_list(user=me)),
    ]
    for label, call in cases:
        with CaptureQueriesContext(connection) as queries:
            t0 = time.perf_counter()
            call()
            took = (time.perf_counter() - t0) * 1000
        print(f"\n{label}: {took:.1f} ms, {len(queries)} queries ({connection.vendor})")
        for q in queries:
            print(f"  -- {q['sql'][:300]}{'…' if len(q['sql']) > 300 else ''}")
            print("  " + plan(q["sql"]).replace("\n", "\n  "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=500, help="small rooms of user1")
    parser.add_argument("--per-room", type=int, default=10, help="messages in each small room")
    parser.add_argument("--members", type=int, default=50, help="members of the big room")
    parser.add_argument("--messages", type=int, default=50_000, help="messages in the big room")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--database-url", default="", help="a PostgreSQL URL; a fresh database is made beside it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="room-plans-") as tmp:
        dropdb = None
        if args.database_url:
            name = f"room_plans_{uuid.uuid4().hex[:8]}"
            base = args.database_url.rsplit("/", 1)[0]
            subprocess.run(["psql", args.database_url, "-qc", f"CREATE DATABASE {name}"], check=True)
            os.environ["DATABASE_URL"] = f"{base}/{name}"
            dropdb = (args.database_url, name)
        else:
            os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/rooms.sqlite3"
        os.environ.pop("REDIS_URL", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
        try:
            import django
            from django.core.management import call_command

            django.setup()
            from django.db import connection

            call_command("migrate", verbosity=0)
            t0 = time.perf_counter()
            seed(users=args.users, rooms=args.rooms, per_room=args.per_room, members=args.members,
                 messages=args.messages)  # fmt: skip
            print(f"Seeded in {time.perf_counter() - t0:.0f} s ({connection.vendor}).")
            measure(samples=args.samples)
            connection.close()
        finally:
            if dropdb:
                subprocess.run(["psql", dropdb[0], "-qc", f"DROP DATABASE IF EXISTS {dropdb[1]}"], check=False)


if __name__ == "__main__":
    main()
