from typing import Any

from django.core.management.base import CommandParser
from django.utils import timezone

from messaging import selectors, services
from messaging.management.database import DatabaseCommand
from messaging.models import Presence

CHUNK = 1000  # rows fetched at a time


class Command(DatabaseCommand):
    help = "List who is online; with --prune, drop presence the heartbeat missed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--prune",
            action="store_true",
            help="remove rows of dead processes on this host and rows whose heartbeat is too old",
        )

    def handle(self, *args: Any, prune: bool = False, **options: Any) -> None:
        if prune:
            cleared = services.presence_clear_dead_processes() + services.presence_expire()
            self.stdout.write(
                f"Pruned {len(cleared)} stale connection(s){': ' + ', '.join(cleared) if cleared else ''}."
            )
        now = timezone.now()
        cutoff = selectors.online_cutoff(now)
        # Streamed: ten thousand online are ten thousand rows.
        rows = Presence.objects.select_related("user").order_by("user__username").iterator(chunk_size=CHUNK)
        listed = 0
        for row in rows:
            listed += 1
            age = (now - row.heartbeat_at).total_seconds()
            state = "online" if row.heartbeat_at >= cutoff else "STALE"
            self.stdout.write(
                f"{row.user.username:<20} {state:<7} since {row.connected_at:%Y-%m-%d %H:%M:%S} "
                f"on {row.host}:{row.pid}, heartbeat {age:.0f}s ago"
            )
        if not listed:
            self.stdout.write("Nobody is online.")
