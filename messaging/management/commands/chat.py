"""Terminal client for the chat. No database needed: it only speaks the
WebSocket protocol, to any of our servers, local or remote."""

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from chatclient import tui


class Command(BaseCommand):
    help = "Terminal chat client: talks to a chat server over the WebSocket protocol (no database used)."
    requires_system_checks = ()
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        tui.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        settings = type("Args", (), {k: options.get(k) for k in ("host", "port", "url", "takeover", "user")})
        code = tui.main_with(settings)
        if code:
            sys.exit(code)
