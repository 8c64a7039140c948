"""`migrate`, one process at a time.

`make run` and `make cluster` migrate at start; two processes started at
once on a fresh PostgreSQL database both ran every migration, and one died
on django_content_type's unique constraint. Here the second waits for the
first (a PostgreSQL advisory lock, a file lock beside an SQLite database),
then finds nothing left to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from messaging.management.database import DatabaseCommand

# pg_advisory_lock's key: the same for every process of every version.
LOCK_KEY = zlib.crc32(b"chat_migrate")


class Command(DatabaseCommand):
    help = "Run migrate under a lock, so processes started together migrate one after the other."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("args", nargs="*", help="passed to migrate: [app_label] [migration_name]")
        parser.add_argument("--wait", type=float, default=600, help="seconds to wait for the lock (default 600)")
        parser.add_argument("--plan", action="store_true", help="show what migrate would do, and do nothing")

    def handle(self, *args: str, wait: float, plan: bool, **options: Any) -> None:
        with self.lock(wait):
            call_command(
                "migrate",
                *args,
                interactive=False,
                plan=plan,
                verbosity=options["verbosity"],
                stdout=self.stdout._out,
                stderr=self.stderr._out,
            )

    @contextlib.contextmanager
    def lock(self, wait: float) -> Iterator[None]:
        connection = connections["default"]
        if connection.vendor == "postgresql":
            with self.advisory_lock(connection, wait):
                yield
        elif connection.vendor == "sqlite" and connection.settings_dict["NAME"] not in ("", ":memory:"):
            with self.file_lock(Path(str(connection.settings_dict["NAME"]) + ".migrate-lock"), wait):
                yield
        else:
            yield

    def acquire(self, try_lock: Callable[[], bool], wait: float) -> None:
        """Call `try_lock` until it gets the lock, for up to `wait` seconds."""
        deadline = time.monotonic() + wait
        if try_lock():
            return
        self.stderr.write("Another process is migrating; waiting for it.")
        while not try_lock():
            if time.monotonic() > deadline:
                raise CommandError(f"Another process held the migration lock for {wait:.0f} s; try again.")
            time.sleep(0.2)

    @contextlib.contextmanager
    def advisory_lock(self, connection: Any, wait: float) -> Iterator[None]:
        # A session lock: it outlives migrate's transactions, and ends with
        # the connection if this process dies.
        def try_lock() -> bool:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
                return bool(cursor.fetchone()[0])

        self.acquire(try_lock, wait)
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])

    @contextlib.contextmanager
    def file_lock(self, path: Path, wait: float) -> Iterator[None]:
        # flock: released by the kernel if this process dies.
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:

            def try_lock() -> bool:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    return False

            self.acquire(try_lock, wait)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
