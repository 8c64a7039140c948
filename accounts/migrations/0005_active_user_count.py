"""ActiveUserCount: the number of active users, kept by triggers.

SQLite: a row trigger per change. PostgreSQL: statement triggers with
transition tables for inserts and deletes (a bulk insert of 100,000 users
updates the count once, not 100,000 times) and a row trigger for a change
of is_active only (logins update users all the time, and must not touch
the one count row).
"""

from typing import Any

from django.db import migrations, models

COUNT = "accounts_activeusercount"
USER = "accounts_user"

SQLITE = [
    f"""CREATE TRIGGER accounts_user_count_insert AFTER INSERT ON {USER} WHEN NEW.is_active
    BEGIN UPDATE {COUNT} SET active = active + 1; END""",
    f"""CREATE TRIGGER accounts_user_count_delete AFTER DELETE ON {USER} WHEN OLD.is_active
    BEGIN UPDATE {COUNT} SET active = active - 1; END""",
    f"""CREATE TRIGGER accounts_user_count_update AFTER UPDATE OF is_active ON {USER}
    WHEN OLD.is_active <> NEW.is_active
    BEGIN UPDATE {COUNT} SET active = active + (CASE WHEN NEW.is_active THEN 1 ELSE -1 END); END""",
]
SQLITE_DROP = [f"DROP TRIGGER IF EXISTS accounts_user_count_{op}" for op in ("insert", "delete", "update")]

POSTGRES = [
    f"""CREATE FUNCTION accounts_user_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE delta bigint;
    BEGIN
      IF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO delta FROM new_rows WHERE is_active;
      ELSE
        SELECT -count(*) INTO delta FROM old_rows WHERE is_active;
      END IF;
      IF delta <> 0 THEN UPDATE {COUNT} SET active = active + delta; END IF;
      RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION accounts_user_count_flip() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      UPDATE {COUNT} SET active = active + (CASE WHEN NEW.is_active THEN 1 ELSE -1 END);
      RETURN NULL;
    END $$""",
    f"""CREATE TRIGGER accounts_user_count_insert AFTER INSERT ON {USER}
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION accounts_user_count_rows()""",
    f"""CREATE TRIGGER accounts_user_count_delete AFTER DELETE ON {USER}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION accounts_user_count_rows()""",
    f"""CREATE TRIGGER accounts_user_count_update AFTER UPDATE OF is_active ON {USER}
    FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active) EXECUTE FUNCTION accounts_user_count_flip()""",
]
POSTGRES_DROP = [
    *(f"DROP TRIGGER IF EXISTS accounts_user_count_{op} ON {USER}" for op in ("insert", "delete", "update")),
    "DROP FUNCTION IF EXISTS accounts_user_count_rows()",
    "DROP FUNCTION IF EXISTS accounts_user_count_flip()",
]


def _run(schema_editor: Any, statements: dict[str, list[str]]) -> None:
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql)


def triggers_create(apps: Any, schema_editor: Any) -> None:
    _run(schema_editor, {"sqlite": SQLITE, "postgresql": POSTGRES})
    User = apps.get_model("accounts", "User")
    ActiveUserCount = apps.get_model("accounts", "ActiveUserCount")
    ActiveUserCount.objects.create(pk=1, active=User.objects.filter(is_active=True).count())


def triggers_drop(apps: Any, schema_editor: Any) -> None:
    _run(schema_editor, {"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP})


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_refuse_direction_controls"),
    ]

    operations = [
        migrations.CreateModel(
            name="ActiveUserCount",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("active", models.BigIntegerField()),
            ],
        ),
        migrations.RunPython(triggers_create, triggers_drop),
    ]
