"""The admin at size: every changelist page with 100,000 users and 10 million messages.

    .venv/bin/python bench/admin_bench.py                               # SQLite, full size (tens of minutes)
    .venv/bin/python bench/admin_bench.py --stack scaleout              # PostgreSQL
    .venv/bin/python bench/admin_bench.py --users 2000 --messages 50000 # small: a minute
    .venv/bin/python bench/admin_bench.py --keep ...                    # keep the database (its name is printed)
    .venv/bin/python bench/admin_bench.py --existing DB ...             # measure a kept one again, no seeding

Makes a fresh database (an SQLite file in a temp dir, or with `--stack
scaleout` a new PostgreSQL database beside `--pg-url`, dropped afterwards),
migrates it and seeds it in SQL: `generate_series` on PostgreSQL, a
recursive CTE on SQLite, each row a function of its number, so both stacks
hold the same data. Seeded: --users users (1% deactivated, 10 staff, the
first --online online), --messages messages over the past year (1%
broadcasts, 9% room messages, the rest private; 0.1% deleted) with each
private message's delivery (all acked but the newest 1,000), --rooms rooms
of --room-size members (the room messages fall in 90 of them: 10,000 each
at full size, a few busy rooms), --blocks blocks, --attempts login attempts
over 30 days (5% failures, a few lockouts in force), --attachments
attachments (10% never sent). Bodies are words of known frequency: "the"
in 20% of the messages, "t7" in 2%, "w123" in 0.1%, "x4242" in about 100.
Broadcasts and room messages get no delivery rows: 100,000 per broadcast
is what issue 23's first item removes.

Then it opens each admin changelist page (users, messages, rooms, blocks,
login attempts, attachments: the first page, a later one, each filter, a
search, a sort) and two change pages with Django's test Client, logged in as
a superuser, in this process: one warm-up and --runs timed requests each,
and prints the median wall time, the median CPU time (this process, with
SQLite in it; on PostgreSQL its backend's too: what a loaded machine does
not stretch), the number of SQL queries and the slowest query of the last
run. Only the database is involved: on `scaleout` the admin uses
PostgreSQL (Redis carries no admin page), and no server process is started,
so the figures are the view's own time, not HTTP's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK = 500_000  # rows per transaction while seeding
UNACKED = 1000  # the newest private messages' deliveries left pending
CONTENT_TYPES = ["image/png", "image/jpeg", "application/pdf", "text/plain", "application/zip"]


@dataclass
class Sizes:
    users: int
    messages: int
    rooms: int
    room_size: int
    online: int
    blocks: int
    attempts: int
    attachments: int


class Sql:
    """The few things the two databases spell differently."""

    def __init__(self, vendor: str, now: datetime):
        self.vendor = vendor
        self.now = now

    def series(self, select: str, first: int, last: int) -> str:
        """`select` (which reads n from a table s) for n = first..last."""
        if self.vendor == "postgresql":
            return f"{select} FROM generate_series({first:d}::bigint, {last:d}::bigint) AS s(n)"
        numbers = f"SELECT {first:d} UNION ALL SELECT n + 1 FROM s WHERE n < {last:d}"
        return f"WITH RECURSIVE s(n) AS ({numbers}) {select} FROM s"

    def ago(self, seconds: str) -> str:
        """The time `seconds` (an SQL expression) before now."""
        if self.vendor == "postgresql":
            return f"(TIMESTAMPTZ '{self.now.isoformat()}' - ({seconds}) * INTERVAL '1 second')"
        return f"datetime('{self.now:%Y-%m-%d %H:%M:%S}', '-' || ({seconds}) || ' seconds')"

    def later(self, when: str, seconds: int) -> str:
        if self.vendor == "postgresql":
            return f"({when} + INTERVAL '{seconds} seconds')"
        return f"datetime({when}, '+{seconds} seconds')"

    def true(self, condition: str) -> str:
        return f"({condition})" if self.vendor == "postgresql" else f"(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    def inet(self, text: str) -> str:
        return f"CAST({text} AS inet)" if self.vendor == "postgresql" else text


def run(cursor: Any, sql: str) -> None:
    """No parameters (every value is a number formatted in), so `%` is SQL's modulo."""
    cursor.execute(sql)


def chunked(total: int, insert: Callable[[int, int], None], what: str, progress: bool) -> None:
    """insert(first, last) for n = 1..total in chunks, a transaction each."""
    from django.db import transaction

    t0 = time.perf_counter()
    for first in range(1, total + 1, CHUNK):
        last = min(total, first + CHUNK - 1)
        with transaction.atomic():
            insert(first, last)
        if progress:
            rate = last / (time.perf_counter() - t0)
            print(f"\r  {what}: {last:,}/{total:,} ({rate:,.0f}/s)", end="", flush=True)
    if progress:
        print(flush=True)


@contextmanager
def bulk_load(tables: list[str], *, progress: bool) -> Iterator[None]:
    """Bulk loading's usual trick, for the big tables: their secondary
    indexes (and SQLite's full-text trigger) dropped while rows go in, then
    built once from all of them; foreign keys not checked row by row (the
    rows are made consistent). Ten times faster than inserting under them."""
    from django.db import connection

    fts = "messaging_message_fts"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)"
                " AND indexname NOT IN (SELECT conname FROM pg_constraint)",
                [tables],
            )
            saved = cursor.fetchall()
            for name, _ in saved:
                cursor.execute(f'DROP INDEX "{name}"')
            cursor.execute("SET session_replication_role = replica")  # no foreign key triggers
        else:
            marks = ", ".join(["%s"] * len(tables))
            cursor.execute(
                f"SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name IN ({marks})"
                " AND (type = 'index' OR name = %s)",
                [*tables, f"{fts}_insert"],
            )
            saved = cursor.fetchall()
            for name, _ in saved:
                kind = "TRIGGER" if name == f"{fts}_insert" else "INDEX"
                cursor.execute(f'DROP {kind} "{name}"')
            cursor.execute("PRAGMA foreign_keys = OFF")
    yield
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = DEFAULT")
            cursor.execute("SET maintenance_work_mem = '1GB'")
        else:
            cursor.execute("PRAGMA foreign_keys = ON")
        for _, sql in saved:
            cursor.execute(sql)
        if connection.vendor == "sqlite":
            cursor.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")
    if progress:
        print(f"\r  built {len(saved)} indexes in {time.perf_counter() - t0:.0f} s{' ' * 50}", flush=True)


def seed(sizes: Sizes, *, progress: bool) -> None:
    """Everything the pages list, as plain SQL: set-up, not what is measured."""
    from django.db import connection

    from accounts.models import LoginAttempt, User
    from messaging.models import Attachment, Block, BroadcastCursor, Delivery, Message, Presence, Room, RoomMember

    sql = Sql(connection.vendor, datetime.now(UTC))
    u, m = sizes.users, sizes.messages
    t = {
        "user": User._meta.db_table,
        "msg": Message._meta.db_table,
        "delivery": Delivery._meta.db_table,
        "room": Room._meta.db_table,
        "member": RoomMember._meta.db_table,
        "block": Block._meta.db_table,
        "presence": Presence._meta.db_table,
        "attempt": LoginAttempt._meta.db_table,
        "attachment": Attachment._meta.db_table,
        "cursor": BroadcastCursor._meta.db_table,
    }
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA synchronous=OFF")  # a bench's throwaway file
        # Users n = 1..U get ids base+1..base+U (a fresh table: base 0).
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t['user']}")
        base = cursor.fetchone()[0]

        def uid(expr: str) -> str:
            """The id of user number `expr` (0-based, taken modulo U)."""
            return f"({base} + 1 + (({expr}) % {u}))"

        run(
            cursor,
            sql.series(
                f"INSERT INTO {t['user']} (password, last_login, is_superuser, username, first_name, last_name,"
                " email, is_staff, is_active, date_joined, username_key, last_seen)"
                f" SELECT '!', CASE WHEN n % 3 = 0 THEN {sql.ago('n * 17 % 2592000')} END, {sql.true('1 = 0')},"
                f" 'user' || n, '', '', '', {sql.true('n <= 10')}, {sql.true('n % 100 <> 50')},"
                f" {sql.ago('31536000 - n * 100 % 31536000')}, 'user' || n,"
                f" CASE WHEN n % 3 = 0 THEN {sql.ago('n * 13 % 2592000')} END",
                1,
                u,
            ),
        )
        # Rooms r = 0..R-1, members k = 0..S-1: user r*S+k (mod U), k = 0 the admin.
        r, size = sizes.rooms, sizes.room_size
        room_base = 0
        if r:
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t['room']}")
            room_base = cursor.fetchone()[0]
            run(
                cursor,
                sql.series(
                    f"INSERT INTO {t['room']} (name, created_at) SELECT 'room' || n, {sql.ago('n * 3600')}", 1, r
                ),
            )
            run(
                cursor,
                sql.series(
                    f"INSERT INTO {t['member']} (room_id, user_id, admin, joined_at)"
                    f" SELECT {room_base} + 1 + n / {size}, {uid('n')}, {sql.true(f'n % {size} = 0')}, {sql.ago('n')}",
                    0,
                    r * size - 1,
                ),
            )
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t['msg']}")
        msg_base = cursor.fetchone()[0]

    # Messages n = 1..M, the newest last, over the past year.
    kind = f"CASE WHEN n % 100 = 0 THEN 'broadcast' WHEN n % 100 < 10 AND {r} > 0 THEN 'room' ELSE 'private' END"
    room_no = f"(n * 13 % {max(r, 1)})"
    member = uid(f"{room_no} * {size} + n / {max(r, 1)} % {size}")  # of the room: see the rooms above
    sender = f"CASE WHEN {kind} = 'room' THEN {member} ELSE {uid('n * 7919')} END"
    recipient = f"CASE WHEN {kind} = 'private' THEN {uid(f'n * 7919 + 1 + n * 104729 % {max(u - 1, 1)}')} END"
    room = f"CASE WHEN {kind} = 'room' THEN {room_base} + 1 + {room_no} END"
    sent_at = sql.ago(f"({m} - n) * 31536000 / {m}")
    body = (
        "CASE n % 5 WHEN 0 THEN 'the' WHEN 1 THEN 'ok' WHEN 2 THEN 'see you' WHEN 3 THEN 'thanks' ELSE 'on my way' END"
        " || ' t' || (n * 7 % 50) || ' w' || (n * 13 % 1000) || ' x' || (n % 99991)"
    )
    deleted = "n % 1000 = 7"

    def messages(first: int, last: int) -> None:
        with connection.cursor() as cursor:
            run(
                cursor,
                sql.series(
                    f"INSERT INTO {t['msg']} (kind, sender_id, recipient_id, room_id, body, sent_at, deleted_at)"
                    f" SELECT {kind}, {sender}, {recipient}, {room}, CASE WHEN {deleted} THEN '' ELSE {body} END,"
                    f" {sent_at}, CASE WHEN {deleted} THEN {sql.later(sent_at, 60)} END",
                    first,
                    last,
                ),
            )
            pending = f"CASE WHEN id > {msg_base + m - UNACKED} THEN NULL ELSE sent_at END"
            cursor.execute(
                f"INSERT INTO {t['delivery']} (message_id, recipient_id, pushed_at, acked_at)"
                f" SELECT id, recipient_id, sent_at, {pending} FROM {t['msg']}"
                " WHERE kind = 'private' AND id BETWEEN %s AND %s",
                [msg_base + first, msg_base + last],
            )

    with bulk_load([t["msg"], t["delivery"]], progress=progress):
        chunked(m, messages, "messages", progress)
    with connection.cursor() as cursor:
        # Each user's broadcasts are in their mailbox (as migration 0008 leaves them).
        latest = f"(SELECT COALESCE(MAX(id), 0) FROM {t['msg']} WHERE kind = 'broadcast')"
        users = f"SELECT id, {latest} FROM {t['user']} WHERE id > {base}"
        cursor.execute(f"INSERT INTO {t['cursor']} (user_id, up_to) {users}")

    ip = "'10.' || (n / 65536 % 256) || '.' || (n / 256 % 256) || '.' || (n % 256)"

    def attempts(first: int, last: int) -> None:
        at = sql.ago(f"({sizes.attempts} - n) * 2592000 / {sizes.attempts}")
        with connection.cursor() as cursor:
            run(
                cursor,
                sql.series(
                    f"INSERT INTO {t['attempt']} (username, ip, at, result, locked_until)"
                    f" SELECT 'user' || (1 + n * 31 % {u}), {sql.inet(ip)}, {at},"
                    " CASE WHEN n % 100 < 95 THEN 'success' WHEN n % 100 < 99 THEN 'failure' ELSE 'locked' END,"
                    f" CASE WHEN n % 1000 = 995 THEN {sql.later(at, 900)} END",
                    first,
                    last,
                ),
            )

    if sizes.attempts:
        chunked(sizes.attempts, attempts, "login attempts", progress)
    with connection.cursor() as cursor:
        if sizes.attempts:
            # A few lockouts in force now.
            cursor.execute(
                f"UPDATE {t['attempt']} SET locked_until = %s WHERE id IN"
                f" (SELECT id FROM {t['attempt']} WHERE result = 'failure' ORDER BY id DESC LIMIT 20)",
                [sql.now + timedelta(hours=1)],
            )
        if sizes.blocks:
            run(
                cursor,
                sql.series(
                    f"INSERT INTO {t['block']} (blocker_id, blocked_id, created_at)"
                    f" SELECT {uid('n')}, {uid(f'n + 1 + n / {u}')}, {sql.ago('n')}",
                    0,
                    sizes.blocks - 1,
                ),
            )
        if sizes.online:
            run(
                cursor,
                sql.series(
                    f"INSERT INTO {t['presence']} (user_id, channel_name, host, pid, connected_at, heartbeat_at,"
                    " session_key)"
                    f" SELECT {uid('n')}, 'bench.' || n, 'bench', 1, {sql.ago('n')}, {sql.ago('0')}, ''",
                    0,
                    sizes.online - 1,
                ),
            )
        if sizes.attachments:
            step = max(1, m // sizes.attachments)
            content_type = (
                "CASE n % 5 " + " ".join(f"WHEN {i} THEN '{c}'" for i, c in enumerate(CONTENT_TYPES)) + " END"
            )
            run(
                cursor,
                sql.series(
                    f"INSERT INTO {t['attachment']} (uploader_id, message_id, name, size, content_type, stored,"
                    " width, height, thumbnail, created_at, position)"
                    f" SELECT {uid('n')}, CASE WHEN n % 10 = 0 THEN NULL ELSE {msg_base} + 1 + n * {step} % {m} END,"
                    f" 'file' || n || '.png', 1000 + n % 5000000, {content_type}, 'bench/' || n,"
                    " CASE WHEN n % 5 < 2 THEN 800 END, CASE WHEN n % 5 < 2 THEN 600 END, '',"
                    f" {sql.ago(f'({sizes.attachments} - n) * 60')}, 0",
                    1,
                    sizes.attachments,
                ),
            )
    if progress:
        print("  analyzing...", flush=True)
    with connection.cursor() as cursor:
        # Planner statistics, as autovacuum (or SQLite's optimize) would gather in time.
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


def pages(sizes: Sizes) -> list[tuple[str, str]]:
    """(label, URL) of each page measured."""
    from django.utils import timezone

    from accounts.models import User
    from messaging.models import Message

    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = today + timedelta(days=1)

    def since(field: str, start: datetime) -> str:
        return urlencode({f"{field}__gte": str(start), f"{field}__lt": str(tomorrow)})

    week, year = today - timedelta(days=7), today.replace(month=1, day=1)
    user = f"user{sizes.users // 2}"
    user_id = User.objects.get(username=user).pk
    message_id = Message.objects.order_by("id").values_list("id", flat=True)[0] + sizes.messages // 2

    def later(rows: int) -> int:
        """Page 50, or the last one of a smaller table."""
        return max(1, min(50, rows // 100))

    pu, pm, pr, pb, pa, pt = (
        later(n) for n in (sizes.users, sizes.messages, sizes.rooms, sizes.blocks, sizes.attempts, sizes.attachments)
    )
    return [
        ("users", "/admin/accounts/user/"),
        (f"users page {pu}", f"/admin/accounts/user/?p={pu}"),
        ("users online", "/admin/accounts/user/?online=yes"),
        ("users offline", "/admin/accounts/user/?online=no"),
        ("users locked out", "/admin/accounts/user/?locked=yes"),
        ("users staff", "/admin/accounts/user/?is_staff__exact=1"),
        ("users deactivated", "/admin/accounts/user/?is_active__exact=0"),
        (f"users search {user!r}", f"/admin/accounts/user/?q={user}"),
        ("users by last login", "/admin/accounts/user/?o=-3"),
        ("one user", f"/admin/accounts/user/{user_id}/change/"),
        ("messages", "/admin/messaging/message/"),
        (f"messages page {pm}", f"/admin/messaging/message/?p={pm}"),
        ("messages private", "/admin/messaging/message/?kind__exact=private"),
        ("messages broadcasts", "/admin/messaging/message/?kind__exact=broadcast"),
        ("messages in rooms", "/admin/messaging/message/?kind__exact=room"),
        ("messages deleted", "/admin/messaging/message/?deleted=yes"),
        ("messages not deleted", "/admin/messaging/message/?deleted=no"),
        ("messages past 7 days", "/admin/messaging/message/?" + since("sent_at", week)),
        ("messages this year", "/admin/messaging/message/?" + since("sent_at", year)),
        ("messages by date", "/admin/messaging/message/?o=-4"),
        ("messages search 'the' (20%)", "/admin/messaging/message/?q=the"),
        ("messages search 'w123' (0.1%)", "/admin/messaging/message/?q=w123"),
        ("messages search 'x4242'", "/admin/messaging/message/?q=x4242"),
        (f"messages from:{user}", f"/admin/messaging/message/?q=from:{user}"),
        (f"messages to:{user}", f"/admin/messaging/message/?q=to:{user}"),
        ("one message", f"/admin/messaging/message/{message_id}/change/"),
        ("rooms", "/admin/messaging/room/"),
        (f"rooms page {pr}", f"/admin/messaging/room/?p={pr}"),
        ("rooms 2-10 members", "/admin/messaging/room/?size=2-10"),
        ("rooms search name", "/admin/messaging/room/?q=room42"),
        (f"rooms search {user!r}", f"/admin/messaging/room/?q={user}"),
        ("rooms by members", "/admin/messaging/room/?o=-3"),
        ("blocks", "/admin/messaging/block/"),
        (f"blocks page {pb}", f"/admin/messaging/block/?p={pb}"),
        (f"blocks search {user!r}", f"/admin/messaging/block/?q={user}"),
        ("login attempts", "/admin/accounts/loginattempt/"),
        (f"login attempts page {pa}", f"/admin/accounts/loginattempt/?p={pa}"),
        ("login attempts refused", "/admin/accounts/loginattempt/?result__exact=locked"),
        ("login attempts lock in force", "/admin/accounts/loginattempt/?active_lock=yes"),
        ("login attempts past 7 days", "/admin/accounts/loginattempt/?" + since("at", week)),
        (f"login attempts search {user!r}", f"/admin/accounts/loginattempt/?q={user}"),
        ("attachments", "/admin/messaging/attachment/"),
        (f"attachments page {pt}", f"/admin/messaging/attachment/?p={pt}"),
        ("attachments PDF", "/admin/messaging/attachment/?content_type__exact=application%2Fpdf"),
        ("attachments past 7 days", "/admin/messaging/attachment/?" + since("created_at", week)),
        ("attachments search name", "/admin/messaging/attachment/?q=file4242.png"),
    ]


def timed(into: list[tuple[float, str, Any]]) -> Callable[..., Any]:
    """A database execute wrapper that appends (milliseconds, sql, params) of each query to `into`."""

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            into.append(((time.perf_counter() - t0) * 1000, sql, params))

    return wrapper


def explain(sql: str, params: Any) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("EXPLAIN ANALYZE " + sql, params)
            return "\n".join("      " + row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join("      " + str(row[-1]) for row in cursor.fetchall())


def cpu_seconds() -> float:
    """CPU time of this process (Django, and SQLite in it) and, on
    PostgreSQL, of this connection's backend: the work of a page, which a
    loaded machine stretches in wall-clock time but not here."""
    from django.db import connection

    cpu = time.process_time()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        raw = Path(f"/proc/{pid}/stat").read_text()  # the server runs on this machine
        fields = raw[raw.rindex(")") + 2 :].split()
        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu


def measure(urls: list[tuple[str, str]], runs: int, show_queries: float | None = None) -> list[dict[str, Any]]:
    from django.db import connection
    from django.test import Client

    from accounts.models import User
    from messaging.models import Presence

    Presence.objects.update(heartbeat_at=datetime.now(UTC))  # online now, even in a kept database
    admin, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"username_key": "bench-admin", "is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    results = []
    for label, url in urls:
        times, cpus = [], []
        for i in range(runs + 1):
            queries: list[tuple[float, str, Any]] = []
            cpu0 = cpu_seconds()
            with connection.execute_wrapper(timed(queries)):
                t0 = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - t0) * 1000
            cpu = (cpu_seconds() - cpu0) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{url}: HTTP {response.status_code} {response.get('Location', '')}")
            if i:  # the first is a warm-up
                times.append(elapsed)
                cpus.append(cpu)
        slowest = max((ms for ms, _, _ in queries), default=0.0)
        row = {
            "page": label,
            "url": url,
            "median_ms": statistics.median(times),
            "max_ms": max(times),
            "cpu_ms": statistics.median(cpus),
            "queries": len(queries),
            "slowest_query_ms": slowest,
        }
        results.append(row)
        print(
            f"  {label:<34} {row['median_ms']:8.1f} ms (max {row['max_ms']:7.1f}, CPU {row['cpu_ms']:6.1f})"
            f"  {row['queries']:3} queries, slowest {slowest:7.1f} ms",
            flush=True,
        )
        for ms, sql, params in queries:
            if show_queries is not None and ms >= show_queries and not sql.startswith("EXPLAIN"):
                print(f"    {ms:7.1f} ms  {sql[:400]}  {params}\n{explain(sql, params)}", flush=True)
    return results


@contextmanager
def database(args: argparse.Namespace) -> Iterator[bool]:
    """Point DATABASE_URL at the database to use; yields whether to seed it."""
    if args.existing:
        os.environ["DATABASE_URL"] = args.existing
        yield False
        return
    if args.stack == "sqlite":
        with tempfile.TemporaryDirectory(prefix="admin-bench-") as tmp:
            os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/admin.sqlite3"
            yield True
            if args.keep:
                kept = ROOT / "var" / f"admin-bench-{uuid.uuid4().hex[:8]}.sqlite3"
                kept.parent.mkdir(exist_ok=True)
                Path(f"{tmp}/admin.sqlite3").rename(kept)
                print(f"Kept the database: --existing sqlite:///{kept}")
        return
    name = f"admin_bench_{uuid.uuid4().hex[:8]}"
    base = args.pg_url.rsplit("/", 1)[0]
    subprocess.run(["psql", args.pg_url, "-qc", f"CREATE DATABASE {name}"], check=True)
    os.environ["DATABASE_URL"] = f"{base}/{name}"
    try:
        yield True
    finally:
        from django.db import connections

        connections.close_all()
        if args.keep:
            print(f"Kept the database: --existing {base}/{name}")
        else:
            subprocess.run(["psql", args.pg_url, "-qc", f"DROP DATABASE IF EXISTS {name}"], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", choices=["sqlite", "scaleout"], default="sqlite")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--online", type=int, default=1000)
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--attachments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5, help="timed requests per page, after one warm-up")
    parser.add_argument("--keep", action="store_true", help="keep the seeded database (its URL is printed)")
    parser.add_argument("--existing", default="", metavar="DATABASE_URL", help="measure this seeded database")
    parser.add_argument("--json", default="", help="write the figures here too")
    parser.add_argument("--seed-only", action="store_true", help="seed (with --keep), measure nothing")
    parser.add_argument("--pages", default="", help="only the pages whose label contains one of these (a,b,...)")
    parser.add_argument(
        "--show-queries", type=float, default=None, metavar="MS", help="print queries this slow, with their plans"
    )
    args = parser.parse_args()
    sizes = Sizes(
        users=args.users,
        messages=args.messages,
        rooms=args.rooms,
        room_size=min(args.room_size, args.users),
        online=min(args.online, args.users),
        blocks=min(args.blocks, args.users * (args.users - 1) // 2),
        attempts=args.attempts,
        attachments=args.attachments,
    )
    os.environ.pop("REDIS_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    with database(args) as fresh:
        import django
        from django.core.management import call_command

        django.setup()
        from django.db import connection
        from django.test.utils import setup_test_environment

        setup_test_environment()  # the test Client's host, as under pytest
        if fresh:
            call_command("migrate", verbosity=0)
            print(f"Seeding {sizes} ({connection.vendor})...", flush=True)
            t0 = time.perf_counter()
            seed(sizes, progress=True)
            print(f"Seeded in {time.perf_counter() - t0:.0f} s.", flush=True)
        if args.seed_only:
            return
        print(f"Admin pages ({connection.vendor}), median of {args.runs} after a warm-up:", flush=True)
        wanted = args.pages.split(",")
        chosen = [(label, url) for label, url in pages(sizes) if any(w in label for w in wanted)]
        results = measure(chosen, args.runs, args.show_queries)
        worst = max(results, key=lambda row: row["median_ms"])
        print(f"Slowest page: {worst['page']}, {worst['median_ms']:.0f} ms.")
        if args.json:
            Path(args.json).write_text(
                json.dumps({"vendor": connection.vendor, "sizes": vars(sizes), "pages": results}, indent=1)
            )
        connection.close()


if __name__ == "__main__":
    main()
