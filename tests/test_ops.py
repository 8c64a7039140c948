"""Running it like a service: probes, logs, backups, locked migrations,
commands that say which database they use."""

import contextlib
import io
import json
import logging
import os
import re
import socket
import threading
import time

import pytest
from django.db import connection
from django.db.utils import ConnectionHandler
from django.test import override_settings

from chatsite import health

from .servers import free_port


@pytest.fixture(autouse=True)
def fresh_probes():
    """Each test starts with no cached migration check, Redis client or
    check in flight."""

    def reset():
        health._migrations_ok_at = None
        health._redis_client = None
        health._running.clear()

    reset()
    yield
    reset()


@contextlib.contextmanager
def silent_server():
    """A port that accepts connections and never answers: a hung service."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def get(client, path):
    response = client.get(path)
    return response.status_code, json.loads(response.content)


# --- /healthz and /readyz ---------------------------------------------------------


def test_healthz_touches_no_database(client):
    # No django_db mark: any query would raise.
    status, body = get(client, "/healthz")
    assert status == 200 and body == {"status": "ok"}


@pytest.mark.django_db
def test_healthz_needs_no_login_nor_allowed_host(client):
    # A load balancer probes by address, with whatever Host header.
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:2000")
    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_readyz_ok(client):
    status, body = get(client, "/readyz")
    assert status == 200, body
    assert body["status"] == "ok" and body["failed"] == []
    assert body["checks"]["database"] == "ok"
    assert ("redis" in body["checks"]) == bool(health.settings.REDIS_URL)


@pytest.mark.django_db(transaction=True)
def test_readyz_is_not_logged(client, caplog, monkeypatch):
    monkeypatch.setattr(health, "check_database", lambda: (_ for _ in ()).throw(RuntimeError("down")))
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
    assert not [r for r in caplog.records if "readyz" in r.getMessage() or "healthz" in r.getMessage()]


@pytest.mark.django_db(transaction=True)
def test_readyz_names_unapplied_migrations(client, monkeypatch):
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, targets: [("accounts", "9999_x")])
    status, body = get(client, "/readyz")
    assert status == 503 and body["failed"] == ["database"]
    assert "1 migration(s) not applied" in body["checks"]["database"]
    monkeypatch.undo()
    assert get(client, "/readyz")[0] == 200


def unreachable_database(port):
    """A connection handler whose default database is on `port`."""
    settings = {**connection.settings_dict}
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no server to stop")
    settings.update(HOST="127.0.0.1", PORT=str(port))
    return ConnectionHandler({"default": settings})


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_readyz_without_postgresql_answers_503_in_time_then_recovers(client, monkeypatch, kind):
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(silent_server()) if kind == "silent" else free_port()
        monkeypatch.setattr(health, "connections", unreachable_database(port))
        started = time.monotonic()
        status, body = get(client, "/readyz")
        took = time.monotonic() - started
    assert status == 503 and body["failed"] == ["database"], body
    assert took < 2 + 1  # bound 2 s, with a margin for a busy machine
    monkeypatch.undo()
    health._running.clear()  # the hung check is still held by its thread
    assert get(client, "/readyz")[0] == 200


@pytest.mark.django_db(transaction=True)
def test_readyz_with_a_hung_database_answers_503_in_time(client, monkeypatch):
    # Any engine: a check that does not return (SQLite stuck on a lock, a
    # network that drops packets) is a 503 at the deadline.
    release = threading.Event()
    monkeypatch.setattr(health, "check_database", lambda: release.wait(10))
    started = time.monotonic()
    status, body = get(client, "/readyz")
    took = time.monotonic() - started
    # A second probe waits on the same check instead of starting another.
    get(client, "/readyz")
    release.set()
    assert status == 503 and body["checks"]["database"] == "timeout"
    assert took < 2 + 1
    assert health._pool._max_workers == 4 and len(health._running) >= 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_readyz_without_redis_answers_503_in_time_then_recovers(client, kind):
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(silent_server()) if kind == "silent" else free_port()
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{port}/0"):
            started = time.monotonic()
            status, body = get(client, "/readyz")
            took = time.monotonic() - started
    assert status == 503 and body["failed"] == ["redis"], body
    assert body["checks"]["database"] == "ok"
    assert took < 2 + 1
    health._redis_client = None
    if health.settings.REDIS_URL:  # the real one, on the scale-out stack
        deadline = time.monotonic() + 5
        while (status := get(client, "/readyz")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200


@pytest.mark.scaleout
@pytest.mark.django_db(transaction=True)
def test_readyz_survives_a_redis_restart(client, monkeypatch):
    """The same client object answers again once Redis is back."""
    from .conftest import need

    need(health.settings.REDIS_URL, "Redis")
    assert get(client, "/readyz")[0] == 200
    health._redis_client.connection_pool.disconnect()  # as a restart would
    assert get(client, "/readyz")[0] == 200


@pytest.mark.django_db(transaction=True)
def test_probes_are_answered_by_a_real_server():
    """As `make run` starts it: -v 0, so no access log line per probe."""
    import urllib.request

    from .servers import Server

    server = Server(args=["-v", "0"], LOG_LEVEL="INFO").start()
    request = urllib.request.Request(f"{server.http}/healthz", headers={"Host": "10.9.8.7"})

    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{server.http}/readyz", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
        for _ in range(5):
            urllib.request.urlopen(f"{server.http}/readyz", timeout=5).close()
    finally:
        server.stop()
    assert "readyz" not in server.log_text() and "healthz" not in server.log_text()


# --- Logs -------------------------------------------------------------------------


@contextlib.contextmanager
def log_capture(logger_name, formatter):
    """What `logger_name` writes through the project's handler (its filter
    and `formatter`), as text."""
    from chatsite.logs import ContextFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def test_text_lines_have_time_level_and_process():
    from chatsite.logs import TextFormatter

    with log_capture("chat", TextFormatter()) as out:
        logging.getLogger("chat").warning("closing %s: %s", "alice", "too slow")
    line = out.getvalue().strip()
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} WARNING \[{os.getpid()}\] chat: closing alice: too slow", line
    ), line


@pytest.mark.django_db
def test_json_lines_carry_the_request_id(client):
    from chatsite.logs import JsonFormatter

    with log_capture("django.request", JsonFormatter()) as out:
        response = client.get("/no-such-page/", HTTP_X_REQUEST_ID="req-42")
        client.get("/no-such-page/", HTTP_X_REQUEST_ID="not an id\n{}")
    assert response["X-Request-ID"] == "req-42"
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert set(first) == {"time", "level", "logger", "process", "message", "request_id"}
    assert first["level"] == "WARNING" and first["logger"] == "django.request" and first["process"] == os.getpid()
    assert first["request_id"] == "req-42" and "/no-such-page/" in first["message"]
    assert re.fullmatch(r"[0-9a-f]{32}", second["request_id"])  # a bad one is replaced


def test_secrets_are_masked_in_messages_and_tracebacks():
    from chatsite.logs import JsonFormatter

    with log_capture("chat", JsonFormatter()) as out:
        log = logging.getLogger("chat")
        log.warning("frame %s", '{"type": "login", "username": "alice", "password": "hunter2-secret"}')
        try:
            raise ValueError("bad row: body='meet me at noon', token=abcdef123456")
        except ValueError:
            log.exception("request failed")
    text = out.getvalue()
    for secret in ("hunter2-secret", "meet me at noon", "abcdef123456"):
        assert secret not in text
    assert all(json.loads(line) for line in text.splitlines())


@pytest.mark.django_db(transaction=True)
async def test_a_real_server_logs_json_lines_without_secrets():
    """LOG_FORMAT=json: every line the process writes is one JSON object, and
    a signup, a failed login, a message and a refused socket leave no
    password, token or body in them."""
    from chatclient.protocol import Closed

    from .servers import Peer, Server, signup

    server = Server(args=["-v", "0"], LOG_FORMAT="json", LOG_LEVEL="DEBUG").start()
    try:
        await signup(server.url, "alice", "bob", password="s3cret-Passw0rd")
        async with Peer(server.url) as a:
            await a.request("login", username="alice", password="wrong-Passw0rd")
            login = await a.ok("login", username="alice", password="s3cret-Passw0rd")
            await a.ok("send", to="bob", body="the body nobody logs")
        with contextlib.suppress(Closed, OSError, Exception):
            async with Peer(server.url.replace("/ws/chat/", "/ws/nope/")):
                pass
    finally:
        server.stop()
    text = server.log_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines, "the server logged nothing (the refused socket is logged at INFO)"
    assert all({"time", "level", "logger", "process", "message"} <= set(line) for line in lines)
    for secret in ("s3cret-Passw0rd", "wrong-Passw0rd", "the body nobody logs", login.get("token") or "no-token"):
        assert secret not in text


# --- Commands say which database they use ------------------------------------------


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_command(*args, **kwargs):
    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


def test_database_description_names_engine_and_database_not_the_password(monkeypatch):
    from messaging.management.database import database_description

    monkeypatch.setitem(connection.settings_dict, "PASSWORD", "pa55-word-xyz")
    text = database_description()
    assert str(connection.settings_dict["NAME"]) in text and "pa55-word-xyz" not in text
    assert text.startswith("SQLite database" if connection.vendor == "sqlite" else "PostgreSQL database")


@pytest.mark.django_db
@pytest.mark.parametrize("command", [("chat_presence",), ("chat_seed", "--users", "2")])
def test_commands_say_which_database_on_stderr(command):
    out, err = run_command(*command)
    assert err.splitlines()[0].startswith("Using the ") and str(connection.settings_dict["NAME"]) in err
    assert "Using the" not in out  # stdout stays the command's own output
    assert run_command(*command, verbosity=0)[1] == ""


@pytest.mark.django_db
def test_seed_writes_messages_in_bulk_with_progress_on_a_terminal(monkeypatch, django_assert_max_num_queries):
    from messaging.models import Delivery, Message

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    run_command("chat_seed", "--users", "20", "--prefix", "bulk")
    # 1,200 messages: a few queries per batch of 500, not several per message.
    with django_assert_max_num_queries(60):
        out, _ = run_command("chat_seed", "--users", "20", "--prefix", "bulk", "--messages", "1200", "--seed", "3")
    assert "1200 message(s) sent" in out
    assert Message.objects.filter(sender__username__startswith="bulk").count() == 1200
    assert Delivery.objects.filter(message__sender__username__startswith="bulk", acked_at__isnull=True).count() == 1200
    assert "1200/1200" in terminal.getvalue() and "msg" in terminal.getvalue()


# --- Migrations under a lock ---------------------------------------------------------


def manage(*args, database_url, wait=True, **env):
    """manage.py in a subprocess against `database_url`."""
    import subprocess
    import sys

    from .servers import ROOT

    environ = {**os.environ, "DATABASE_URL": database_url, **env}
    environ.pop("REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc


@contextlib.contextmanager
def migration_lock_held():
    """Hold the lock chat_migrate takes, as another process migrating would."""
    import fcntl

    from messaging.management.commands.chat_migrate import LOCK_KEY

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    else:
        with open(str(connection.settings_dict["NAME"]) + ".migrate-lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


@pytest.mark.django_db
def test_a_column_the_last_release_wrote_stays_while_its_processes_serve():
    """Migrations run while the old processes still serve (docs/deploy.md,
    "Upgrading"): Presence.auth_hash, which this release no longer writes,
    keeps its column, with a default so that the new inserts need not
    name it, until the release after."""
    from messaging.models import Presence

    from .helpers import make_user

    table = Presence._meta.db_table
    with connection.cursor() as cursor:
        columns = [c.name for c in connection.introspection.get_table_description(cursor, table)]
        assert "auth_hash" in columns
        user = make_user("alice")
        cursor.execute(  # the old code's insert
            f"INSERT INTO {table} (user_id, channel_name, host, pid, connected_at, heartbeat_at, session_key,"
            " auth_hash) VALUES (%s, 'old', 'h', 1, %s, %s, '', 'x')",
            [user.pk, "2026-12-07 00:00:00", "2026-12-07 00:00:00"],
        )
    Presence.objects.filter(user=user).delete()
    Presence.objects.create(user=user, channel_name="new", host="h", pid=1, connected_at="2026-12-07T00:00:00Z",
                            heartbeat_at="2026-12-07T00:00:00Z")  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT auth_hash FROM {table} WHERE channel_name = 'new'")
        assert cursor.fetchone() == ("",)


@pytest.mark.django_db(transaction=True)
def test_chat_migrate_waits_for_another_migration():
    from .servers import database_url_for_servers

    with migration_lock_held():
        proc = manage("chat_migrate", "--wait", "60", database_url=database_url_for_servers())
        # It says it waits, and does not finish while the lock is held.
        line = ""
        while "waiting" not in line and proc.poll() is None:
            line = proc.stderr.readline()
        assert "Another process is migrating; waiting for it." in line
        time.sleep(0.5)
        assert proc.poll() is None
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "No migrations to apply" in out


@pytest.mark.django_db(transaction=True)
def test_chat_migrate_gives_up_after_its_wait():
    from .servers import database_url_for_servers

    with migration_lock_held():
        proc = manage("chat_migrate", "--wait", "0.5", database_url=database_url_for_servers())
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "held the migration lock" in err


@contextlib.contextmanager
def fresh_database():
    """A new, empty PostgreSQL database (or SQLite file), dropped after."""
    import tempfile
    import uuid

    if connection.vendor == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/fresh.sqlite3"
        return
    import psycopg

    name = f"ops_fresh_{uuid.uuid4().hex[:8]}"
    s = connection.settings_dict
    admin = dict(host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"] or "postgres", dbname="postgres")
    with psycopg.connect(**admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://{admin['user']}@{admin['host']}:{admin['port']}/{name}"
    finally:
        with psycopg.connect(**admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.django_db
def test_two_processes_migrate_a_fresh_database_at_once():
    """The README's scale-out start: two `make run` at once on a new database."""
    with fresh_database() as url:
        procs = [manage("chat_migrate", database_url=url) for _ in range(2)]
        results = [(p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=300)]]
        for code, _out, err in results:
            assert code == 0, err
        assert sum("Applying accounts.0001_initial" in out for _, out, _ in results) == 1
        check = manage("migrate", "--check", database_url=url)
        assert check.wait(timeout=120) == 0


# --- Backups ---------------------------------------------------------------------------


class Sender(threading.Thread):
    """Sends messages in a loop through the service, noting when each send
    returned ok (its own database connection, as a server process has)."""

    def __init__(self, sender, recipient):
        super().__init__(daemon=True)
        self.sender, self.recipient = sender, recipient
        self.done = []  # (monotonic time the send returned, message id)
        self.stop = threading.Event()
        self.error = None

    def run(self):
        from django.db import connections

        from messaging import services

        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                sent = services.message_send(
                    sender=self.sender, to_username=self.recipient.username, body=f"m{n}", rate_limit=False
                )
                self.done.append((time.monotonic(), sent.message.pk))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            connections.close_all()


def restored_message_ids(backup, tmp_path):
    """Restore `backup` into a fresh database and list its message ids."""
    if connection.vendor == "sqlite":
        import shutil
        import sqlite3

        fresh = tmp_path / "restored.sqlite3"
        shutil.copy(backup, fresh)  # the documented restore: put the file in place
        db = sqlite3.connect(fresh)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            return {row[0] for row in db.execute("SELECT id FROM messaging_message")}
        finally:
            db.close()
    import subprocess

    import psycopg

    with fresh_database() as url:
        restored = subprocess.run(
            ["pg_restore", "--no-owner", f"--dbname={url}", str(backup)], capture_output=True, text=True
        )
        assert restored.returncode == 0, restored.stderr
        with psycopg.connect(url) as db:
            return {row[0] for row in db.execute("SELECT id FROM messaging_message")}


@pytest.mark.django_db(transaction=True)
def test_backup_while_messages_are_sent_has_every_acknowledged_message(tmp_path):
    from .helpers import make_user

    if connection.vendor == "postgresql":
        import shutil

        from .conftest import need

        need(shutil.which("pg_dump") and shutil.which("pg_restore"), "pg_dump and pg_restore")
    sender = Sender(make_user("alice"), make_user("bob"))
    sender.start()
    try:
        while len(sender.done) < 20 and sender.error is None:
            time.sleep(0.05)
        started = time.monotonic()
        acknowledged = {pk for at, pk in sender.done if at < started}
        out, err = run_command("chat_backup", str(tmp_path / "chat.backup"))
        while len(sender.done) < len(acknowledged) + 20 and sender.error is None:
            time.sleep(0.05)  # sends went on during the backup
    finally:
        sender.stop.set()
        sender.join(30)
    assert sender.error is None, sender.error
    assert "Backed up" in out and "Using the" in err
    restored = restored_message_ids(tmp_path / "chat.backup", tmp_path)
    assert acknowledged and acknowledged <= restored
    assert not (tmp_path / "chat.backup.partial").exists()


@pytest.mark.django_db
def test_backup_refuses_to_overwrite(tmp_path):
    from django.core.management import CommandError

    (tmp_path / "old.backup").write_text("keep me")
    with pytest.raises(CommandError, match="exists"):
        run_command("chat_backup", str(tmp_path / "old.backup"))
    assert (tmp_path / "old.backup").read_text() == "keep me"


def test_pg_dump_command_hides_the_password(monkeypatch):
    from messaging.management.commands.chat_backup import pg_dump_command

    settings = {"NAME": "chat", "HOST": "db.internal", "PORT": "5432", "USER": "chat", "PASSWORD": "pa55-xyz"}
    command = pg_dump_command(settings, "/backups/chat.dump")
    assert command == [
        "pg_dump",
        "--format=custom",
        "--no-owner",
        "--file=/backups/chat.dump",
        "--host=db.internal",
        "--port=5432",
        "--username=chat",
        "chat",
    ]
    assert "pa55-xyz" not in " ".join(command)


def test_readyz_fails_while_the_process_stops_or_its_pump_died(client):
    """A load balancer stops sending clients to a process that is stopping
    (SIGTERM) or whose background pump died."""
    from messaging.runtime import runtime

    runtime.stopping = True
    status, body = get(client, "/readyz")
    assert status == 503 and "process" in body["failed"], body
    assert "stopping" in body["checks"]["process"]
    runtime.stopping, runtime.started = False, True  # started, and no pump task: it died
    status, body = get(client, "/readyz")
    assert status == 503 and "pump" in body["checks"]["process"], body


async def test_a_sockets_log_lines_carry_its_request_id():
    """X-Request-ID (as nginx may set it) follows a WebSocket's log lines."""
    import websockets

    from .servers import Server

    server = Server(args=["-v", "0"], LOG_FORMAT="json", CHAT_LOGIN_DEADLINE_SECONDS="0.3").start()
    try:
        ws = await websockets.connect(server.url, additional_headers={"X-Request-ID": "socket-req-42"})
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.recv()  # closed at the login deadline, which is logged
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.strip()]
    closing = [line for line in lines if "Log in sooner" in line["message"]]
    assert closing and closing[0].get("request_id") == "socket-req-42", lines
