"""Load-generator clients: protocol sessions that time what they receive.

Each client is a ``chatclient.protocol.Session`` (the project's own protocol
client) whose events go to ``BenchClient.on_event``: a ``message`` is timed
into the shared ``Tracker`` and acked (acks of one burst of frames go out
together, as ``ack`` allows), presence frames are counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from chatclient.protocol import Session, open_session

PASSWORD = "bench-password-42"
PRESENCE_TYPES = ("presence", "presence_batch")


class Tracker:
    """When each body was sent and when its recipients got it (perf_counter)."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.received: dict[str, float] = {}  # first arrival
        self.last: dict[str, float] = {}  # latest arrival
        self.counts: dict[str, int] = {}
        self.waiters: dict[str, tuple[int, asyncio.Future[float]]] = {}

    def will_send(self, body: str) -> None:
        self.sent[body] = time.perf_counter()

    def arrived(self, body: str, now: float) -> None:
        count = self.counts[body] = self.counts.get(body, 0) + 1
        self.received.setdefault(body, now)
        self.last[body] = now
        waiter = self.waiters.get(body)
        if waiter is not None and count >= waiter[0]:
            del self.waiters[body]
            if not waiter[1].done():
                waiter[1].set_result(now)

    def wait_for(self, body: str, count: int = 1) -> asyncio.Future[float]:
        """Resolves (to the arrival time) once `count` recipients have `body`."""
        future = asyncio.get_running_loop().create_future()
        if self.counts.get(body, 0) >= count:
            future.set_result(self.last[body])
        else:
            self.waiters[body] = (count, future)
        return future

    def latencies(self, bodies: Sequence[str]) -> list[float]:
        """Seconds from send to first receipt, for those of `bodies` that arrived."""
        return [self.received[b] - self.sent[b] for b in bodies if b in self.received and b in self.sent]


class BenchClient:
    """One WebSocket connection of the load generator."""

    def __init__(self, name: str, url: str, tracker: Tracker):
        self.name, self.url, self.tracker = name, url, tracker
        self.session: Session | None = None
        self.messages = 0
        self.stored = 0
        self.presence_frames = 0
        self.last_presence = 0.0
        self.first_message = 0.0
        self.rooms: set[Any] = set()  # ids of the rooms a `room` event said we are in
        self._acks: list[int] = []
        self._flush_scheduled = False

    async def open(self) -> None:
        # No pings of its own, as the page's socket (a browser's) sends none:
        # the server pings every 15 s. With the `websockets` default (every
        # 20 s, closing after 20 s without a pong) ten thousand clients cost
        # the server as much again, and a client process busy with a login
        # storm closed hundreds of them itself.
        self.session = await open_session(self.url, self.on_event, timeout=60, ping_interval=None)

    @property
    def s(self) -> Session:
        assert self.session is not None, "not open"
        return self.session

    async def login(self, *, presence_batch: bool = True, **extra: Any) -> dict[str, Any]:
        fields = {"username": self.name, "password": PASSWORD, "presence_batch": presence_batch, **extra}
        return await self.s.ok("login", **fields)

    def on_event(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            now = time.perf_counter()
            self.messages += 1
            if not self.first_message:
                self.first_message = now
            if frame.get("stored"):
                self.stored += 1
            self.tracker.arrived(str(frame.get("body")), now)
            self._acks.append(frame["id"])
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        elif kind == "room":
            self.rooms.add(frame["room"]["id"])
        elif kind in PRESENCE_TYPES:
            self.presence_frames += 1
            self.last_presence = time.perf_counter()

    def _flush(self) -> None:
        self._flush_scheduled = False
        ids, self._acks = self._acks[:1000], self._acks[1000:]
        if self._acks:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if ids and self.session is not None:
            asyncio.get_running_loop().create_task(self.session.notify("ack", ids=ids))

    async def send(self, to: str, body: str) -> dict[str, Any]:
        self.tracker.will_send(body)
        return await self.s.ok("send", to=to, body=body)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def open_many(
    names: Sequence[str], urls: Sequence[str], tracker: Tracker, *, concurrency: int = 50
) -> list[BenchClient]:
    """Open a connection per name, spread round-robin over `urls`."""
    clients = [BenchClient(n, urls[i % len(urls)], tracker) for i, n in enumerate(names)]
    gate = asyncio.Semaphore(concurrency)

    async def one(c: BenchClient) -> None:
        async with gate:
            await c.open()

    await asyncio.gather(*(one(c) for c in clients))
    return clients


async def login_many(clients: Sequence[BenchClient], *, concurrency: int = 20, presence_batch: bool = True) -> float:
    """Log them in, `concurrency` at a time; seconds it took."""
    gate = asyncio.Semaphore(concurrency)
    start = time.perf_counter()

    async def one(c: BenchClient) -> None:
        async with gate:
            await c.login(presence_batch=presence_batch)

    await asyncio.gather(*(one(c) for c in clients))
    return time.perf_counter() - start


async def close_many(clients: Sequence[BenchClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def quiet(clients: Sequence[BenchClient], *, seconds: float = 1.5, timeout: float = 60) -> None:
    """Wait until no presence frame has arrived for `seconds` (or timeout)."""
    begun = time.perf_counter()
    deadline = begun + timeout
    while time.perf_counter() < deadline:
        last = max((c.last_presence for c in clients), default=begun)
        last = max(last, begun)
        if time.perf_counter() - last >= seconds:
            return
        await asyncio.sleep(0.1)
