"""Migration operations of both apps (here because accounts is the lowest app)."""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db.migrations.operations import AddIndex


class AddIndexOnline(AddIndexConcurrently):
    """AddIndex that lets writes go on while the index is built.

    A plain CREATE INDEX on PostgreSQL holds off every insert into the table
    until it is done: tens of seconds for ten million messages, during which
    nobody's message is stored. CREATE INDEX CONCURRENTLY does not (its
    migration needs `atomic = False`). SQLite has no such option, and one
    writer at a time anyway: a plain CREATE INDEX there.
    """

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
