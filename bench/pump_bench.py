"""The pump's tick at size: what each step costs a process holding N connections.

    .venv/bin/python bench/pump_bench.py --connections 10000
    .venv/bin/python bench/pump_bench.py --connections 10000 --stack scaleout

An idle server's CPU is mostly its pings and the pump's tick (issue 23,
item 3). This times the tick's steps straight against the database, with
no sockets: N users, each with a resume-token session and a presence row
of this process, then each step --ticks times: the heartbeat
(`presence_tick`, with every row due for a write and with none), the
session check without the pump's cache of verdicts (every session
decoded, every user's auth hash computed) and with it (nothing changed),
and the re-push (`delivery_redeliver`, nothing due). Prints each step's
median and what it costs a core at its pace (a tick per
CHAT_PUMP_SECONDS; the session check per CHAT_SESSIONS_CHECK_SECONDS).
Seeding goes around the services where they would do
one insert per row (set-up, not what is measured).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.admin_bench import database  # noqa: E402  (after the path)


def seed(connections: int) -> list[str]:
    """N users with a session each and a presence row of this process."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from accounts import services as accounts
    from messaging.models import Presence
    from messaging.services.presence import HOST, PID

    User = get_user_model()
    User.objects.bulk_create(
        [User(username=f"u{i}", username_key=f"u{i}", password="md5$salt$0") for i in range(connections)],
        batch_size=1000,
    )
    now = timezone.now()
    rows = []
    for user in User.objects.all():
        rows.append(
            Presence(
                user=user,
                channel_name=f"bench.{user.pk}",
                host=HOST,
                pid=PID,
                connected_at=now,
                heartbeat_at=now,
                session_key=accounts.session_create(user=user),
            )
        )
    Presence.objects.bulk_create(rows, batch_size=1000)
    return [row.channel_name for row in rows]


def timed(step: Callable[[], Any], ticks: int, before: Callable[[], Any] | None = None) -> float:
    """The median seconds of `ticks` runs of `step` (each after `before`, not timed)."""
    runs = []
    for _ in range(ticks):
        if before is not None:
            before()
        start = time.perf_counter()
        step()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--stack", choices=["sqlite", "scaleout"], default="sqlite")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    args.existing, args.keep = "", False
    os.environ.pop("REDIS_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.cheap_hash_settings"
    with database(args):
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection

        from messaging import services

        call_command("migrate", verbosity=0)
        print(f"Seeding {args.connections:,} connections ({connection.vendor})...", flush=True)
        names = seed(args.connections)
        verified: dict[str, int] = {}
        services.presence_sessions_check(channel_names=names, verified=verified)  # the first tick fills it
        from datetime import timedelta

        from django.utils import timezone

        from messaging.models import Presence

        def age_rows() -> None:  # past a third of the timeout: every row due for a write
            Presence.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=20))

        tick_step = lambda: services.presence_tick(channel_names=names, expire=False)  # noqa: E731
        steps: list[tuple[str, Callable[[], Any], Callable[[], Any] | None]] = [
            ("presence_tick, every row due", tick_step, age_rows),
            ("presence_tick, none due", tick_step, None),
            ("presence_sessions_check, no cache", lambda: services.presence_sessions_check(channel_names=names), None),
            (
                "presence_sessions_check, cached",
                lambda: services.presence_sessions_check(channel_names=names, verified=verified),
                None,
            ),
            ("delivery_redeliver", lambda: services.delivery_redeliver(channel_names=names), None),
        ]
        tick, check = settings.CHAT_PUMP_SECONDS, settings.CHAT_SESSIONS_CHECK_SECONDS
        print(
            f"{'step':<38} {'median':>10} {'of a core':>10}  (a tick every {tick:g} s;"
            f" the sessions check every {check:g} s)"
        )
        for label, step, before in steps:
            seconds = timed(step, args.ticks, before)
            every = check if label.startswith("presence_sessions_check") else tick
            print(f"{label:<38} {seconds * 1000:>7.1f} ms {seconds / every:>10.1%}", flush=True)
        connection.close()


if __name__ == "__main__":
    main()
