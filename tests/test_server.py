"""The real server (daphne subprocess) on the embedded default, end to end."""

import asyncio
import json

import pytest
import websockets

from messaging.models import Presence

from .helpers import PASSWORD
from .servers import Peer, signup

pytestmark = pytest.mark.django_db(transaction=True)


async def test_chat_over_a_real_socket(server):
    await signup(server.url, "alice", "bob")
    async with Peer(server.url) as a, Peer(server.url) as b:
        await a.ok("login", username="alice", password=PASSWORD)
        await b.ok("login", username="bob", password=PASSWORD)
        sent = await a.ok("send", to="bob", body="über socket ✓")
        assert sent["delivered"] == "live"
        event = await b.event("message")
        assert event["body"] == "über socket ✓" and event["id"] == sent["id"]
        await b.ok("ack", ids=[event["id"]])
        # Oversized frame: too_large, and the socket is still usable.
        await a.ws.send(json.dumps({"type": "broadcast", "body": "x" * 70000}))
        assert (await a.event("error"))["code"] == "too_large"
        assert (await a.ok("online"))["users"] == ["alice", "bob"]
        # A lone surrogate in ref cannot be sent as UTF-8: escaped, not a crash.
        await a.ws.send('{"type": "online", "ref": "\\udc80"}')
        assert (await a.event("ok"))["ref"] == "\udc80"
        await a.ok("logout")
        assert await a.wait_closed() == 1000


async def test_a_frame_over_a_mebibyte_closes_that_socket_only(server):
    await signup(server.url, "alice")
    async with Peer(server.url) as a, Peer(server.url) as b, Peer(server.url) as c:
        await b.ok("login", username="alice", password=PASSWORD)
        # Over the 128 KiB the server reads: a close frame saying why.
        await c.ws.send(json.dumps({"type": "online", "pad": "x" * (200 * 1024)}))
        assert await c.wait_closed() == 1009
        await a.ws.send("x" * (2 * 1024 * 1024))
        # Autobahn fails the connection (1009, or a dropped socket mid-send).
        assert await a.wait_closed() in (None, 1009)
        assert (await b.ok("online"))["users"] == ["alice"]


async def test_restart_after_a_crash_clears_presence_and_keeps_messages(server):
    await signup(server.url, "alice", "bob")
    async with Peer(server.url) as a:
        await a.ok("login", username="alice", password=PASSWORD)
        sent = await a.ok("send", to="bob", body="survives the crash")
        server.kill()
    assert await asyncio.to_thread(Presence.objects.filter(user__username="alice").exists)
    server.start()
    async with Peer(server.url) as a, Peer(server.url) as b:
        await a.ok("login", username="alice", password=PASSWORD)  # not already_online
        reply = await b.ok("login", username="bob", password=PASSWORD)
        assert reply["pending"] == 1
        assert (await b.event("message"))["id"] == sent["id"]


async def test_a_websocket_to_an_unknown_path_is_refused_cleanly(server):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.url.replace("/ws/chat/", "/nope/"))
    assert refused.value.response.status_code == 403
    # The chat still works, and the log has no traceback.
    await signup(server.url, "alice")
    assert "Traceback" not in server.log_text() and "No route found" not in server.log_text()
