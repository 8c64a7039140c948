"""Real chat servers (daphne subprocesses) for end-to-end tests.

They use the test database that pytest-django set up, so a test can look at
the same rows the servers write.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from chatclient.protocol import Session, connect

from .helpers import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


def _port_range():
    """This process's share of TEST_PORTS ("30000-30999"): runs at once on one
    machine (`make test`'s two halves, xdist's workers) each take ports from a
    range of their own, so one never serves or dials another's server."""
    spec = os.environ.get("TEST_PORTS")
    if not spec:
        return None
    low, high = (int(n) for n in spec.split("-"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    share = (high - low + 1) // workers
    return range(low + worker * share, low + (worker + 1) * share)


_next_port = 0


def free_port():
    """A port nothing listens on: the kernel's pick, or the next free one of
    this process's range (_port_range) when TEST_PORTS is set."""
    global _next_port
    ports = _port_range()
    if ports is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in ports:
        port = ports[_next_port % len(ports)]
        _next_port += 1
        with socket.socket() as s:
            try:  # no SO_REUSEADDR: a port still in TIME_WAIT is passed over too
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports}")


def database_url_for_servers():
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER'] or ''}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Server:
    """One server process (daphne, or uvicorn with `kind="uvicorn"`)
    serving chatsite.asgi on a free port."""

    def __init__(self, port=None, args=(), kind="daphne", **env):
        self.kind = kind
        self.port = port or free_port()
        self.args = list(args)  # more daphne flags, e.g. --proxy-headers
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
            "DATABASE_URL": database_url_for_servers(),
            # The project's settings but MD5 for passwords, as in this process
            # (conftest.fast_settings): Argon2's 0.2 s of CPU a hash, hundreds
            # of times, would be most of what the servers of the suite do.
            "DJANGO_SETTINGS_MODULE": "bench.cheap_hash_settings",
            "PASSWORD_MIN_LENGTH": "8",
            "LOG_LEVEL": "WARNING",
            "CHAT_PUMP_SECONDS": "0.5",
            # What no signal tells of (a session deleted from the shell, as
            # the tests do) ends the socket at the pump's next check, not in a
            # minute.
            "CHAT_SESSIONS_CHECK_SECONDS": "0.5",
            "CHAT_SIGNUPS_PER_ADDRESS": "0",
            "CHAT_PASSWORD_FAILURES_PER_ADDRESS": "0",
            "CHAT_BROADCAST_RATE_COUNT": "0",
            # Most never see an upload: no upload process (a second of CPU
            # each) until the first, unless the test stores attachments
            # (conftest.attachment_store sets it in the environment).
            "CHAT_UPLOAD_PREWARM": os.environ.get("CHAT_UPLOAD_PREWARM", "0"),
            **{k: str(v) for k, v in env.items()},
        }
        self.proc = None

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    @property
    def http(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.log = open(ROOT / "var" / f"server-{self.port}.log", "ab")
        if not hasattr(self, "log_from"):
            self.log_from = self.log.tell()
        if self.kind == "uvicorn":
            # As bench/stack.py runs it (the figures docs/performance.md publishes).
            server = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port)]
            server += ["--loop", "uvloop", "--http", "httptools", "--ws", "websockets", "--no-access-log", *self.args]
        else:
            server = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), *self.args]
        self.proc = subprocess.Popen(
            [*server, "chatsite.asgi:application"], cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.kill()  # no fixture holds it yet to stop it
        raise RuntimeError("server did not start")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()

    def log_text(self):
        """What this server has logged since it first started."""
        with open(self.log.name, "rb") as f:
            f.seek(self.log_from)
            return f.read().decode("utf-8", "replace")

    def kill(self):
        self.stop(signal.SIGKILL)


class Peer(Session):
    """A protocol client over a real socket: `async with Peer(url) as peer:`."""

    def __init__(self, url, **connect_kwargs):
        self.url = url
        self.connect_kwargs = connect_kwargs

    async def __aenter__(self):
        super().__init__(await connect(self.url, **self.connect_kwargs), timeout=5)
        self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    @property
    def ws(self):
        return self.transport.ws


async def signup(url, *usernames, password=None):
    """Create accounts through the server itself (its own password hasher)."""
    async with Peer(url) as peer:
        for name in usernames:
            await peer.ok("signup", username=name, password=password or PASSWORD)
