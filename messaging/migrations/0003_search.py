"""Full-text search of message bodies, with each database's own index.

SQLite: an FTS5 table over messaging_message (external content), kept in
step by triggers, so every insert, edit and delete updates it in the same
transaction. PostgreSQL: a GIN index on the expression the search selector
queries (django.contrib.postgres's SearchVector with the 'simple' config:
lower-cased words, no stemming, like FTS5's unicode61 tokenizer).
"""

from django.db import migrations

FTS = "messaging_message_fts"

SQLITE_FORWARDS = [
    f"""CREATE VIRTUAL TABLE {FTS} USING fts5(
        body, content='messaging_message', content_rowid='id', tokenize='unicode61 remove_diacritics 0')""",
    f"""CREATE TRIGGER {FTS}_insert AFTER INSERT ON messaging_message BEGIN
        INSERT INTO {FTS}(rowid, body) VALUES (new.id, new.body);
    END""",
    f"""CREATE TRIGGER {FTS}_delete AFTER DELETE ON messaging_message BEGIN
        INSERT INTO {FTS}({FTS}, rowid, body) VALUES ('delete', old.id, old.body);
    END""",
    f"""CREATE TRIGGER {FTS}_update AFTER UPDATE OF body ON messaging_message BEGIN
        INSERT INTO {FTS}({FTS}, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO {FTS}(rowid, body) VALUES (new.id, new.body);
    END""",
    f"INSERT INTO {FTS}({FTS}) VALUES ('rebuild')",
]
SQLITE_BACKWARDS = [
    f"DROP TRIGGER IF EXISTS {FTS}_insert",
    f"DROP TRIGGER IF EXISTS {FTS}_delete",
    f"DROP TRIGGER IF EXISTS {FTS}_update",
    f"DROP TABLE IF EXISTS {FTS}",
]
POSTGRES_FORWARDS = [
    "CREATE INDEX messaging_msg_body_search ON messaging_message"
    " USING gin (to_tsvector('simple'::regconfig, COALESCE(body, ''::text)))",
]
POSTGRES_BACKWARDS = ["DROP INDEX IF EXISTS messaging_msg_body_search"]


def run(statements):
    def apply(apps, schema_editor):
        for statement in statements.get(schema_editor.connection.vendor, ()):
            schema_editor.execute(statement)

    return apply


class Migration(migrations.Migration):
    dependencies = [("messaging", "0002_v1_1_and_sessions")]

    operations = [
        migrations.RunPython(
            run({"sqlite": SQLITE_FORWARDS, "postgresql": POSTGRES_FORWARDS}),
            run({"sqlite": SQLITE_BACKWARDS, "postgresql": POSTGRES_BACKWARDS}),
        ),
    ]
