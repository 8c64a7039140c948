"""Private Redis and PostgreSQL servers that a test may stop and restart.

The machine's shared instances serve every test run at once: a fault test
brings down only its own, started on a free port with its files in a
temporary folder.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .servers import ROOT, free_port


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_until(ready, proc, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


def stop_process(proc, sig=signal.SIGTERM):
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PrivateRedis:
    """redis-server on a free port, without persistence: a restart loses
    every group membership and queued event, as a real one would."""

    def __init__(self, directory):
        self.binary = shutil.which("redis-server")
        self.dir = Path(directory)
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(lambda: port_open(self.port), self.proc, "redis-server")
        return self

    def stop(self):
        stop_process(self.proc)
        if self.proc is not None:
            self.log.close()


def postgres_bin():
    """The newest PostgreSQL's programs (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """A PostgreSQL cluster of its own (trust auth, no fsync), with the
    project's migrations applied to database `chat`.

    As root, the server must run as the `postgres` user: it refuses root.
    """

    def __init__(self):
        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="chat-pg-"))
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.proc = None

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/chat"

    def _run(self, *command):
        subprocess.run(command, check=True, capture_output=True, user=self.user, cwd=self.dir)

    def create(self):
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
        self._run(
            self.bin / "initdb", "-D", self.dir / "data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        self.start()
        self._run(self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "chat")
        env = {**os.environ, "DATABASE_URL": self.url}
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        return self

    def start(self):
        self.log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [self.bin / "postgres", "-D", self.dir / "data", "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"],
            cwd=self.dir, user=self.user, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self.ready, self.proc, "postgres")
        return self

    def query(self, sql, params=()):
        """Rows of one statement on database `chat`, from outside the servers."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            return db.execute(sql, params).fetchall()

    def ready(self):
        command = [self.bin / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(command, check=False).returncode == 0

    def stop(self):
        """Fast shutdown: the server ends every session, as a restart does."""
        stop_process(self.proc, signal.SIGINT)
        if self.proc is not None:
            self.log.close()

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
