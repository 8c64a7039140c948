"""The servers under test: a fresh database, seeded users, server processes.

``Stack`` starts either the project (``chatsite.asgi`` with
``bench.cheap_hash_settings``) or the bare reference (``bench.bare.asgi``),
on SQLite or on PostgreSQL + Redis (``scaleout``: a database of its own, a
channel-layer prefix of its own, two processes), under daphne or uvicorn.
It reads CPU and memory from /proc for its processes, the PostgreSQL
backends and redis-server, and cleans up after itself: only the processes
it started, its database, its Redis keys, its temp dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.clients import PASSWORD

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The pings of `make run` and deploy/chat@.service (the Makefile's PINGS):
# what an idle connection costs.
DAPHNE_PINGS = ["--ping-interval", "35", "--ping-timeout", "15"]


@dataclass
class Options:
    stack: str = "sqlite"  # or "scaleout"
    server: str = "daphne"  # or "uvicorn"
    layer: str = "core"  # or "pubsub" (scaleout)
    processes: int = 0  # 0: 1 on sqlite, 2 on scaleout
    pg_url: str = "postgres://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    users: int = 100
    pending: int = 0
    rooms: list[int] = field(default_factory=list)  # a room bench-N of users 1..N+1 for each
    log: Callable[[str], None] = print
    extra_env: dict[str, str] = field(default_factory=dict)
    pings: list[str] = field(default_factory=lambda: list(DAPHNE_PINGS))  # daphne's ping flags
    server_cpus: set[int] = field(default_factory=set)  # pinned there (empty: anywhere)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> tuple[str, float] | None:
    """(comm, utime+stime seconds) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / CLK_TCK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


class Stack:
    """One system under test, from a fresh database to cleanup."""

    def __init__(self, target: str, options: Options):
        assert target in ("project", "bare")
        self.target, self.o = target, options
        self.scaleout = options.stack == "scaleout"
        self.n = options.processes or (2 if self.scaleout else 1)
        self.tag = f"bench{os.getpid()}{target}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"chat-{self.tag}-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.db_created = False
        self.env = self._env()
        self.loadgen_pids: list[int] = []  # client processes besides this one (bench/crowd.py)

    @property
    def dbname(self) -> str:
        return self.tag.lower()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        env.update(
            PYTHONPATH=str(ROOT),
            LOG_LEVEL="ERROR",
            CHAT_VAR_DIR=str(self.tmp),
            CHAT_RATE_LIMIT_COUNT="0",
            CHAT_BROADCAST_RATE_COUNT="0",
            CHAT_CONNECTION_RATE="0",
            CHAT_SIGNUPS_PER_ADDRESS="0",
            CHAT_ROOM_MAX_MEMBERS="100000",  # a room of 1,000 and its sender
            # A thousand connections open, then log in 20 at a time: on a
            # loaded machine the last ones pass the default 60 s deadline.
            CHAT_LOGIN_DEADLINE_SECONDS="600",
            CHAT_PASSWORD_FAILURES_PER_ADDRESS="0",
            DJANGO_SETTINGS_MODULE="bench.cheap_hash_settings" if self.target == "project" else "bench.bare.settings",
        )
        if self.scaleout:
            base = self.o.pg_url.rsplit("/", 1)[0]
            env.update(
                DATABASE_URL=f"{base}/{self.dbname}",
                REDIS_URL=self.o.redis_url,
                CHANNEL_LAYER_PREFIX=self.tag,
                # The project's switch (chatsite/settings.py); the bare app reads it too.
                CHANNEL_LAYER=self.o.layer,
            )
        else:
            env.update(DATABASE_URL=f"sqlite:///{self.tmp / 'bench.sqlite3'}")
        env.update(self.o.extra_env)
        return env

    # --- Life cycle ----------------------------------------------------------------------

    def start(self) -> Stack:
        if self.target == "project":
            if self.scaleout:
                self._pg(f'CREATE DATABASE "{self.dbname}"')
                self.db_created = True
            self._run("manage.py", "migrate", "--noinput", "-v0")
            seed = ["-m", "bench.seed", "--users", str(self.o.users), "--password", PASSWORD]
            self._run(*seed, "--pending", str(self.o.pending), "--rooms", ",".join(map(str, self.o.rooms)))
        for i in range(self.n):
            port = free_port()
            self.procs.append(self._serve(port, i))
            self.urls.append(f"ws://127.0.0.1:{port}/ws/chat/")
        for proc, url in zip(self.procs, self.urls, strict=True):
            self._wait_listening(proc, int(url.split(":")[2].split("/")[0]))
        return self

    def _run(self, *args: str) -> None:
        subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env, check=True, stdout=subprocess.DEVNULL)

    def _serve(self, port: int, index: int) -> subprocess.Popen[bytes]:
        app = "chatsite.asgi:application" if self.target == "project" else "bench.bare.asgi:application"
        if self.o.server == "uvicorn":
            cmd = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"]
            cmd += ["--http", "httptools", "--ws", "websockets", "--log-level", "warning", "--no-access-log", app]
        else:
            cmd = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "--websocket_timeout", "-1"]
            cmd += [*self.o.pings, app]
        log = open(self.tmp / f"server{index}.log", "ab")  # noqa: SIM115 (kept open for the process)
        proc = subprocess.Popen(
            [sys.executable, *cmd], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if self.o.server_cpus:
            # At once: the server's threads start later, with its settings.
            os.sched_setaffinity(proc.pid, self.o.server_cpus)
        return proc

    def _wait_listening(self, proc: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}):\n{self.server_log()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not listen on {port}:\n{self.server_log()}")

    def restart(self) -> float:
        """Stop the servers as an upgrade does (SIGTERM: each tells its
        clients to reconnect, closing with 1012) and start them again on the
        same ports: perf_counter when every one listens again."""
        ports = [int(url.split(":")[2].split("/")[0]) for url in self.urls]
        self._terminate(60)
        self.procs = [self._serve(port, i) for i, port in enumerate(ports)]
        for proc, port in zip(self.procs, ports, strict=True):
            self._wait_listening(proc, port)
        return time.perf_counter()

    def _terminate(self, grace: float) -> None:
        """SIGTERM to every server still running, SIGKILL to those not gone after `grace` s."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def server_log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("server*.log")))

    def stop(self) -> None:
        """Stop what this stack started; safe to call twice, and after a failed start."""
        self._terminate(10)
        self.procs = []
        if self.db_created:
            with contextlib.suppress(Exception):
                self._pg(
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.dbname}'",
                    f'DROP DATABASE IF EXISTS "{self.dbname}"',
                )
                self.db_created = False
        if self.scaleout:
            with contextlib.suppress(Exception):
                self._redis_cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _pg(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.o.pg_url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def _redis_cleanup(self) -> None:
        import redis

        client = redis.Redis.from_url(self.o.redis_url)
        keys = list(client.scan_iter(match=f"{self.tag}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()

    # --- Measurements --------------------------------------------------------------------

    @property
    def server_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def rss_kib(self) -> int:
        """Resident memory of the server processes, summed (KiB)."""
        total = 0
        for pid in self.server_pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) so far: servers, PostgreSQL, Redis, load generator."""
        out = {"server": 0.0, "loadgen": 0.0}
        for pid in self.server_pids:
            stat = _stat(pid)
            out["server"] += stat[1] if stat else 0.0
        for pid in [os.getpid(), *self.loadgen_pids]:
            stat = _stat(pid)
            out["loadgen"] += stat[1] if stat else 0.0
        if not self.scaleout:
            return out
        out.update(postgres=0.0, postgres_cluster=0.0, redis=0.0)
        for pid in _pids():
            stat = _stat(pid)
            if stat is None:
                continue
            comm, seconds = stat
            if comm == "postgres":
                # Every process of the cluster (other users' work included), and
                # the backends serving our database ("postgres: USER DB ADDR ...").
                out["postgres_cluster"] += seconds
                if f" {self.dbname} " in _cmdline(pid):
                    out["postgres"] += seconds
            elif comm == "redis-server":
                out["redis"] += seconds
        return out
