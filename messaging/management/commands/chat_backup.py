"""A consistent copy of the database, taken while the server runs.

SQLite: the SQLite backup API copies the database as of one moment (a read
transaction; in WAL mode the writers go on meanwhile), with what the WAL
holds, into PATH; a plain `cp` of db.sqlite3 would miss the WAL or copy a
file half-written. PostgreSQL: pg_dump --format=custom, which is consistent
too (one snapshot) and what pg_restore reads; the command is printed, and
run when pg_dump is installed here. The password goes through PGPASSWORD,
never on a command line.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError
from django.db import connections

from messaging.management.database import DatabaseCommand


def pg_dump_command(settings: dict[str, Any], path: str) -> list[str]:
    """pg_dump's arguments for the database in `settings`, into `path`."""
    command = ["pg_dump", "--format=custom", "--no-owner", f"--file={path}"]
    if settings.get("HOST"):
        command.append(f"--host={settings['HOST']}")
    if settings.get("PORT"):
        command.append(f"--port={settings['PORT']}")
    if settings.get("USER"):
        command.append(f"--username={settings['USER']}")
    return [*command, str(settings["NAME"])]


class Command(DatabaseCommand):
    help = "Copy the database to PATH while the server runs (SQLite backup API, or pg_dump on PostgreSQL)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", help="the file to write (refused if it exists, unless --force)")
        parser.add_argument("--force", action="store_true", help="replace PATH if it exists")
        parser.add_argument(
            "--print-only", action="store_true", help="PostgreSQL: print the pg_dump command, run nothing"
        )

    def handle(self, *args: Any, path: str, force: bool, print_only: bool, **options: Any) -> None:
        target = Path(path)
        if target.exists() and not force:
            raise CommandError(f"{target} exists; choose another name, or --force to replace it.")
        connection = connections["default"]
        if connection.vendor == "sqlite":
            self.sqlite_backup(Path(str(connection.settings_dict["NAME"])), target)
        elif connection.vendor == "postgresql":
            self.pg_backup(connection.settings_dict, target, print_only)
        else:
            raise CommandError(f"No backup for {connection.vendor}: use its own tools.")

    def sqlite_backup(self, source: Path, target: Path) -> None:
        if not source.exists():
            raise CommandError(f"There is no database at {source}.")
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        src = sqlite3.connect(source, timeout=30)
        dst = sqlite3.connect(partial)
        try:
            # All pages in one step: a step-wise copy restarts each time
            # another connection writes, and might never finish.
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            if (check := dst.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                raise CommandError(f"The copy failed its check: {check}")
            messages = dst.execute("SELECT count(*) FROM messaging_message").fetchone()[0]
        finally:
            dst.close()
            src.close()
        os.replace(partial, target)  # PATH is whole or absent, never half-written
        self.stdout.write(f"Backed up {source} to {target}: {target.stat().st_size} bytes, {messages} message(s).")

    def pg_backup(self, settings: dict[str, Any], target: Path, print_only: bool) -> None:
        command = pg_dump_command(settings, str(target))
        shown = ("PGPASSWORD=... " if settings.get("PASSWORD") else "") + shlex.join(command)
        if print_only or shutil.which("pg_dump") is None:
            self.stdout.write(f"On PostgreSQL, back up with pg_dump:\n    {shown}")
            if not print_only:
                raise CommandError("pg_dump is not installed here: run the command above where it is.")
            return
        self.stdout.write(f"Running: {shown}")
        env = {**os.environ}
        if settings.get("PASSWORD"):
            env["PGPASSWORD"] = str(settings["PASSWORD"])
        done = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise CommandError(f"pg_dump failed ({done.returncode}): {done.stderr.strip()}")
        self.stdout.write(f"Backed up to {target}: {target.stat().st_size} bytes. Restore with pg_restore.")
