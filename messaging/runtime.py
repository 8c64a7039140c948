"""The one owner of this server process's machinery.

A process has one hub (the connections it holds), one pump (heartbeat,
expiry, re-push), one writer (group commit), one batcher of token lookups,
one gate of logins, one pool of password hashes,
one pool of upload processes and the channel-layer breaker of ``events``. They belong to one event loop
and live as long as it: started by the ASGI lifespan where the server sends
one (uvicorn), else by the first connection (daphne sends none), and
stopped at shutdown. Nothing else creates them or decides when they run,
and ``reset`` gives tests a fresh set in one call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import multiprocessing
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from core import metrics
from core.errors import ServiceError

from . import events, services, upload_worker
from .hub import Hub
from .lookups import SessionLookups
from .pump import Pump
from .writer import Writer

log = logging.getLogger("chat")


class Closable(Protocol):
    async def restart(self) -> None:
        """Finish what it is doing, tell the client to reconnect, close."""


RATE_WINDOW_SECONDS = 5.0  # logins ended in the last this many seconds: the gate's pace
RETRY_AFTER_MAX = 120  # seconds a refused login is told to wait, at most


class LoginGate:
    """At most CHAT_LOGINS_IN_PROGRESS token and session logins (not
    password logins, bounded by the hashing pool) under way at once in this
    process; the others wait their turn, in order, unless the wait would
    be longer than CHAT_LOGIN_WAIT_SECONDS: those are refused at once,
    `unavailable` with a `retry_after`, having cost nothing (no token
    looked up, no hash, no claim).

    Without it, a restart's crowd of 10,000 token logins queued in the one
    process far past the clients' 15 s request timeout: every login was
    served late, many for clients that had already given up and tried
    again. Each refused client is given a time of its own to come back:
    the gate books them one after another at the pace it has been ending
    logins (over the last RATE_WINDOW_SECONDS), so the crowd returns about
    as fast as it can be served, not as a herd."""

    def __init__(self) -> None:
        self.in_progress = 0
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self.ended: collections.deque[float] = collections.deque()  # when logins ended, the last few seconds
        self.booked = 0.0  # (loop time) the last refused login was told to come back then

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Held for the whole of one login."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    def pace(self, now: float) -> float:
        """Logins ended per second lately, and never less than what the
        settings promise (every slot once within the wait): a gate that
        just filled has too few ends to go by."""
        while self.ended and self.ended[0] < now - RATE_WINDOW_SECONDS:
            self.ended.popleft()
        promised = max(1, settings.CHAT_LOGINS_IN_PROGRESS) / max(0.1, settings.CHAT_LOGIN_WAIT_SECONDS)
        if not self.ended:
            return promised
        return max(promised, len(self.ended) / max(1.0, now - self.ended[0]))

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        if self.in_progress < max(1, settings.CHAT_LOGINS_IN_PROGRESS) and not self.waiting:
            self.in_progress += 1
            return
        now, wait = loop.time(), settings.CHAT_LOGIN_WAIT_SECONDS
        pace = self.pace(now)
        if (len(self.waiting) + 1) / pace > wait:
            raise self._refuse(now, pace)
        turn = loop.create_future()
        self.waiting.append(turn)
        try:
            async with asyncio.timeout(wait):
                await turn
        except BaseException as e:
            if turn.done() and not turn.cancelled():
                self._release()  # handed a slot as it gave up: the next one takes it
            else:
                with contextlib.suppress(ValueError):
                    self.waiting.remove(turn)
            if isinstance(e, TimeoutError):
                raise self._refuse(loop.time(), self.pace(loop.time())) from None
            raise

    def _release(self) -> None:
        self.ended.append(asyncio.get_running_loop().time())
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes on: in_progress stays
                return
        self.in_progress -= 1

    def _refuse(self, now: float, pace: float) -> ServiceError:
        start = now + len(self.waiting) / pace  # when those waiting will have had their turn
        self.booked = min(max(self.booked, start) + 1 / pace, now + RETRY_AFTER_MAX)
        retry_after = max(1, math.ceil(self.booked - now))
        metrics.logins_refused.inc()
        return ServiceError(
            "unavailable", f"The server is busy; try again in {retry_after} s.", retry_after=retry_after
        )


class Runtime:
    def __init__(self) -> None:
        # Not reset with the rest: the processes belong to no event loop and
        # carry no state between jobs (each brings its settings), and
        # starting them costs a second. Stopped by `stop`.
        self.upload_pool: ProcessPoolExecutor | None = None
        self.reset()

    def reset(self) -> None:
        """A fresh state (for tests: each runs in an event loop of its own)."""
        self.hub = Hub()
        self.writer = Writer()
        self.pump = Pump(self.hub)
        self.hashing: asyncio.Semaphore | None = None
        self.logins = LoginGate()
        self.sessions = SessionLookups()
        self.uploading: asyncio.Semaphore | None = None
        self.started = False
        self.stopping = False  # a graceful stop is under way: new connections are turned away
        # The stop released this process's presence in one go: a closing
        # socket has no row of its own to release.
        self.presence_released = False
        self.connections: set[Closable] = set()  # every open socket, anonymous ones too
        self.starting: asyncio.Lock | None = None
        self.clear_dead_processes = True  # tests that make their own rows turn it off

    async def start(self) -> None:
        """Once a process, before its first login: clear what a crashed
        process on this host left behind, then run the pump."""
        if self.started:
            return
        if self.starting is None:
            self.starting = asyncio.Lock()
        async with self.starting:
            if self.started:
                return
            if self.clear_dead_processes:
                try:
                    await events.run_then_push(services.presence_clear_dead_processes)
                except Exception:
                    log.exception("could not clear the presence of dead processes")
            self.pump.start()
            # The upload processes start now, in the background: importing
            # Django takes them a second or more, which the first upload
            # should not wait for (unless CHAT_UPLOAD_PREWARM is off).
            if settings.CHAT_UPLOAD_PREWARM:
                self._upload_pool().submit(os.getpid)
            self.started = True

    def trouble(self) -> str | None:
        """Why this process should not get new clients, or None (for
        /readyz): it is stopping, or its pump died."""
        if self.stopping:
            return "the process is stopping"
        if self.started and (self.pump.task is None or self.pump.task.done()):
            return "the background pump has stopped"
        return None

    async def shutdown(self) -> None:
        """The graceful stop (SIGTERM): turn new connections away, let what
        each connection is doing finish, tell every client to reconnect
        (1012, service restart: another process, or this one restarted,
        takes them through their resume tokens), commit what the writer
        holds, and stop; all within CHAT_SHUTDOWN_SECONDS."""
        self.stopping = True
        log.info("stopping: %d connection(s) told to reconnect", len(self.connections))
        # No heartbeat from here on: it would find the released rows gone and
        # end each socket a second time ("your connection expired").
        await self.pump.stop()
        await self._release_presence()
        try:
            await asyncio.wait_for(self._close_connections(), settings.CHAT_SHUTDOWN_SECONDS)
        except TimeoutError:
            log.warning("stopping: connections still open after %s s", settings.CHAT_SHUTDOWN_SECONDS)
        await self._release_presence()  # a login that was in flight claimed after the first
        await self.stop()
        log.info("stopped")

    async def _release_presence(self) -> None:
        """Every user of this process goes offline in one transaction
        (services.presence_release_process), not one per closing socket:
        what a restart of thousands of connections spent its stop on."""
        try:
            await events.run_then_push(services.presence_release_process)
        except Exception:
            # Each socket releases its own row as it closes, as before.
            log.exception("stopping: could not release this process's presence")
        else:
            self.presence_released = True

    async def _close_connections(self) -> None:
        await asyncio.gather(*(c.restart() for c in list(self.connections)), return_exceptions=True)
        await self.writer.drain()

    async def stop(self) -> None:
        """At shutdown: stop the pump and the hub; the writer finishes what
        it holds (each request waits for its own commit anyway)."""
        await self.pump.stop()
        self.hub.stop()
        await self.writer.drain()
        self.uploads_stop()
        self.started = False

    async def upload_check(self, job: upload_worker.Job) -> upload_worker.Outcome:
        """Run an upload's check in one of CHAT_UPLOAD_PROCESSES processes,
        started at the first upload (the rest queue): parsing and Pillow
        hold a GIL, and it must not be the event loop's."""
        try:
            future = self._upload_pool().submit(upload_worker.check, job)
        except BrokenProcessPool:  # a worker died since the last job: a new pool
            self.uploads_stop()
            future = self._upload_pool().submit(upload_worker.check, job)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            # A worker died during this job (killed; out of memory, maybe
            # for this very file): this one fails, the next gets a new pool.
            self.uploads_stop()
            raise

    def _upload_pool(self) -> ProcessPoolExecutor:
        if self.upload_pool is None:
            self.upload_pool = ProcessPoolExecutor(
                max(1, settings.CHAT_UPLOAD_PROCESSES),
                # Not fork: this process has threads, and a loop of its own.
                mp_context=multiprocessing.get_context("spawn"),
                initializer=upload_worker.start,
                initargs=(settings.CHAT_UPLOAD_NICE, os.getpid()),
            )
        return self.upload_pool

    def uploads_stop(self) -> None:
        """Stop the upload processes (jobs under way finish; queued ones are dropped)."""
        if self.upload_pool is not None:
            self.upload_pool.shutdown(wait=False, cancel_futures=True)
            self.upload_pool = None

    async def hash_password(self, func: Callable[..., Any], **kwargs: Any) -> Any:
        """Run a service that hashes a password in the thread pool, at most
        CHAT_HASHING_CONCURRENCY at once in this process: each Argon2 hash
        takes ~100 MiB and a core for ~0.1 s, so a crowd of logins queues
        here instead of exhausting memory."""
        if self.hashing is None:
            self.hashing = asyncio.Semaphore(max(1, settings.CHAT_HASHING_CONCURRENCY))
        async with self.hashing:
            return await database_sync_to_async(func, thread_sensitive=False)(**kwargs)

    def upload_slot(self) -> asyncio.Semaphore:
        """Held by an upload while Django handles it: at most
        CHAT_UPLOAD_CONCURRENCY at once in this process."""
        if self.uploading is None:
            self.uploading = asyncio.Semaphore(max(1, settings.CHAT_UPLOAD_CONCURRENCY))
        return self.uploading


runtime = Runtime()
metrics.logged_in.set_function(lambda: len(runtime.hub.channel_names()))


def reset() -> None:
    """A fresh process state, the breaker included: what a test starts from."""
    runtime.reset()
    events.breaker.reset()
