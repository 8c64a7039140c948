"""The chat protocol from the client's side, over any text-frame transport.

One implementation for the terminal client, the load generator and the
tests: requests get a `ref` and wait for the reply that echoes it; every
other frame is an event, handed to a callback or kept for `event()`.
Transports: a real WebSocket (``connect`` below, with the `websockets`
library) or Channels' in-process ``WebsocketCommunicator`` (the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import websockets


class Closed(Exception):
    """The connection closed (or died)."""

    def __init__(self, code: int | None = None, reason: str = ""):
        super().__init__(f"connection closed ({code})" if code else "connection lost")
        self.code = code
        self.reason = reason


class ReplyError(Exception):
    """An `error` reply where the caller wanted `ok` (see `Session.ok`)."""

    def __init__(self, reply: dict[str, Any]):
        super().__init__(f"{reply.get('code')}: {reply.get('message')}")
        self.reply = reply
        self.code = reply.get("code")


class Transport(Protocol):
    async def send(self, text: str) -> None: ...

    async def recv(self) -> str:
        """The next text frame; raises Closed when the connection ends."""
        ...

    async def close(self) -> None: ...


class WebSocketTransport:
    """A real socket, through the `websockets` library."""

    def __init__(self, ws: Any):
        self.ws = ws

    async def send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except websockets.ConnectionClosed as e:
            raise Closed(*_close_of(e)) from None

    async def recv(self) -> str:
        try:
            frame = await self.ws.recv()
        except websockets.ConnectionClosed as e:
            raise Closed(*_close_of(e)) from None
        return frame if isinstance(frame, str) else frame.decode("utf-8", "replace")

    async def close(self) -> None:
        await self.ws.close()


def _close_of(error: websockets.ConnectionClosed) -> tuple[int | None, str]:
    rcvd = error.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


# The largest frame the client takes: a page of 100 messages of 4,000
# characters of 4 UTF-8 bytes each, with their JSON, is above 1.6 MB.
MAX_FRAME = 8 * 2**20


async def connect(url: str, *, open_timeout: float = 15, **kwargs: Any) -> WebSocketTransport:
    ws = await websockets.connect(url, open_timeout=open_timeout, max_size=MAX_FRAME, **kwargs)
    return WebSocketTransport(ws)


EventHandler = Callable[[dict[str, Any]], Awaitable[None] | None]


class Session:
    """One connection speaking the protocol.

    With `on_event`, each event (and each reply nobody waits for) is handed
    to it as it arrives; without, they are kept for `event()` and
    `next_frame()`.
    """

    def __init__(self, transport: Transport, on_event: EventHandler | None = None, *, timeout: float = 15):
        self.transport = transport
        self.on_event = on_event
        self.timeout = timeout
        self.refs = itertools.count(1)
        self.waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.kept: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.reader: asyncio.Task[None] | None = None

    def start(self) -> Session:
        self.reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            while True:
                raw = await self.transport.recv()
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(frame, dict):
                    continue
                if frame.get("type") in ("ok", "error") and "ref" in frame:
                    future = self.waiting.pop(_hashable(frame["ref"]), None)
                    if future is not None:
                        if not future.done():
                            future.set_result(frame)
                        continue
                await self._event(frame)
        except Closed as e:
            self.close_code, self.close_reason = e.code, e.reason
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001  (whatever broke the transport, the session is over)
            self.close_code = None
        finally:
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(Closed(self.close_code, self.close_reason))
            self.waiting.clear()
            self.closed.set()
            self.arrived.set()

    async def _event(self, frame: dict[str, Any]) -> None:
        if self.on_event is not None:
            result = self.on_event(frame)
            if asyncio.iscoroutine(result):
                await result
        else:
            self.kept.append(frame)
            self.arrived.set()

    # --- Requests ------------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        if self.closed.is_set():
            raise Closed(self.close_code, self.close_reason)
        await self.transport.send(json.dumps(frame))

    async def request(self, type: str, *, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send a request; its reply (`ok` or `error`)."""
        ref = next(self.refs)
        future = asyncio.get_running_loop().create_future()
        self.waiting[ref] = future
        try:
            await self.send_frame({"type": type, "ref": ref, **fields})
            return await asyncio.wait_for(future, timeout or self.timeout)
        finally:
            self.waiting.pop(ref, None)
            if future.done() and not future.cancelled():
                # The connection ended while the frame was being sent: the
                # reader failed the future too. Taken here, so asyncio does
                # not print "Future exception was never retrieved" over the
                # person's terminal.
                future.exception()

    async def ok(self, type: str, **fields: Any) -> dict[str, Any]:
        """A request that must succeed: its `ok`, or ReplyError."""
        reply = await self.request(type, **fields)
        if reply["type"] != "ok":
            raise ReplyError(reply)
        return reply

    async def notify(self, type: str, **fields: Any) -> None:
        """Send without waiting for the reply (acks, typing)."""
        try:
            await self.send_frame({"type": type, **fields})
        except Closed:
            pass

    # --- Kept frames (when there is no on_event) -----------------------------------------

    async def next_frame(self, timeout: float | None = None) -> dict[str, Any]:
        """The oldest kept frame; Closed when none is left and the connection ended."""
        return await self.event(None, timeout=timeout)

    async def event(self, type: str | None, *, timeout: float | None = None, **match: Any) -> dict[str, Any]:
        """The first kept frame of this type (any, for None) and fields,
        waiting for it; the others stay kept."""

        def wanted(frame: dict[str, Any]) -> bool:
            return (type is None or frame.get("type") == type) and all(frame.get(k) == v for k, v in match.items())

        return await self.first(wanted, timeout=timeout, what=f"{type or 'frame'} {match or ''}")

    async def first(
        self, wanted: Callable[[dict[str, Any]], bool], *, timeout: float | None = None, what: str = "frame"
    ) -> dict[str, Any]:
        """The first kept frame for which `wanted` is true, waiting for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        while True:
            for i, frame in enumerate(self.kept):
                if wanted(frame):
                    return self.kept.pop(i)
            if self.closed.is_set():
                raise Closed(self.close_code, self.close_reason)
            self.arrived.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {what} arrived; kept: {self.kept[-5:]}")
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                pass

    # --- Closing -------------------------------------------------------------------------

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # already closed or broken: nothing to do
            await self.transport.close()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        self.closed.set()

    async def wait_closed(self, timeout: float | None = None) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout or self.timeout)
        return self.close_code


def _hashable(ref: Any) -> Any:
    return ref if isinstance(ref, str | int | float | bool | type(None)) else json.dumps(ref, sort_keys=True)


async def open_session(
    url: str, on_event: EventHandler | None = None, *, timeout: float = 15, **kwargs: Any
) -> Session:
    """A session over a new WebSocket to `url`."""
    return Session(await connect(url, open_timeout=timeout, **kwargs), on_event, timeout=timeout).start()
