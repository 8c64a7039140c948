"""Crowds of connections, spread over client processes.

One asyncio process cannot drive ten thousand WebSockets on this machine:
encoding, decoding and acking for all of them takes more than a core, and
the figures would measure the load generator. A ``Crowd`` spreads its
connections over ``processes`` worker processes (``python -m bench.crowd``),
each a ``CrowdWorker`` with its own event loop, told what to do by JSON
lines on its stdin and answering on its stdout. With ``processes=0`` the one
``CrowdWorker`` runs in the caller's loop (the small sizes of ``--quick``).

Times cross processes as they are: ``time.perf_counter`` is
CLOCK_MONOTONIC on Linux, one clock for every process of the machine.

``CpuWatch`` samples the CPU of the client processes from /proc while a
figure is taken: a process above ``CLIENT_BOUND`` of a core in any second of
it means the load generator, not the server, may have set the pace, and the
figure says so ("client-bound").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover (run as a script)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import PASSWORD, PRESENCE_TYPES, BenchClient, Tracker, close_many  # noqa: E402
from chatclient.client import ChatClient  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
CLIENT_BOUND = 0.9  # of one core, in any second of a measurement
# What the terminal client says while it reconnects: anything else it
# prints after a restart is something a person would read as trouble.
CALM = ("Connection lost. Reconnecting", "Still no connection", "Reconnected as", "Connected again", "* ")


class TerminalClient(ChatClient):
    """The terminal client's own session (its backoff, resume token and
    login), counting presence frames and keeping what it would print."""

    def __init__(self, url: str, max_delay: float) -> None:
        self.lines: list[tuple[float, str]] = []
        super().__init__(url, self._said, max_delay=max_delay)
        self.presence_frames = 0
        self.back_at = 0.0  # online again after `since`

    def _said(self, line: str) -> None:
        self.lines.append((time.perf_counter(), line))

    async def refresh_names(self) -> None:
        """Skipped: at its first login the terminal client asks `online` and
        `recent` for Tab completion (not after a reconnect), each a list of
        everyone online (about 100 and 700 KB at 10,000 online), so N
        clients logging in for the first time move N² names. The page asks
        the same at each connect. That cost is the protocol's, not the
        crowd's: docs/performance.md, "Crowds"."""
        self.names_skipped = getattr(self, "names_skipped", 0) + 1

    async def on_event(self, frame: dict[str, Any]) -> None:
        if frame.get("type") in PRESENCE_TYPES:
            self.presence_frames += 1
        await super().on_event(frame)


class CrowdWorker:
    """The connections of one process, and what the coordinator asks of them."""

    def __init__(self) -> None:
        self.tracker = Tracker()
        self.clients: list[BenchClient] = []
        self.terminals: list[TerminalClient] = []
        self.speaker: str | None = None  # the client that sends, and does not count as a recipient
        self.logged_in: set[str] = set()  # names whose login succeeded

    async def open_login(
        self, names: list[str], urls: list[str], concurrency: int = 20, presence_batch: bool = True
    ) -> dict[str, Any]:
        """Open and log in a BenchClient per name: seconds, errors."""
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []
        start = time.perf_counter()

        async def one(c: BenchClient) -> None:
            async with gate:
                try:
                    await c.open()
                    await c.login(presence_batch=presence_batch)
                except Exception as e:  # noqa: BLE001  (counted and reported)
                    errors.append(f"{c.name}: {e!r}")
                else:
                    self.logged_in.add(c.name)

        clients = [BenchClient(n, urls[i % len(urls)], self.tracker) for i, n in enumerate(names)]
        self.clients.extend(clients)
        await asyncio.gather(*(one(c) for c in clients))
        return {"seconds": time.perf_counter() - start, "errors": errors[:10], "failed": len(errors)}

    async def terminal_login(
        self, names: list[str], urls: list[str], concurrency: int = 20, max_delay: float = 5.0
    ) -> dict[str, Any]:
        """Log in a terminal client (chatclient.client.ChatClient) per name."""
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []
        start = time.perf_counter()

        async def one(c: TerminalClient, name: str) -> None:
            async with gate:
                try:
                    await c.connect()
                    reply = await c.login(name, PASSWORD)
                    if reply is not None:
                        errors.append(f"{name}: {reply}")
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{name}: {e!r}")

        clients = [TerminalClient(urls[i % len(urls)], max_delay) for i in range(len(names))]
        self.terminals.extend(clients)
        await asyncio.gather(*(one(c, n) for c, n in zip(clients, names, strict=True)))
        return {"seconds": time.perf_counter() - start, "errors": errors[:10], "failed": len(errors)}

    def counts(self) -> dict[str, Any]:
        everyone: Sequence[BenchClient | TerminalClient] = [*self.clients, *self.terminals]
        return {
            "connections": len(everyone),
            "open": sum(1 for c in self.clients if c.session is not None and not c.session.closed.is_set()),
            "presence_frames": sum(c.presence_frames for c in everyone),
            "messages": sum(c.messages for c in self.clients),
            "last_presence": max((c.last_presence for c in self.clients), default=0.0),
        }

    def reset(self) -> dict[str, Any]:
        """Start counting presence frames (and what terminals say) anew."""
        for c in self.clients:
            c.presence_frames, c.last_presence = 0, 0.0
        for t in self.terminals:
            t.presence_frames, t.lines, t.back_at = 0, [], 0.0
        return {}

    def connected(self) -> list[BenchClient]:
        """The clients logged in whose socket is open (not the sender)."""
        return [
            c
            for c in self.clients
            if c.name in self.logged_in
            and c.session is not None
            and not c.session.closed.is_set()
            and c.name != self.speaker
        ]

    async def wait_for(self, body: str, timeout: float) -> dict[str, Any]:
        """When the last of this worker's connected clients (the sender
        aside) had `body`: a socket that closed is counted apart, not
        waited for."""
        count = len(self.connected())
        if count <= 0:
            return {"at": None, "count": 0, "expected": 0}
        try:
            at: float | None = await asyncio.wait_for(self.tracker.wait_for(body, count), timeout)
        except TimeoutError:
            at = None
        return {"at": at, "count": self.tracker.counts.get(body, 0), "expected": count}

    async def speak(self, name: str, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The client `name` sends `op`: when it was sent."""
        client = next(c for c in self.clients if c.name == name)
        self.speaker = name
        client.tracker = Tracker()  # what it gets of its own is not a recipient's
        start = time.perf_counter()
        await client.s.ok(op, **fields)
        return {"start": start}

    async def back_online(self, since: float, timeout: float) -> dict[str, Any]:
        """Wait until every terminal client is online again (after `since`):
        when each was, and what any of them said that is not about
        reconnecting."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            now = time.perf_counter()
            for t in self.terminals:
                if t.online and not t.back_at and now > since:
                    t.back_at = now
            if all(t.back_at for t in self.terminals):
                break
            await asyncio.sleep(0.05)
        said = [line for t in self.terminals for at, line in t.lines if at >= since and not line.startswith(CALM)]
        return {
            "back": [t.back_at for t in self.terminals if t.back_at],
            "missing": sum(1 for t in self.terminals if not t.back_at),
            "presence_frames": sum(t.presence_frames for t in self.terminals),
            "said": said[:20],
            "said_count": len(said),
        }

    async def close(self) -> dict[str, Any]:
        await close_many(self.clients)
        await asyncio.gather(*(t.close() for t in self.terminals), return_exceptions=True)
        self.clients, self.terminals, self.tracker, self.speaker = [], [], Tracker(), None
        self.logged_in = set()
        return {}


COMMANDS = ("open_login", "terminal_login", "counts", "reset", "wait_for", "speak", "back_online", "close")


def proc_cpu(pid: int) -> float | None:
    """utime + stime seconds of a process (None when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuWatch:
    """Samples the CPU of some processes every `interval` while it runs:
    the busiest second of each, as a fraction of one core."""

    def __init__(self, pids: Sequence[int], interval: float = 1.0) -> None:
        self.pids, self.interval = list(pids), interval
        self.peak: dict[int, float] = {pid: 0.0 for pid in self.pids}
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CpuWatch:
        self.task = asyncio.get_running_loop().create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _sample(self) -> None:
        before = {pid: (time.perf_counter(), proc_cpu(pid)) for pid in self.pids}
        while True:
            await asyncio.sleep(self.interval)
            for pid in self.pids:
                now, cpu = time.perf_counter(), proc_cpu(pid)
                then, cpu0 = before[pid]
                if cpu is not None and cpu0 is not None and now > then:
                    self.peak[pid] = max(self.peak[pid], (cpu - cpu0) / (now - then))
                before[pid] = (now, cpu)

    @property
    def busiest(self) -> float:
        return round(max(self.peak.values(), default=0.0), 2)

    @property
    def client_bound(self) -> bool:
        return self.busiest > CLIENT_BOUND

    def figures(self) -> dict[str, Any]:
        return {"client_cpu_peak": self.busiest, "client_bound": self.client_bound}


class Crowd:
    """Connections over `processes` worker processes (0: in this process)."""

    def __init__(self, processes: int = 0) -> None:
        self.n = processes
        self.local: CrowdWorker | None = CrowdWorker() if processes <= 0 else None
        self.procs: list[asyncio.subprocess.Process] = []
        self.readers: list[asyncio.Task[None]] = []
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.ids = 0
        self.shares: list[list[str]] = []

    @property
    def size(self) -> int:
        return max(1, self.n)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs] if self.procs else [os.getpid()]

    async def __aenter__(self) -> Crowd:
        for _ in range(self.n):
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            env.pop("DJANGO_SETTINGS_MODULE", None)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.crowd", cwd=ROOT, env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**28,
            )  # fmt: skip
            self.procs.append(proc)
            self.readers.append(asyncio.get_running_loop().create_task(self._read(proc)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.all("close"), 120)
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self.readers:
            task.cancel()
        self.procs, self.readers = [], []

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            answer = json.loads(line)
            future = self.waiting.pop(answer["id"], None)
            if future is None or future.done():
                continue
            if "error" in answer:
                future.set_exception(RuntimeError(f"client process {proc.pid}: {answer['error']}"))
            else:
                future.set_result(answer["result"])
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(RuntimeError(f"client process {proc.pid} ended"))

    async def call(self, worker: int, command: str, **kwargs: Any) -> Any:
        assert command in COMMANDS
        if self.local is not None:
            return await _run(self.local, command, kwargs)
        proc = self.procs[worker]
        assert proc.stdin is not None
        if self.readers[worker].done():
            raise RuntimeError(f"client process {proc.pid} ended")
        self.ids += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[self.ids] = future
        proc.stdin.write(json.dumps({"id": self.ids, "command": command, "kwargs": kwargs}).encode() + b"\n")
        await proc.stdin.drain()
        return await future

    async def all(self, command: str, **kwargs: Any) -> list[Any]:
        return list(await asyncio.gather(*(self.call(i, command, **kwargs) for i in range(self.size))))

    def split(self, names: Sequence[str]) -> list[list[str]]:
        """Contiguous shares, one per worker."""
        k, extra = divmod(len(names), self.size)
        shares, at = [], 0
        for i in range(self.size):
            take = k + (1 if i < extra else 0)
            shares.append(list(names[at : at + take]))
            at += take
        return shares

    async def log_in(
        self, names: Sequence[str], urls: Sequence[str], *, terminal: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """Log in one client per name, spread over the workers; the slowest
        worker's seconds and every failure."""
        self.shares = self.split(names)
        command = "terminal_login" if terminal else "open_login"
        answers = await asyncio.gather(
            *(self.call(i, command, names=share, urls=list(urls), **kwargs) for i, share in enumerate(self.shares))
        )
        return {
            "seconds": max(a["seconds"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "errors": [e for a in answers for e in a["errors"]][:10],
        }

    def owner(self, name: str) -> int:
        return next(i for i, share in enumerate(self.shares) if name in share)

    async def counts(self) -> dict[str, Any]:
        answers = await self.all("counts")
        return {
            "connections": sum(a["connections"] for a in answers),
            "open": sum(a["open"] for a in answers),
            "presence_frames": sum(a["presence_frames"] for a in answers),
            "messages": sum(a["messages"] for a in answers),
            "last_presence": max(a["last_presence"] for a in answers),
        }

    async def quiet(self, *, seconds: float = 1.5, timeout: float = 60) -> None:
        """Until no presence frame arrived anywhere for `seconds`."""
        begun = time.perf_counter()
        while time.perf_counter() < begun + timeout:
            last = max((await self.counts())["last_presence"], begun)
            if time.perf_counter() - last >= seconds:
                return
            await asyncio.sleep(min(0.5, seconds / 3))


async def _run(worker: CrowdWorker, command: str, kwargs: dict[str, Any]) -> Any:
    method = getattr(worker, command)
    result = method(**kwargs)
    return await result if asyncio.iscoroutine(result) else result


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


async def serve() -> None:
    """A worker process: commands on stdin, answers on stdout (its own fd;
    anything printed goes to stderr)."""
    raise_open_files()
    loop = asyncio.get_running_loop()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    reader = asyncio.StreamReader(limit=2**28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = CrowdWorker()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(request: dict[str, Any]) -> None:
        try:
            answer = {"id": request["id"], "result": await _run(worker, request["command"], request["kwargs"])}
        except Exception:  # noqa: BLE001  (the coordinator raises it)
            answer = {"id": request["id"], "error": traceback.format_exc(limit=5)}
        out.write(json.dumps(answer).encode() + b"\n")

    while line := await reader.readline():
        task = loop.create_task(handle(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await worker.close()


if __name__ == "__main__":
    asyncio.run(serve())
