"""The private internals our two adapters rely on, checked where they live.

messaging/transport.py reaches into daphne, Twisted and autobahn;
chatsite/layers.py into channels and channels_redis. Those packages are
pinned in requirements.in to the versions the adapters were written for.
An upgrade that moves anything below fails here at once, naming what
moved, rather than somewhere in production (a server that no longer sees
what a client has not read, a layer that no longer rides out Redis).
"""

import asyncio
import contextlib
import inspect
from importlib.metadata import version

import pytest

# The versions the adapters were written for (requirements.in pins them).
WRITTEN_FOR = {
    "daphne": "4.2.3",
    "twisted": "26.10.0",
    "autobahn": "26.10.2",
    "channels": "4.3.2",
    "channels-redis": "4.3.0",
}


@pytest.mark.parametrize("package", sorted(WRITTEN_FOR))
def test_the_pinned_version_is_the_one_the_adapter_was_written_for(package):
    assert version(package) == WRITTEN_FOR[package], (
        f"{package} moved: check what messaging/transport.py and chatsite/layers.py rely on, "
        "run this file, then update WRITTEN_FOR"
    )


# --- messaging/transport.py: daphne, autobahn, Twisted ---------------------------------


def test_daphne_hands_the_application_a_partial_of_handle_reply():
    """transport_for() recognises daphne by its send: partial(Server.handle_reply, protocol)."""
    from daphne.server import Server

    # daphne's own, whether or not daphne_spools_bodies() replaced it yet.
    source = inspect.getsource(getattr(Server, "_chat_original_create_application", Server.create_application))
    assert "send=partial(self.handle_reply, protocol)" in source
    assert list(inspect.signature(Server.handle_reply).parameters) == ["self", "protocol", "message"]
    assert "self.connections = {}" in inspect.getsource(Server)


def test_daphne_keeps_per_connection_details_with_a_disconnected_mark():
    from daphne.server import Server

    # daphne's own, whether or not daphne_checks_only_what_is_due() wrapped it yet.
    source = inspect.getsource(getattr(Server, "_chat_original_protocol_disconnected", Server.protocol_disconnected))
    assert 'self.connections[protocol]["disconnected"]' in source


def test_twisted_parses_no_upload_for_daphne():
    """daphne_leaves_bodies_unparsed() passes Twisted's own switch to every
    request daphne makes, which Twisted reads before parsing a form."""
    from daphne.http_protocol import WebRequest
    from twisted.web import http

    from messaging.transport import daphne_leaves_bodies_unparsed

    assert "parsePOSTFormSubmission" in inspect.signature(http.Request.__init__).parameters
    assert "self._parsePOSTFormSubmission" in inspect.getsource(http.Request.requestReceived)
    assert "http.Request.__init__(self, *args, **kwargs)" in inspect.getsource(WebRequest.__init__)
    daphne_leaves_bodies_unparsed()
    daphne_leaves_bodies_unparsed()
    seen = {}
    original = http.Request.__init__
    try:
        http.Request.__init__ = lambda self, *a, **k: seen.update(k) or original(self, *a, **k)
        with contextlib.suppress(Exception):
            WebRequest(None)
    finally:
        http.Request.__init__ = original
    assert seen.get("parsePOSTFormSubmission") is False


def test_daphne_creates_applications_as_our_copy_does():
    """daphne_spools_bodies() replaces Server.create_application with a
    copy that differs only in the queue of HTTP scopes."""
    from daphne.server import Server

    from messaging import transport

    transport.daphne_spools_bodies()
    source = inspect.getsource(Server._chat_original_create_application)
    for line in (
        "input_queue = asyncio.Queue()",
        'scope.setdefault("asgi", {"version": "3.0"})',
        "receive=input_queue.get,",
        "send=partial(self.handle_reply, protocol),",
        "if protocol not in self.connections:",
        'self.connections[protocol]["application_instance"] = asyncio.ensure_future(',
        "return input_queue",
    ):
        assert line in source, line


class _Reactor:
    """What a Twisted FileDescriptor asks of its reactor when it writes."""

    def __init__(self):
        self.writers = []

    def addWriter(self, writer):
        if writer not in self.writers:
            self.writers.append(writer)

    def removeWriter(self, writer):
        if writer in self.writers:
            self.writers.remove(writer)


@pytest.fixture
def twisted_pair():
    """A Twisted TCP connection (with twisted_writes_at_once) on one end of
    a socket pair, the other end, and the reactor it registers with."""
    import socket

    from twisted.internet import tcp

    from messaging.transport import twisted_writes_at_once

    twisted_writes_at_once()
    twisted_writes_at_once()  # idempotent
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    reactor = _Reactor()
    connection = tcp.Connection(ours, None, reactor=reactor)
    connection.connected = True
    yield connection, theirs, reactor
    ours.close()
    theirs.close()


def test_twisted_writes_at_once_and_buffers_only_what_the_kernel_does_not_take(twisted_pair):
    """twisted_writes_at_once(): a write goes to the socket at once, with no
    turn of the loop and no registering for writing; what the kernel does
    not take (a client that does not read) waits in Twisted's own buffer,
    where unsent_bytes() sees it, and the bytes arrive whole and in order."""
    connection, theirs, reactor = twisted_pair
    connection.write(b"hello")
    assert theirs.recv(100) == b"hello"
    assert reactor.writers == []
    big = bytes(range(256)) * 40_000  # 10 MB: more than the socket's buffers
    connection.write(big)
    connection.write(b"tail")
    unsent = len(connection.dataBuffer) - connection.offset + connection._tempDataLen
    assert 0 < unsent < len(big) + 4
    assert reactor.writers == [connection]
    got = bytearray()
    while len(got) < len(big) + 4:
        with contextlib.suppress(BlockingIOError):
            got += theirs.recv(1 << 20)
        connection.doWrite()
    assert bytes(got) == big + b"tail"
    assert reactor.writers == []


def test_twisted_writes_for_a_pull_producer_as_it_always_did(twisted_pair):
    """A pull producer is asked for more data by doWrite once the buffer
    is sent: its writes take Twisted's own path, or it would stall."""
    connection, theirs, reactor = twisted_pair

    class Pull:
        asked = 0

        def resumeProducing(self):
            self.asked += 1

        def stopProducing(self):
            pass

    producer = Pull()
    connection.registerProducer(producer, False)
    connection.write(b"chunk")
    assert reactor.writers == [connection]
    connection.doWrite()
    assert theirs.recv(100) == b"chunk"
    assert producer.asked == 2  # at registering, then once the chunk was sent


def test_twisted_buffers_writes_where_twisted_writes_at_once_looks():
    """What twisted_writes_at_once() reads to know nothing waits, and the
    class daphne's connections are."""
    from daphne.server import Server
    from twisted.internet import abstract, tcp

    write = inspect.getsource(abstract.FileDescriptor.write)
    assert "self._tempDataBuffer.append(data)" in write and "self.startWriting()" in write
    do_write = inspect.getsource(abstract.FileDescriptor.doWrite)
    assert "len(self.dataBuffer) - self.offset" in do_write
    assert "FileDescriptor.write(self, bytes)" in inspect.getsource(tcp.Connection._chat_original_write)
    assert issubclass(tcp.Server, tcp.Connection)
    assert "serverFromString(reactor, " in inspect.getsource(Server.run)  # TCP endpoints: tcp.Server


async def test_a_spooled_body_queue_gives_back_what_was_put():
    from messaging.transport import SpooledBodyQueue

    queue = SpooledBodyQueue()
    chunks = [bytes([i]) * 100_000 for i in range(5)]
    for i, chunk in enumerate(chunks):
        queue.put_nowait({"type": "http.request", "body": chunk, "more_body": i < 4})
    queue.put_nowait({"type": "http.disconnect"})
    for i, chunk in enumerate(chunks):
        assert await queue.get() == {"type": "http.request", "body": chunk, "more_body": i < 4}
    assert await queue.get() == {"type": "http.disconnect"}


def test_daphne_queues_incoming_frames_in_application_queue():
    """inbound_backlog() reads the queue daphne puts a socket's frames in."""
    from daphne.ws_protocol import WebSocketProtocol

    source = inspect.getsource(WebSocketProtocol)
    assert "self.application_queue = " in source
    assert "self.application_queue.put_nowait(" in source


def test_autobahn_protocol_has_what_the_transport_calls():
    from autobahn.websocket.protocol import WebSocketProtocol

    assert WebSocketProtocol.STATE_OPEN == 3
    params = inspect.signature(WebSocketProtocol.sendCloseFrame).parameters
    assert {"code", "reasonUtf8", "isReply"} <= set(params)
    assert list(inspect.signature(WebSocketProtocol.sendMessage).parameters)[:3] == ["self", "payload", "isBinary"]
    # The limits copied from the factory onto each protocol, and how a
    # failure closes (failByDrop False: a close frame with 1009, not a drop).
    options = inspect.getsource(WebSocketProtocol)
    for name in ("maxFramePayloadSize", "maxMessagePayloadSize", "failByDrop"):
        assert name in options, name


def test_autobahn_adds_up_a_message_as_each_fragment_begins():
    """limit_message_size() wraps the protocol's onMessageFrameBegin: autobahn
    must call it through the instance before reading the fragment, with the
    message's running total already counting it, and fail the connection
    through _max_message_size_exceeded (1009)."""
    from autobahn.twisted.websocket import WebSocketServerProtocol
    from autobahn.websocket.protocol import WebSocketProtocol

    assert "self.onMessageFrameBegin(length)" in inspect.getsource(WebSocketServerProtocol._onMessageFrameBegin)
    begin = inspect.getsource(WebSocketProtocol.onMessageFrameBegin)
    assert "self.message_data_total_length += length" in begin
    assert "self.message_data_total_length = 0" in inspect.getsource(WebSocketProtocol.onMessageBegin)
    assert "if not self.failedByMe:" in inspect.getsource(WebSocketProtocol.onMessageFrameData)
    params = inspect.signature(WebSocketProtocol._max_message_size_exceeded).parameters
    assert list(params) == ["self", "msg_size", "max_msg_size", "reason"]
    assert "wasMaxMessagePayloadSizeExceeded" in inspect.getsource(WebSocketProtocol)


def test_twisted_keeps_its_write_buffer_where_unsent_bytes_reads_it():
    from twisted.internet.abstract import FileDescriptor

    assert FileDescriptor.dataBuffer == b""
    assert FileDescriptor.offset == 0
    assert "_tempDataLen" in inspect.getsource(FileDescriptor)
    for name in ("pauseProducing", "resumeProducing"):
        assert callable(getattr(FileDescriptor, name)), name


def test_daphne_and_autobahn_read_the_handshake_headers_only_during_the_handshake():
    """DaphneTransport.forget_handshake() empties them once the socket is
    accepted: daphne reads its list in onConnect only, autobahn its dict
    and raw request in processHandshake only."""
    from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
    from autobahn.websocket.protocol import WebSocketServerProtocol
    from daphne.ws_protocol import WebSocketProtocol

    source, on_connect = inspect.getsource(WebSocketProtocol), inspect.getsource(WebSocketProtocol.onConnect)
    assert source.count("clean_headers") == on_connect.count("clean_headers") > 0
    assert '"headers": self.clean_headers' in on_connect
    server, handshake = (
        inspect.getsource(WebSocketServerProtocol),
        inspect.getsource(WebSocketServerProtocol.processHandshake),
    )
    for name in ("self.http_headers", "self.http_request_data"):
        assert server.count(name) == handshake.count(name) > 0, name
        assert name not in inspect.getsource(AutobahnProtocol), name


def test_the_upgraded_request_is_left_in_its_channel_with_no_transport():
    """forget_handshake() also empties the upgraded request's HTTPChannel
    (the TCP transport's producer) of requests daphne took the transport
    from."""
    from daphne.http_protocol import WebRequest
    from twisted.web.http import HTTPChannel

    assert "transport, self.transport = self.transport, None" in inspect.getsource(WebRequest.process)
    assert "transport.protocol = protocol" in inspect.getsource(WebRequest.process)
    assert "self._networkProducer.registerProducer(self, True)" in inspect.getsource(HTTPChannel.connectionMade)
    assert "self.requests = []" in inspect.getsource(HTTPChannel)


# --- chatsite/layers.py: channels, channels_redis --------------------------------------


def test_channels_in_memory_layer_has_what_ours_overrides():
    from channels.layers import InMemoryChannelLayer

    layer = InMemoryChannelLayer()
    assert isinstance(layer.channels, dict) and isinstance(layer.groups, dict)
    assert callable(layer._clean_expired)
    assert callable(layer.get_capacity)
    assert layer.expiry > 0


def test_channels_redis_pubsub_internals_our_layer_overrides():
    from channels_redis import pubsub, utils

    assert callable(utils._wrap_close) and callable(utils.decode_hosts)
    assert inspect.iscoroutinefunction(pubsub.RedisPubSubLoopLayer._subscribe_to_channel)
    assert "self._shards" in inspect.getsource(pubsub.RedisPubSubLoopLayer.__init__)
    assert inspect.iscoroutinefunction(pubsub.RedisSingleShardConnection._do_receiving)
    assert callable(pubsub.RedisSingleShardConnection._receive_message)
    assert "self._pubsub" in inspect.getsource(pubsub.RedisSingleShardConnection.__init__)
    assert "self._layers" in inspect.getsource(pubsub.RedisPubSubChannelLayer.__init__)
    assert "self._args" in inspect.getsource(pubsub.RedisPubSubChannelLayer.__init__)
    params = inspect.signature(pubsub.RedisPubSubLoopLayer.__init__).parameters
    assert "channel_layer" in params


def test_channels_redis_core_layer_receive_is_what_ours_wraps():
    from channels_redis.core import RedisChannelLayer

    assert inspect.iscoroutinefunction(RedisChannelLayer.receive)
    assert list(inspect.signature(RedisChannelLayer.receive).parameters) == ["self", "channel"]


def test_daphne_cancels_its_connections_in_kill_all_applications():
    """on_daphne_shutdown() wraps it to stop gracefully first."""
    from daphne.server import Server

    assert list(inspect.signature(Server.kill_all_applications).parameters) == ["self"]
    assert 'reactor.addSystemEventTrigger("before", "shutdown", self.kill_all_applications)' in inspect.getsource(
        Server.run
    )


def test_a_server_process_collects_young_objects_less_often(tmp_path):
    """chatsite.asgi, what every server process loads, sets the youngest
    generation's threshold from CHAT_GC_YOUNG_OBJECTS (Python's 700 made
    full collections frequent under load: docs/performance.md, item 5)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "CHAT_GC_YOUNG_OBJECTS": "12345", "CHAT_VAR_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    code = "import gc, chatsite.asgi; print(list(gc.get_threshold()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[12345, 10, 10]"


@pytest.mark.django_db(transaction=True)
async def test_the_graceful_stop_runs_outside_the_context_that_fired_it():
    """daphne's shutdown trigger runs in whatever context its callback
    captured: one in the middle of a thread-sensitive call made asgiref
    refuse the stop's own database work ("would deadlock", seen in CI)."""
    from asgiref.sync import SyncToAsync
    from channels.db import database_sync_to_async
    from daphne.server import Server

    from messaging import transport

    done = []

    async def graceful():
        done.append(await database_sync_to_async(lambda: "released")())

    wrapped = Server.kill_all_applications
    previous = getattr(wrapped, "graceful", None)
    try:
        assert transport.on_daphne_shutdown(graceful)
        fake = type("FakeServer", (), {"connections": {}})()
        token = SyncToAsync.deadlock_context.set(True)  # as inside a thread-sensitive call
        try:
            stopped = Server.kill_all_applications(fake)
        finally:
            SyncToAsync.deadlock_context.reset(token)
        for _ in range(100):
            if done:
                break
            await asyncio.sleep(0.02)
        assert done == ["released"]
        stopped.addErrback(lambda _: None)
    finally:
        if previous is not None:
            Server.kill_all_applications.graceful = previous


# --- daphne's timers, on what is due (transport.daphne_checks_only_what_is_due) -----------


def test_daphne_walks_every_connection_in_its_two_timers_as_ours_expects():
    """Ours hand daphne's application_checker a smaller `connections` and
    call each protocol's check_timeouts when it is due; daphne's must
    still read, delete and reschedule as below."""
    from daphne.http_protocol import WebRequest
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    from messaging import transport

    transport.daphne_checks_only_what_is_due()
    apps = inspect.getsource(Server._chat_original_application_checker)
    for line in (
        "for protocol, details in list(self.connections.items()):",
        'disconnected = details.get("disconnected", None)',
        'application_instance = details.get("application_instance", None)',
        "time.time() - disconnected > self.application_close_timeout",
        "application_instance.cancel()",
        'del self.connections[protocol]["application_instance"]',
        "del self.connections[protocol]",
        "reactor.callLater(1, self.application_checker)",
    ):
        assert line in apps, line
    timeouts = inspect.getsource(Server._chat_original_timeout_checker)
    assert "for protocol in list(self.connections.keys()):" in timeouts
    assert "protocol.check_timeouts()" in timeouts
    assert "reactor.callLater(2, self.timeout_checker)" in timeouts
    run = inspect.getsource(Server.run)
    assert "reactor.callLater(1, self.application_checker)" in run
    assert "reactor.callLater(2, self.timeout_checker)" in run
    # What a WebSocket's check looks at: its deadlines are these.
    check = inspect.getsource(WebSocketProtocol.check_timeouts)
    for line in (
        "self.duration() > self.server.websocket_timeout",
        "and self.server.websocket_timeout >= 0",
        "if self.state == self.STATE_CONNECTING:",
        "elif self.state == self.STATE_OPEN:",
        "if (time.time() - self.last_ping) > self.server.ping_interval:",
        "self.last_ping = time.time()",
    ):
        assert line in check, line
    assert "return time.time() - self.socket_opened" in inspect.getsource(WebSocketProtocol.duration)
    assert "self.last_ping = time.time()" in inspect.getsource(WebSocketProtocol.onMessage)
    # Every protocol comes and goes through these two.
    assert "self.server.protocol_connected(self)" in inspect.getsource(WebSocketProtocol.onConnect)
    assert "self.server.protocol_connected(self)" in inspect.getsource(WebRequest.__init__)
    assert "self.server.protocol_disconnected(self)" in inspect.getsource(WebSocketProtocol.onClose)
    for method in (WebRequest.connectionLost, WebRequest.finish):
        assert "self.server.protocol_disconnected(self)" in inspect.getsource(method)


class _Later:
    """daphne's reactor as its timers use it."""

    def __init__(self):
        self.calls = []

    def callLater(self, delay, func):
        self.calls.append((delay, func))


def _socket(server, *, last_ping):
    """An open daphne WebSocket, as far as check_timeouts looks; its pings
    and checks counted."""
    from daphne.ws_protocol import WebSocketProtocol

    protocol = WebSocketProtocol.__new__(WebSocketProtocol)
    protocol.server, protocol.state = server, WebSocketProtocol.STATE_OPEN
    protocol.socket_opened = protocol.last_ping = last_ping
    protocol.pings = protocol.checks = 0

    def ping():
        protocol.pings += 1

    def check(original=protocol.check_timeouts):
        protocol.checks += 1
        original()

    protocol._sendAutoPing, protocol.check_timeouts = ping, check
    return protocol


def test_daphne_checks_a_socket_when_its_ping_is_due_not_every_round(monkeypatch):
    import time

    import daphne.server
    from daphne.server import Server

    from messaging import transport

    transport.daphne_checks_only_what_is_due()
    monkeypatch.setattr(daphne.server, "reactor", _Later())
    clock = [1000.0]  # daphne's and the adapter's time.time()
    monkeypatch.setattr(time, "time", lambda: clock[0])
    server = Server(application=None, endpoints=["tcp:0"], ping_interval=35, websocket_timeout=-1)
    server.connections = {}
    sockets = [_socket(server, last_ping=clock[0]) for _ in range(50)]
    for protocol in sockets:
        server.protocol_connected(protocol)
    server.timeout_checker()  # new ones: each checked once, none pinged (not silent yet)
    assert [p.checks for p in sockets] == [1] * 50 and not any(p.pings for p in sockets)
    for _ in range(17):  # 34 s of rounds: nobody is due, nobody is looked at
        clock[0] += 2
        server.timeout_checker()
    assert [p.checks for p in sockets] == [1] * 50
    sockets[0].last_ping = clock[0]  # a frame came from this client: its ping moves later
    clock[0] += 2  # 36 s of silence for the others
    server.timeout_checker()
    assert [p.pings for p in sockets] == [0] + [1] * 49
    assert [p.checks for p in sockets] == [2] * 50
    assert daphne.server.reactor.calls[-1] == (2, server.timeout_checker)
    del server.connections[sockets[1]]  # gone: forgotten at its next deadline
    clock[0] += 36
    server.timeout_checker()
    assert sockets[1].checks == 2 and sockets[2].checks == 3 and sockets[0].pings == 1
    assert len(server._chat_deadlines) == 49


def test_daphne_timers_go_on_after_a_check_that_fails(monkeypatch, caplog):
    """daphne's own timers stop for good when a check raises; ours log it,
    keep the connection and come back."""
    import daphne.server
    from daphne.server import Server

    from messaging import transport

    transport.daphne_checks_only_what_is_due()
    monkeypatch.setattr(daphne.server, "reactor", _Later())
    server = Server(application=None, endpoints=["tcp:0"], ping_interval=35, websocket_timeout=-1)
    server.connections = {}
    broken = _socket(server, last_ping=0.0)

    def fails():
        raise RuntimeError("a bug in a check")

    broken.check_timeouts = fails
    server.protocol_connected(broken)
    server.timeout_checker()
    assert daphne.server.reactor.calls == [(2, server.timeout_checker)]
    assert len(server._chat_deadlines) == 1  # looked at again at its deadline
    assert "daphne's timeout check failed" in caplog.text
    server.connections[broken]["application_instance"] = type("Broken", (), {"done": lambda self: fails()})()
    server.protocol_disconnected(broken)
    server.application_checker()
    assert daphne.server.reactor.calls[-1] == (1, server.application_checker)
    assert broken in server._chat_marked and broken in server.connections


async def test_daphne_reaps_the_applications_that_ended_and_no_other(monkeypatch):
    import daphne.server
    from daphne.server import Server

    from messaging import transport

    transport.daphne_checks_only_what_is_due()
    monkeypatch.setattr(daphne.server, "reactor", _Later())
    ends = {}

    async def application(scope, receive, send):
        await ends[scope["path"]].wait()

    server = Server(application=application, endpoints=["tcp:0"], application_close_timeout=0.2)
    server.connections = {}
    protocols = {name: type("Protocol", (), {"name": name})() for name in ("ends", "runs", "stale")}
    for name, protocol in protocols.items():
        ends[name] = asyncio.Event()
        server.protocol_connected(protocol)
        server.create_application(protocol, {"type": "websocket", "path": name})
    # Gone long ago, its application still running: daphne would cancel it,
    # were it looked at; nothing marked it (daphne's own disconnect would).
    server.connections[protocols["stale"]]["disconnected"] = 1.0
    ends["ends"].set()
    await asyncio.sleep(0.01)
    server.application_checker()
    details = server.connections
    assert "application_instance" not in details[protocols["ends"]]  # reaped
    assert not details[protocols["runs"]]["application_instance"].done()
    assert not details[protocols["stale"]]["application_instance"].done()  # not looked at
    server.protocol_disconnected(protocols["ends"])
    server.protocol_disconnected(protocols["runs"])
    server.application_checker()  # "ends" goes; "runs" is given daphne's close timeout
    assert protocols["ends"] not in server.connections
    running = server.connections[protocols["runs"]]["application_instance"]
    await asyncio.sleep(0.01)
    assert not running.done()
    await asyncio.sleep(0.25)
    server.application_checker()  # looked at again: it outlived the timeout, cancelled
    await asyncio.sleep(0.01)
    assert running.cancelled()
    server.application_checker()  # and reaped once its cancellation is done
    assert protocols["runs"] not in server.connections and protocols["stale"] in server.connections
    server.connections[protocols["stale"]]["application_instance"].cancel()
