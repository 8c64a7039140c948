import contextlib
import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(condition, what):
    """Skip a test whose service is missing here; in CI a missing service fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available", pytrace=False)
    pytest.skip(f"{what} not available")


_MUTATION_DB_NAMES: dict[str, str] = {}


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """`make mutation` tries two mutants at once, each in a process forked
    from mutmut's: each gets its own test database, named by its process."""
    if "MUTANT_UNDER_TEST" in os.environ:
        from django.conf import settings

        for alias, db in settings.DATABASES.items():
            test = db.setdefault("TEST", {})
            base = _MUTATION_DB_NAMES.setdefault(alias, test.get("NAME") or f"test_{db['NAME']}")
            test["NAME"] = f"{base}-{os.getpid()}"


@pytest.fixture(autouse=True)
def fast_settings(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CHAT_PUMP_SECONDS = 60  # tests that want the tick set it lower
    # Tests sign up and log in many users from 127.0.0.1; the tests of the
    # per-address budgets turn them on.
    settings.CHAT_SIGNUPS_PER_ADDRESS = 0
    settings.CHAT_PASSWORD_FAILURES_PER_ADDRESS = 0
    settings.CHAT_ADDRESS_BUDGET_EXEMPT = []  # then they apply to 127.0.0.1 too
    settings.CHAT_BROADCAST_RATE_COUNT = 0


@pytest.fixture(autouse=True)
def fresh_process_state():
    """A new channel layer and process runtime (hub, pump, writer, hashing
    pool, the events breaker) per test: their queues and tasks belong to
    one event loop."""
    from channels.layers import channel_layers

    from messaging import runtime

    def reset():
        channel_layers.backends = {}
        runtime.reset()
        runtime.runtime.clear_dead_processes = False  # tests make such rows themselves

    reset()
    yield
    reset()


@pytest.fixture
def capture_pushes(django_capture_on_commit_callbacks):
    """`with capture_pushes() as pushes:` lists what services pushed, in
    order, once their transactions committed (Zulip's
    capture_send_event_calls). Works in tests with and without transactions."""
    from messaging import events

    @contextlib.contextmanager
    def capture():
        with events.capture() as pushes, django_capture_on_commit_callbacks(execute=True):
            yield pushes

    return capture


def chromium_path():
    return shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.fixture(scope="module")
def module_server(django_db_setup, django_db_blocker):
    """One server for the module's tests: starting one costs a second or two
    of CPU, the `make test` budget's largest share after the tests' own."""
    from .servers import Server

    with django_db_blocker.unblock():
        srv = Server().start()
    yield srv
    srv.stop()


@pytest.fixture
def server(module_server, transactional_db):
    """A real chat server (daphne subprocess) on the test database: the
    module's, started again if a test before stopped it, its log_text()
    from this test on. The database is emptied after each test; the
    server's connections end first, so nothing they write outlives it."""
    import time

    from messaging.models import Presence

    if module_server.proc.poll() is not None:
        module_server.start()
    module_server.log_from = os.path.getsize(module_server.log.name)
    yield module_server
    deadline = time.monotonic() + 10
    while Presence.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="session", autouse=True)
def close_stray_connections(django_db_setup, django_db_blocker):
    """Let pytest-django drop the PostgreSQL test database at the end.

    Connections are kept (CONN_MAX_AGE), so the worker threads of async tests
    still hold some when the session ends; PostgreSQL refuses to drop a
    database in use.
    """
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


# --- Attachments' storage -------------------------------------------------------


def s3_stack() -> bool:
    """The scale-out stack keeps attachments in S3 (moto's server here)."""
    return bool(os.environ.get("DATABASE_URL"))


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on a free loopback port, for the whole
    session, with one bucket; yields the env that points the chat at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    from .servers import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "CHAT_FILES_S3_BUCKET": "chat-files",
        "CHAT_FILES_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "CHAT_FILES_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    boto3.client(
        "s3",
        endpoint_url=env["CHAT_FILES_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=env["CHAT_FILES_S3_BUCKET"])
    yield env
    server.stop()


def s3_storage_setting(env):
    """The S3 storage, under a folder of its own: the bucket lives for the
    session, each test sees only its files."""
    import uuid

    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env["CHAT_FILES_S3_BUCKET"],
            "endpoint_url": env["CHAT_FILES_S3_ENDPOINT_URL"],
            "region_name": env["CHAT_FILES_S3_REGION"],
            "access_key": env["AWS_ACCESS_KEY_ID"],
            "secret_key": env["AWS_SECRET_ACCESS_KEY"],
            "default_acl": None,
            "querystring_auth": False,
            "file_overwrite": False,
            "location": uuid.uuid4().hex,
        },
    }


@pytest.fixture
def attachment_store(request, settings, tmp_path, monkeypatch):
    """Where attachments go in this test: a temporary folder on SQLite, the
    S3 store (moto) on the scale-out stack. Servers started by the test
    (subprocesses) get the same through the environment. Yields the env."""
    if s3_stack():
        env = request.getfixturevalue("s3_server")
        settings.STORAGES = {**settings.STORAGES, "attachments": s3_storage_setting(env)}
    else:
        env = {"MEDIA_ROOT": str(tmp_path / "media")}
        settings.STORAGES = {
            **settings.STORAGES,
            "attachments": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": env["MEDIA_ROOT"], "base_url": None},
            },
        }
    # Servers that take uploads start their upload process with them, as in
    # production (tests/servers.py turns that off for the rest).
    env = {**env, "CHAT_UPLOAD_PREWARM": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
