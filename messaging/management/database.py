"""Which database a management command acts on, said before it does.

An operator with two env files (or none loaded) must see at once that
`chat_seed` is about to fill production, or that a backup is of an empty
SQLite file next to the checkout. One line on stderr, password never shown.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, OutputWrapper
from django.db import connections

ENGINES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MySQL", "oracle": "Oracle"}


def database_description(alias: str = "default") -> str:
    """'PostgreSQL database chat on db.internal:5432 as chat' or 'SQLite
    database /srv/chat/db.sqlite3': the engine, name, host and user, no
    password."""
    connection = connections[alias]
    settings = connection.settings_dict
    engine = ENGINES.get(connection.vendor, connection.vendor)
    text = f"{engine} database {settings['NAME']}"
    if connection.vendor != "sqlite":
        host = settings.get("HOST") or "local socket"
        port = settings.get("PORT")
        text += f" on {host}{':' + str(port) if port else ''}"
        if settings.get("USER"):
            text += f" as {settings['USER']}"
    return text


class DatabaseCommand(BaseCommand):
    """A command that says on stderr which database it uses, then runs as
    any other. Quiet at --verbosity 0. chat_import may use it too, or call
    database_description() itself."""

    def execute(self, *args: Any, **options: Any) -> Any:
        if options.get("verbosity", 1) > 0:
            OutputWrapper(options.get("stderr") or sys.stderr).write(f"Using the {database_description()}.")
        return super().execute(*args, **options)
