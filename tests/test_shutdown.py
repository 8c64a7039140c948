"""A graceful stop (issue 22): on SIGTERM a server process tells its clients
to reconnect (1012, service restart), commits what it holds, and exits."""

import asyncio
import json
import re
import signal
import time

import pytest
import websockets
from asgiref.sync import sync_to_async

from chatclient.protocol import Closed
from messaging.models import Message, Presence

from .helpers import PASSWORD
from .servers import Peer, Server, signup

pytestmark = pytest.mark.django_db(transaction=True)


async def test_sigterm_tells_every_client_to_reconnect_then_exits():
    server = Server(CHAT_SHUTDOWN_SECONDS="5", LOG_LEVEL="INFO").start()
    try:
        await signup(server.url, "alice", "bob")
        async with Peer(server.url) as alice, Peer(server.url) as bob, Peer(server.url) as anonymous:
            await alice.ok("login", username="alice", password=PASSWORD)
            await bob.ok("login", username="bob", password=PASSWORD)
            await anonymous.ok("whoami")
            sent = await alice.ok("send", to="bob", body="before the restart")
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            for peer in (alice, bob, anonymous):
                ended = await peer.event("session_ended", timeout=5)
                assert ended["action"] == "reconnect"
                assert await peer.wait_closed(5) == 1012
            assert await asyncio.to_thread(server.proc.wait, 10) == 0
            assert time.monotonic() - started < 8
    finally:
        server.stop()
    assert "stopping: 3 connection(s) told to reconnect" in server.log_text()
    assert "stopped" in server.log_text()
    # Nothing accepted was lost, and nobody is left online as a ghost.
    assert await sync_to_async(Message.objects.filter(pk=sent["id"]).exists)()
    assert not await sync_to_async(Presence.objects.exists)()


async def test_a_connection_made_while_stopping_is_told_to_reconnect():
    server = Server(CHAT_SHUTDOWN_SECONDS="3").start()
    try:
        await signup(server.url, "alice")
        async with Peer(server.url) as alice:
            await alice.ok("login", username="alice", password=PASSWORD)
            # alice's in-flight history keeps the process in its graceful stop
            # a moment; a newcomer then is turned away with 1012 as well.
            server.proc.send_signal(signal.SIGTERM)
            try:
                late = await websockets.connect(server.url)
            except (OSError, websockets.InvalidHandshake):
                # The port closed first, or the process ended between
                # accepting the socket and answering it: nothing to turn away.
                return
            frames = []

            async def read_all():
                while True:
                    frames.append(json.loads(await asyncio.wait_for(late.recv(), 5)))

            with pytest.raises(websockets.ConnectionClosed) as closed:
                await read_all()
            if closed.value.rcvd is None:
                return  # the process finished its stop before it could answer: nothing to turn away
            assert closed.value.rcvd.code == 1012
            assert frames and frames[0]["type"] == "session_ended"
            with pytest.raises(Closed):
                await alice.ok("whoami")
    finally:
        server.stop()


@pytest.mark.scaleout
async def test_a_rolling_restart_under_load_loses_nothing():
    """Two processes on PostgreSQL + Redis, restarted one after the other
    (SIGTERM, start again) while alice, on the first, keeps writing to bob,
    on the second: both clients reconnect by themselves, and every message
    arrives once and is stored once."""
    from django.conf import settings
    from django.db import connection

    from chatclient.client import ChatClient

    from .conftest import need
    from .test_terminal_client import Lines

    need(connection.vendor == "postgresql" and bool(settings.REDIS_URL), "PostgreSQL and Redis")
    one, two = Server(CHAT_SHUTDOWN_SECONDS="5").start(), Server(CHAT_SHUTDOWN_SECONDS="5").start()
    try:
        await signup(one.url, "alice", "bob")
        a, b = Lines(), Lines()
        alice = ChatClient(one.url, a.append, first_delay=0.2, max_delay=1)
        bob = ChatClient(two.url, b.append, first_delay=0.2, max_delay=1)
        for client in (alice, bob):
            await client.connect()
        assert await alice.login("alice", PASSWORD) is None
        assert await bob.login("bob", PASSWORD) is None
        sent = 0

        async def write(until):
            nonlocal sent
            while not until.done():
                await alice.execute(f"/msg bob rolling {sent}")
                sent += 1
                await asyncio.sleep(0.05)

        for server in (one, two):
            restarted = asyncio.get_running_loop().run_in_executor(None, lambda s=server: (s.stop(), s.start()))
            await write(restarted)
            await restarted
        await a.wait_for("Reconnected as alice.")
        await b.wait_for("Reconnected as bob.")
        for i in range(sent):
            await b.wait_for(f"rolling {i}", timeout=30)
        shown = [re.search(r"alice: (rolling \d+)", line) for line in b]
        shown = sorted(m.group(1) for m in shown if m)
        assert shown == sorted(f"rolling {i}" for i in range(sent)) and sent > 10  # each once
        stored = await sync_to_async(list)(
            Message.objects.filter(body__startswith="rolling ").values_list("body", flat=True)
        )
        assert sorted(stored) == sorted(f"rolling {i}" for i in range(sent))
        await alice.close()
        await bob.close()
    finally:
        one.stop()
        two.stop()


async def test_a_process_says_at_start_what_it_runs_on():
    server = Server(LOG_LEVEL="INFO").start()
    server.stop()
    line = next(line for line in server.log_text().splitlines() if "chat process" in line)
    assert f"chat process {server.proc.pid} starting:" in line
    assert "database" in line and "Layer" in line
    assert "postgres://" not in line and "password" not in line.lower()


async def test_a_client_that_leaves_with_sends_in_flight_leaves_no_error_behind():
    """Issue 22: closing with requests in flight once logged `Task exception
    was never retrieved ... InvalidStateError` from the reply path."""
    server = Server().start()
    try:
        await signup(server.url, "alice", "bob")
        for _ in range(5):
            ws = await websockets.connect(server.url)
            await ws.send(json.dumps({"type": "login", "username": "alice", "password": PASSWORD, "ref": "in"}))
            while json.loads(await ws.recv()).get("ref") != "in":
                pass
            for i in range(20):
                await ws.send(json.dumps({"type": "send", "to": "bob", "body": f"in flight {i}"}))
            ws.transport.abort()
            await asyncio.sleep(0.3)
    finally:
        server.stop()
    log = server.log_text()
    assert "InvalidStateError" not in log and "never retrieved" not in log and "Traceback" not in log, log[-2000:]
