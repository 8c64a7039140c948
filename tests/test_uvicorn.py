"""The project under uvicorn, whose figures docs/performance.md publishes.

Every other server test runs on daphne. Under uvicorn the connection has no
daphne internals to read (messaging/transport.py falls back to an outbox in
front of the ASGI send) and the runtime is started by the ASGI lifespan, not
by the first connection: both are checked here, end to end.
"""

import asyncio
import time

import pytest

from .helpers import PASSWORD
from .servers import Peer, Server, signup

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(transactional_db):
    srv = Server(kind="uvicorn").start()
    yield srv
    srv.stop()


async def test_chat_works_under_uvicorn(server):
    await signup(server.url, "alice", "bob")
    async with Peer(server.url) as alice:
        await alice.ok("login", username="alice", password=PASSWORD)
        stored = await alice.ok("send", to="bob", body="while you were out")
        assert stored["delivered"] == "stored"
        async with Peer(server.url) as bob:
            login = await bob.ok("login", username="bob", password=PASSWORD)
            assert login["pending"] == 1
            assert (await bob.event("message"))["id"] == stored["id"]
            await bob.ok("ack", ids=[stored["id"]])
            live = await alice.ok("send", to="bob", body="hello")
            assert live["delivered"] == "live"
            assert (await bob.event("message"))["body"] == "hello"
            assert (await alice.event("receipt"))["status"] == "delivered"


async def test_the_lifespan_starts_and_stops_the_runtime(server):
    """uvicorn sends the lifespan: startup runs the runtime before any
    connection, and a stop shuts it down cleanly."""
    deadline = time.monotonic() + 10
    while "Application startup complete" not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()
        await asyncio.sleep(0.1)
    assert "lifespan" not in server.log_text().lower().replace("application startup complete", "")
    server.stop()
    assert "Application shutdown complete" in server.log_text()
