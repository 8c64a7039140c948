"""The socket under a consumer: sending without blocking, and backpressure.

ASGI gives an application no way to know how much it has sent that the
client has not read, nor to stop the server reading frames it has not yet
asked for. A chat server needs both: a client that never reads must not
grow the server's memory, and one that floods must be slowed down. So:

- under daphne (the default server, and ``runserver``), the ASGI ``send``
  is ``partial(Server.handle_reply, protocol)``: through that protocol
  (autobahn on Twisted) we write frames directly, read the Twisted write
  buffer's size, pause and resume reading, and cap the size of an incoming
  message, however many fragments it comes in. Those internals are pinned
  (requirements.in) and checked by tests/test_adapters.py, so an upgrade
  that moves them fails the suite, not production;
- under any other server (uvicorn), frames go through a small outbox that
  a task drains with the ASGI ``send``; what is unsent is what waits there.
  Such servers stop reading a client whose frames the application has not
  taken yet. tests/test_uvicorn.py runs the project under uvicorn.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import heapq
import itertools
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.queues import SlimQueue

log = logging.getLogger("chat")

BODY_CHUNK = 64 * 1024  # what daphne hands on of a request body at a time

AsgiSend = Callable[[dict[str, Any]], Awaitable[None]]
_NO_OUTBOX: collections.deque[str] = collections.deque(maxlen=0)  # shared, empty, holds nothing


class Transport:
    """The generic case: an outbox in front of the ASGI send."""

    def __init__(self, send: AsgiSend):
        self._send = send
        # Made at the first write: under daphne nothing is ever queued here,
        # and an empty deque is 600 bytes per connection.
        self._outbox: collections.deque[str] = _NO_OUTBOX
        self._outbox_bytes = 0
        self._drain: asyncio.Task[None] | None = None
        self.open = True

    def write(self, text: str) -> None:
        """Queue one text frame; never blocks."""
        if not self.open:
            return
        if self._outbox is _NO_OUTBOX:
            self._outbox = collections.deque()
        self._outbox.append(text)
        self._outbox_bytes += len(text)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._drain_outbox())

    async def _drain_outbox(self) -> None:
        try:
            while self._outbox and self.open:
                text = self._outbox.popleft()
                self._outbox_bytes -= len(text)
                await self._send({"type": "websocket.send", "text": text})
        except Exception:  # the socket went away under us
            self.open = False
            self._outbox.clear()

    def unsent_bytes(self) -> int:
        return self._outbox_bytes

    def peer_gone(self) -> bool:
        """The socket is closed or closing: what the client sent before is
        not worth serving."""
        return not self.open

    def inbound_backlog(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def limit_message_size(self, size: int) -> None:
        pass

    def forget_handshake(self) -> None:
        """The socket is accepted: drop what the server keeps of the
        handshake's request and nothing reads again."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close with any code, 1008 included, after what is queued."""
        self._outbox.append("")  # drain what is queued first
        await self._drain_outbox_then(lambda: self._send({"type": "websocket.close", "code": code, "reason": reason}))
        self.open = False

    async def _drain_outbox_then(self, then: Callable[[], Awaitable[None]]) -> None:
        if self._drain is not None and not self._drain.done():
            await asyncio.gather(self._drain, return_exceptions=True)
        self._outbox.clear()
        try:
            await then()
        except Exception:
            pass

    def closed(self) -> None:
        self.open = False
        self._outbox.clear()
        self._outbox_bytes = 0


class DaphneTransport(Transport):
    """Direct writes to daphne's autobahn protocol, and its Twisted buffer."""

    def __init__(self, send: AsgiSend, server: Any, protocol: Any):
        super().__init__(send)
        self.server = server
        self.protocol = protocol
        self.paused = False

    def _usable(self) -> bool:
        details = self.server.connections.get(self.protocol)
        return (
            self.open
            and details is not None
            and not details.get("disconnected")
            and self.protocol.state == self.protocol.STATE_OPEN
        )

    def write(self, text: str) -> None:
        if not self._usable():
            self.open = False
            return
        try:
            self.protocol.sendMessage(text.encode("utf-8"), False)
        except Exception as e:
            self.open = False
            if type(e).__name__ != "Disconnected":  # not just the close racing us
                log.exception("could not send a frame; closing the connection")
                self.protocol.sendCloseFrame(code=1011, isReply=False)  # sendClose refuses 1011 from a server

    async def close(self, code: int, reason: str = "") -> None:
        # autobahn's sendClose refuses 1008 from a server (only 1000 and
        # 3000-4999); sendCloseFrame sends any code, after what is buffered,
        # and drops the connection if the client never answers.
        self.open = False
        if self.protocol.state == self.protocol.STATE_OPEN:
            self.protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)

    def peer_gone(self) -> bool:
        return not self._usable()

    def unsent_bytes(self) -> int:
        t = getattr(self.protocol, "transport", None)
        try:
            unsent: int = len(t.dataBuffer) - t.offset + t._tempDataLen  # type: ignore[union-attr]
            return unsent
        except AttributeError:  # not a plain TCP transport (TLS in daphne)
            return 0

    def inbound_backlog(self) -> int:
        queue = getattr(self.protocol, "application_queue", None)
        return queue.qsize() if queue is not None else 0

    def pause_reading(self) -> None:
        if not self.paused and self.protocol.transport is not None:
            self.paused = True
            self.protocol.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self.paused and self.protocol.transport is not None:
            self.paused = False
            self.protocol.transport.resumeProducing()

    def forget_handshake(self) -> None:
        # daphne keeps the request's headers as a list (which the scope
        # shares, through every middleware's copy), autobahn as a dict and
        # as the raw bytes: about 2 KB a socket, for its whole life, read
        # only while the handshake is answered (tests/test_adapters.py).
        # Emptied in place, so every holder lets them go.
        protocol = self.protocol
        headers = getattr(protocol, "clean_headers", None)
        if isinstance(headers, list):
            headers.clear()
        http_headers = getattr(protocol, "http_headers", None)
        if isinstance(http_headers, dict):
            http_headers.clear()
        if isinstance(getattr(protocol, "http_request_data", None), bytes):
            protocol.http_request_data = b""
        # The HTTP request that was upgraded (its headers, its Twisted
        # objects: another 2.5 KB) stays in its HTTPChannel's list, and the
        # channel stays the TCP transport's producer. daphne took the
        # transport from it (request.transport is None): nothing of it is
        # used again.
        channel = getattr(getattr(protocol, "transport", None), "producer", None)
        requests = getattr(channel, "requests", None)
        if isinstance(requests, list) and all(getattr(r, "transport", True) is None for r in requests):
            requests.clear()

    def limit_message_size(self, size: int) -> None:
        # Autobahn copies the factory's limits onto each protocol when it
        # connects; a larger incoming frame fails the connection (1009).
        # Its maxMessagePayloadSize would also limit what we send (a page
        # of history is larger), so the message limit is ours: at the start
        # of each fragment, autobahn has added the fragment's announced
        # length to the message's total, and we fail the connection before
        # reading a byte of it. Without that, a message sent in fragments
        # under the frame limit was buffered whole, whatever its size.
        # Without failByDrop=False autobahn drops the TCP connection instead
        # of closing with 1009, and the client cannot tell why.
        protocol = self.protocol
        protocol.maxFramePayloadSize = size
        # daphne's 1 MiB message limit (its websocket_max_message_size) also
        # refused to *send* a larger reply: a page of history of long
        # messages (100 of 4,000 "€" is 1.2 MB) never arrived. What comes in
        # is limited below; what goes out is ours, bounded by the ops.
        protocol.maxMessagePayloadSize = 0
        protocol.failByDrop = False
        frame_begin = protocol.onMessageFrameBegin

        def limited_frame_begin(length: int) -> None:
            frame_begin(length)
            total = protocol.message_data_total_length
            if total > size and not protocol.failedByMe:
                protocol.wasMaxMessagePayloadSizeExceeded = True
                protocol._max_message_size_exceeded(
                    total, size, f"received WebSocket message size {total} exceeds the limit of {size} octets"
                )

        protocol.onMessageFrameBegin = limited_frame_begin


def _unwrap(send: AsgiSend) -> AsgiSend:
    """The server's own send, under Channels' session middleware (which
    wraps it to set cookies on HTTP responses; WebSockets have none)."""
    for _ in range(8):
        inner = getattr(getattr(send, "__self__", None), "real_send", None)
        if inner is None:
            return send
        send = inner
    return send


def on_daphne_shutdown(graceful: Callable[[], Awaitable[None]]) -> bool:
    """Under daphne, run `graceful` when the server is asked to stop
    (SIGTERM, SIGINT), before it cancels every connection. daphne cancels
    them in a shutdown trigger of Twisted's (``Server.kill_all_applications``)
    with nothing before it to hook: this wraps that method. Returns whether
    daphne is the server (under uvicorn the ASGI lifespan's shutdown does it)."""
    server_module = sys.modules.get("daphne.server")
    if server_module is None:
        return False
    server_class = server_module.Server
    original = server_class.kill_all_applications
    if getattr(original, "graceful", None) is not None:
        original.graceful = graceful
        return True

    def kill_all_applications(self: Any) -> Any:
        from twisted.internet import defer

        async def first() -> None:
            try:
                await kill_all_applications.graceful()  # type: ignore[attr-defined]
            except Exception:
                log.exception("the graceful stop failed")

        # In a context of its own: this trigger runs in whatever context the
        # callback that fired it captured (a request's, perhaps one in the
        # middle of a thread-sensitive call, where asgiref refuses another:
        # "would deadlock"). The graceful stop belongs to no request.
        task = asyncio.get_event_loop().create_task(first(), context=contextvars.Context())
        stopped = defer.Deferred.fromFuture(task)
        stopped.addCallback(lambda _: original(self))
        return stopped

    kill_all_applications.graceful = graceful  # type: ignore[attr-defined]
    server_class.kill_all_applications = kill_all_applications
    return True


def transport_for(send: AsgiSend) -> Transport:
    """The best transport the server under this connection allows."""
    send = _unwrap(send)
    if isinstance(send, functools.partial) and send.args:
        server, protocol = getattr(send.func, "__self__", None), send.args[0]
        if (
            type(server).__module__ == "daphne.server"
            and hasattr(server, "connections")
            and hasattr(protocol, "sendMessage")
            and hasattr(protocol, "STATE_OPEN")
        ):
            return DaphneTransport(send, server, protocol)
    return Transport(send)


def twisted_writes_at_once() -> None:
    """Send what a TCP connection is given at once when nothing of it waits.

    Twisted's ``write`` only buffers: it registers the socket for writing
    (an ``epoll_ctl``), and a later turn of the loop sends the bytes and
    unregisters it (another ``epoll_ctl``). A broadcast to 10,000 online
    is 10,000 of those turns, run between the acks that the first
    recipients already send back, and each system call hands the GIL to
    the database thread: profiled, the writes cost three times the send
    itself, and the last socket got its frame long after the hub had
    "written" it. asyncio's own transports send at once and buffer only
    what the kernel does not take; this makes Twisted's TCP connections
    do the same. When anything is buffered (the client reads slowly), the
    connection is closing, TLS is on or a pull producer waits for
    ``doWrite`` to ask it for more, Twisted's own ``write`` runs, so
    the order of the bytes, the backpressure (``unsent_bytes``) and the
    detection of a lost connection are Twisted's as before. Checked by
    tests/test_adapters.py. Idempotent.
    """
    from twisted.internet import tcp

    connection: Any = tcp.Connection  # its methods are replaced: Any to mypy
    if getattr(connection, "_chat_writes_at_once", False):
        return
    original = connection.write

    def write(self: Any, data: bytes) -> None:
        if (
            type(data) is bytes
            and data
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
            and (self.producer is None or self.streamingProducer)
        ):
            try:
                sent = self.socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # Twisted's write meets the error again, and loses the connection
            if sent >= len(data):
                return
            data = data[sent:]
        original(self, data)

    connection.write = write
    connection._chat_original_write = original
    connection._chat_writes_at_once = True


def daphne_leaves_bodies_unparsed() -> None:
    """Stop Twisted parsing request bodies that daphne hands on unparsed.

    Twisted's Request reads a whole multipart/form-data POST into memory
    and parses it into ``request.args`` (several copies: about eleven times
    the body, 120 MB for a 10 MiB upload) before daphne passes the body,
    untouched, to Django, which parses it again from a temporary file.
    Daphne never reads ``args``; Twisted's own switch,
    ``parsePOSTFormSubmission``, turns the parsing off. Checked by
    tests/test_adapters.py. Idempotent; nothing happens without daphne.
    """
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # pragma: no cover (daphne is a dependency)
        return
    if getattr(WebRequest, "_chat_unparsed", False):
        return
    original = WebRequest.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        original(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    WebRequest._chat_unparsed = True


class SpooledBodyQueue(asyncio.Queue[dict[str, Any]]):
    """An HTTP request's input queue that keeps body chunks on disk.

    daphne reads a request's whole body from Twisted's temporary file and
    puts it in the application's queue at once, before the application
    reads any of it: a 10 MiB upload would sit in memory. Here each chunk
    put goes to a spooled file (on disk past 256 KiB) and is read back when
    the application asks for it, so what is in memory is one chunk.
    """

    def __init__(self) -> None:
        super().__init__()
        self._spool = tempfile.SpooledTemporaryFile(max_size=256 * 1024)  # noqa: SIM115 (closed at the end)
        self._written = 0
        self._read = 0

    def put_nowait(self, item: Any) -> None:
        if isinstance(item, dict) and item.get("type") == "http.request" and item.get("body"):
            body = item["body"]
            self._spool.seek(self._written)
            self._spool.write(body)
            self._written += len(body)
            item = {**item, "body": b"", "_spooled": len(body)}
        super().put_nowait(item)

    async def get(self) -> Any:
        item = await super().get()
        if isinstance(item, dict) and "_spooled" in item:
            self._spool.seek(self._read)
            body = self._spool.read(item["_spooled"])
            self._read += len(body)
            item = {k: v for k, v in item.items() if k != "_spooled"}
            item["body"] = body
            if not item.get("more_body"):
                self._spool.close()
        return item


def daphne_spools_bodies() -> None:
    """Give daphne's HTTP applications a SpooledBodyQueue for input, and its
    WebSockets a SlimQueue: the same create_application as daphne's
    (checked by tests/test_adapters.py), with those queues."""
    try:
        from daphne.server import Server
    except ImportError:  # pragma: no cover
        return
    if getattr(Server, "_chat_spooled", False):
        return
    original = Server.create_application

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") not in ("http", "websocket"):
            return original(self, protocol, scope)
        assert "application_instance" not in self.connections[protocol]
        input_queue: SpooledBodyQueue | SlimQueue[dict[str, Any]]
        if scope["type"] == "http":
            # daphne hands a body on in chunks of request_buffer_size, 8 KiB by
            # default (its command line cannot change it): 128 puts, reads and
            # writes on the event loop per MiB, which fifty uploads at once made
            # a second of the chat's latency. One chunk is in memory at a time.
            self.request_buffer_size = max(self.request_buffer_size, BODY_CHUNK)
            input_queue = SpooledBodyQueue()
        else:
            # A WebSocket keeps its queue for its whole life: a SlimQueue is
            # 2 KB less than daphne's asyncio.Queue (core/queues.py).
            input_queue = SlimQueue()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=functools.partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(application_instance)
        return input_queue

    Server._chat_original_create_application = original
    Server.create_application = create_application
    Server._chat_spooled = True


def daphne_checks_only_what_is_due() -> None:
    """Run daphne's two timers on the connections where they can find
    something, not on every connection each time.

    daphne walks every connection every second (``application_checker``:
    reap a finished application, cancel one that outlives its closed
    client) and every 2 s (``timeout_checker``: each protocol's
    ``check_timeouts``, which sends a WebSocket's ping after
    ``--ping-interval`` seconds of silence). At 10,000 idle connections
    the two walks were a third of an idle process's CPU (docs/performance.md,
    item 3). Here:

    - ``application_checker`` runs daphne's own code, handed only the
      connections whose application finished or whose client went (each
      marked when that happens) instead of all of them;
    - ``timeout_checker`` keeps each connection's next deadline in a heap:
      an open WebSocket's is its ping (``last_ping + ping_interval``; a
      message from the client moves it later, which is seen when it comes
      up) or its ``--websocket_timeout``; an HTTP connection, or a
      WebSocket still opening or closing, is checked every round as
      before. Each check is daphne's ``check_timeouts``.

    What they rely on of daphne is checked by tests/test_adapters.py.
    Idempotent; nothing changes without daphne."""
    try:
        import daphne.server as server_module
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover (daphne is a dependency)
        return
    server_class: Any = server_module.Server
    if getattr(server_class, "_chat_checks_due", False):
        return
    # Its create_application is a copy of daphne's: put it first, then wrap it.
    daphne_spools_bodies()
    check_applications = server_class.application_checker
    connected, disconnected = server_class.protocol_connected, server_class.protocol_disconnected
    create = server_class.create_application
    order = itertools.count()  # ties in the heap never compare protocols

    def marked(server: Any) -> set[Any]:
        found: set[Any] | None = getattr(server, "_chat_marked", None)
        if found is None:
            found = server._chat_marked = set()
        return found

    def deadlines(server: Any) -> list[tuple[float, int, Any]]:
        found: list[tuple[float, int, Any]] | None = getattr(server, "_chat_deadlines", None)
        if found is None:
            found = server._chat_deadlines = []
        return found

    def protocol_connected(self: Any, protocol: Any) -> None:
        connected(self, protocol)
        heapq.heappush(deadlines(self), (0.0, next(order), protocol))  # at the next round

    def protocol_disconnected(self: Any, protocol: Any) -> None:
        disconnected(self, protocol)
        marked(self).add(protocol)

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        queue = create(self, protocol, scope)
        instance = self.connections.get(protocol, {}).get("application_instance")
        if instance is not None:
            instance.add_done_callback(lambda _: marked(self).add(protocol))
        return queue

    def application_checker(self: Any) -> None:
        everyone, due = self.connections, marked(self)
        batch = {protocol: everyone[protocol] for protocol in due if protocol in everyone}
        due.clear()
        before = list(batch)
        self.connections = batch
        try:
            check_applications(self)  # daphne's own, over these; it schedules the next round
        except Exception:
            # daphne's own timer would stop here for good: look at these
            # again at the next round instead.
            log.exception("daphne's application check failed")
            due.update(p for p in before if p in batch)
            server_module.reactor.callLater(1, self.application_checker)
        finally:
            self.connections = everyone
        for protocol in before:
            if protocol not in batch:  # daphne let it go: among all connections too
                everyone.pop(protocol, None)
            elif "disconnected" in batch[protocol]:  # gone, its application still running
                due.add(protocol)

    def next_check(self: Any, protocol: Any, now: float) -> float:
        """When check_timeouts can next find something: `now` means at the
        next round."""
        if not isinstance(protocol, WebSocketProtocol) or protocol.state != protocol.STATE_OPEN:
            return now
        when = float(protocol.last_ping + self.ping_interval)
        if self.websocket_timeout >= 0:
            when = min(when, float(protocol.socket_opened + self.websocket_timeout))
        return when

    def timeout_checker(self: Any) -> None:
        now, heap, checked = time.time(), deadlines(self), []
        try:
            while heap and heap[0][0] <= now:
                _, _, protocol = heapq.heappop(heap)
                if protocol in self.connections:
                    checked.append(protocol)
                    protocol.check_timeouts()
        except Exception:  # daphne's own timer would stop for good; this goes on
            log.exception("daphne's timeout check failed")
        finally:
            for protocol in checked:
                if protocol in self.connections:
                    heapq.heappush(heap, (next_check(self, protocol, now), next(order), protocol))
            server_module.reactor.callLater(2, self.timeout_checker)

    server_class._chat_original_application_checker = check_applications
    server_class._chat_original_timeout_checker = server_class.timeout_checker
    server_class._chat_original_protocol_connected = connected
    server_class._chat_original_protocol_disconnected = disconnected
    server_class.application_checker = application_checker
    server_class.timeout_checker = timeout_checker
    server_class.protocol_connected = protocol_connected
    server_class.protocol_disconnected = protocol_disconnected
    server_class.create_application = create_application
    server_class._chat_checks_due = True
