"""Import the old socket server's files: users, blocks, undelivered messages.

Dry run by default: it reads the files and the database and reports exactly
what --commit would do, but hashes no password and writes nothing. --commit
hashes the new users' passwords on every core (--jobs), writes the users in
one transaction, then the messages, deliveries and blocks in bulk in a
second. Running it again imports nothing twice. A name that an account the
import did not create already has is refused, unless --merge. The work is in
legacy.files (reading) and legacy.services.legacy_import (writing).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from legacy import services
from legacy.files import LegacyError, legacy_read


class Command(BaseCommand):
    help = "Import the old server's server_resources/ folder (user_pass.csv, user_data/*.json)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="the server_resources folder (or the folder that holds it)")
        parser.add_argument("--commit", action="store_true", help="write the import (default: dry run)")
        parser.add_argument(
            "--merge",
            action="store_true",
            help="a name that an account here already has is the same person: give that account the old "
            "server's pending messages and blocks (default: refuse, naming them)",
        )
        parser.add_argument(
            "--timezone",
            default=settings.TIME_ZONE,
            help="time zone of the old server's naive timestamps (default: %(default)s)",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=os.cpu_count() or 1,
            help="processes hashing passwords (default: one per core, %(default)s)",
        )

    def handle(
        self, *args: Any, path: str, commit: bool = False, merge: bool = False, timezone: str = "", **options: Any
    ) -> None:
        jobs = options.get("jobs", os.cpu_count() or 1)
        if jobs < 1:
            raise CommandError("--jobs must be at least 1")
        try:
            zone = ZoneInfo(timezone or settings.TIME_ZONE)
        except (ZoneInfoNotFoundError, ValueError):
            raise CommandError(f"Unknown time zone {timezone!r}") from None
        try:
            legacy = legacy_read(path=Path(path), zone=zone)
        except LegacyError as e:
            raise CommandError(str(e)) from None
        bars: list[tqdm[Any]] = []
        show = options.get("verbosity", 1) > 0 and self.stdout.isatty()
        try:
            report = services.legacy_import(
                legacy=legacy, commit=commit, merge=merge, jobs=jobs, progress=self.progress(bars) if show else None
            )
        except services.NameClash as e:
            raise CommandError(f"{e} Nothing was imported; if they are the same people, add --merge.") from None
        finally:
            for bar in bars:
                bar.close()
        for kind, text in report.lines:
            if kind == "skip":
                self.stdout.write(self.style.WARNING(f"  skipped: {text}"))
            else:
                self.stdout.write(f"  {text}")
        summary = ", ".join(f"{n} {what}" for what, n in report.counts.items())
        if commit:
            self.stdout.write(self.style.SUCCESS(f"Imported: {summary}."))
        else:
            self.stdout.write(f"Dry run, nothing written. Would import: {summary}.")
            self.stdout.write("Run again with --commit to import.")

    def progress(self, bars: list[tqdm[Any]]) -> services.Progress:
        """One bar per phase, on stderr (stdout keeps the report), shown only
        when stdout is a terminal."""

        def phase(name: str) -> Callable[[int, int], None]:
            def update(done: int, total: int) -> None:
                if not bars or bars[-1].desc != name:
                    if bars:
                        bars[-1].close()
                    bars.append(tqdm(total=total, desc=name, unit="", file=sys.stderr))
                bars[-1].update(done - bars[-1].n)

            return update

        return phase
