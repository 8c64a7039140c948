"""Search at size: the `search` selector over a million seeded messages.

    .venv/bin/python bench/search_bench.py                      # SQLite (FTS5)
    .venv/bin/python bench/search_bench.py --database-url postgres://postgres@127.0.0.1:5432/test

Makes a fresh database (a temporary SQLite file, or a new PostgreSQL
database next to the one named, dropped afterwards), migrates it, seeds
--users users and --messages messages (1% broadcasts, delivered to
everyone; the rest private between random pairs, all acked), with bodies
drawn from a Zipf-distributed vocabulary so that some words are in a tenth
of all messages and others in a handful. It then times
`messaging.selectors.message_search` for random users, for a common word, a
rare word, two words, a prefix and one conversation, and prints each
query's median and 99th percentile with the database's query plan.
Seeding goes around the services (plain bulk inserts) because it is set-up,
not what is measured.
"""

from __future__ import annotations

import argparse
import os
import random
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

COMMON = ["the", "a", "to", "is", "it", "you", "and", "of", "for", "on", "we", "that", "this", "ok", "lunch"]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """COMMON first, then made-up words: rank decides frequency (Zipf)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = list(COMMON)
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(4, 9)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def seed(*, users: int, messages: int, rng: random.Random, progress: bool) -> list[str]:
    """Bulk-insert the data set; returns the vocabulary, most common first."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from messaging.models import Delivery, Message

    User = get_user_model()
    User.objects.bulk_create(
        [User(username=f"user{i}", username_key=f"user{i}", password="!") for i in range(1, users + 1)],
        batch_size=1000,
    )
    ids = list(User.objects.values_list("id", flat=True))
    words = vocabulary(20_000, rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    chunk = 20_000
    done = 0
    t0 = time.perf_counter()
    while done < messages:
        n = min(chunk, messages - done)
        body_words = rng.choices(words, weights, k=n * 8)
        rows = []
        for i in range(n):
            k = rng.randint(3, 8)
            body = " ".join(body_words[i * 8 : i * 8 + k])
            sent_at = start + timedelta(seconds=done + i)
            sender = rng.choice(ids)
            if rng.random() < 0.01:
                rows.append(Message(kind="broadcast", sender_id=sender, body=body, sent_at=sent_at))
            else:
                recipient = rng.choice(ids)
                while recipient == sender:
                    recipient = rng.choice(ids)
                rows.append(
                    Message(kind="private", sender_id=sender, recipient_id=recipient, body=body, sent_at=sent_at)
                )
        with transaction.atomic():
            Message.objects.bulk_create(rows, batch_size=2000)
        done += n
        if progress:
            rate = done / (time.perf_counter() - t0)
            print(f"\r  seeded {done:,}/{messages:,} messages ({rate:,.0f}/s)", end="", flush=True)
    if progress:
        print()
    table, users_table = Delivery._meta.db_table, User._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        # Private: the recipient's delivery, acked. Broadcast: everyone but the sender.
        cursor.execute(
            f"INSERT INTO {table} (message_id, recipient_id, pushed_at, acked_at)"
            f" SELECT id, recipient_id, sent_at, sent_at FROM {Message._meta.db_table} WHERE kind = 'private'"
        )
        cursor.execute(
            f"INSERT INTO {table} (message_id, recipient_id, pushed_at, acked_at)"
            f" SELECT m.id, u.id, m.sent_at, m.sent_at FROM {Message._meta.db_table} m, {users_table} u"
            f" WHERE m.kind = 'broadcast' AND u.id <> m.sender_id"
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # planner statistics, as autovacuum would gather in time
    return words


def plan(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("EXPLAIN " + sql)
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


def measure(
    *, words: list[str], users: int, samples: int, rng: random.Random, show_plans: bool
) -> list[dict[str, Any]]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from messaging import selectors
    from messaging.models import Message

    User = get_user_model()
    people = {u.username: u for u in User.objects.all()}
    rare = words[len(words) // 2]
    cases: list[tuple[str, dict[str, Any]]] = [
        (f"common word {words[0]!r}", {"query": words[0]}),
        (f"common word {COMMON[-1]!r}", {"query": COMMON[-1]}),
        (f"rare word {rare!r}", {"query": rare}),
        (f"two words {words[1]!r} {words[20]!r}", {"query": f"{words[1]} {words[20]}"}),
        (f"prefix {words[30][:3]!r}", {"query": words[30][:3]}),
        (f"one conversation, {words[0]!r}", {"query": words[0], "peer": "random"}),
    ]
    total = Message.objects.count()
    results = []
    for label, kwargs in cases:
        times = []
        found = []
        for _ in range(samples):
            user = people[f"user{rng.randint(1, users)}"]
            call = dict(kwargs)
            if call.get("peer") == "random":
                call["peer"] = people[f"user{rng.randint(1, users)}"]
            t0 = time.perf_counter()
            page = selectors.message_search(user=user, **call)
            times.append((time.perf_counter() - t0) * 1000)
            found.append(len(page))
        matching = selectors._matching(Message.objects.all(), selectors._WORD.findall(kwargs["query"])).count()
        times.sort()
        row = {
            "query": label,
            "matching": matching,
            "share": matching / total,
            "p50_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
            "page": statistics.median(found),
        }
        results.append(row)
        print(
            f"  {label:<38} in {matching:>9,} messages ({row['share']:6.2%})"
            f"  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  (page of {row['page']:.0f})",
            flush=True,
        )
    if show_plans:
        with CaptureQueriesContext(connection) as queries:
            selectors.message_search(user=people["user1"], query=words[0])
        print(f"\nQuery plan ({connection.vendor}), {words[0]!r} for one user:\n{plan(queries[0]['sql'])}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=50, help="searches per query (random users)")
    parser.add_argument("--database-url", default="", help="a PostgreSQL URL; a fresh database is made beside it")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-plans", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database (its name is printed)")
    parser.add_argument(
        "--existing", action="store_true", help="search the --database-url database as it is (kept with --keep)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        dropdb = None
        if args.existing or args.database_url.startswith("sqlite:"):
            os.environ["DATABASE_URL"] = args.database_url  # a SQLite file is seeded where it is named
        elif args.database_url:
            name = f"search_bench_{uuid.uuid4().hex[:8]}"
            base = args.database_url.rsplit("/", 1)[0]
            subprocess.run(["psql", args.database_url, "-qc", f"CREATE DATABASE {name}"], check=True)
            os.environ["DATABASE_URL"] = f"{base}/{name}"
            dropdb = (args.database_url, name)
        else:
            os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/search.sqlite3"
        os.environ.pop("REDIS_URL", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
        try:
            import django
            from django.core.management import call_command

            django.setup()
            from django.db import connection

            rng = random.Random(args.seed)
            if args.existing:
                words = vocabulary(20_000, rng)  # the seed's first draw, as when it was seeded
            else:
                call_command("migrate", verbosity=0)
                print(f"Seeding {args.users:,} users, {args.messages:,} messages ({connection.vendor})...", flush=True)
                t0 = time.perf_counter()
                words = seed(users=args.users, messages=args.messages, rng=rng, progress=sys.stdout.isatty())
                print(f"Seeded in {time.perf_counter() - t0:.0f} s.")
            print(f"Searching ({args.samples} random users each):")
            measure(words=words, users=args.users, samples=args.samples, rng=rng, show_plans=not args.no_plans)
            connection.close()
        finally:
            if dropdb and args.keep:
                print(f"Kept database {dropdb[1]}")
            elif dropdb:
                subprocess.run(["psql", dropdb[0], "-qc", f"DROP DATABASE IF EXISTS {dropdb[1]}"], check=False)


if __name__ == "__main__":
    main()
