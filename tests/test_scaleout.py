"""Two server processes sharing PostgreSQL and the Redis channel layer
(the one settings.CHANNEL_LAYER names; the idle test runs both).

Run by `make test` with DATABASE_URL and REDIS_URL set (its scale-out half).
"""

import asyncio

import pytest
from django.conf import settings
from django.db import connection

from messaging.models import Presence

from .conftest import need
from .helpers import PASSWORD
from .servers import Peer, Server, signup

pytestmark = [pytest.mark.scaleout, pytest.mark.django_db(transaction=True)]
# channels_redis's layers (settings.CHANNEL_LAYER); the other tests run on the default.
LAYERS = ("core", "pubsub")


@pytest.fixture
def two_servers():
    need(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    need(bool(settings.REDIS_URL), "Redis (REDIS_URL)")
    servers = [Server().start(), Server().start()]
    yield servers
    for s in servers:
        s.stop()


async def test_users_on_two_processes_chat_and_agree_on_who_is_online(two_servers):
    one, two = two_servers
    await signup(one.url, "alice", "bob", "carol")
    async with Peer(one.url) as a, Peer(two.url) as b:
        await a.ok("login", username="alice", password=PASSWORD)
        await b.ok("login", username="bob", password=PASSWORD)
        assert await a.event("presence", username="bob", online=True)
        assert (await a.ok("online"))["users"] == (await b.ok("online"))["users"] == ["alice", "bob"]
        sent = await a.ok("send", to="bob", body="across processes")
        assert sent["delivered"] == "live"
        assert (await b.event("message"))["id"] == sent["id"]
        reply = await b.ok("broadcast", body="to all")
        assert (reply["live"], reply["stored"]) == (1, 1)
        assert (await a.event("message"))["body"] == "to all"


async def test_one_connection_per_user_across_processes(two_servers):
    one, two = two_servers
    await signup(one.url, "alice")
    async with Peer(one.url) as first, Peer(two.url) as second:
        await first.ok("login", username="alice", password=PASSWORD)
        reply = await second.request("login", username="alice", password=PASSWORD)
        assert reply["code"] == "already_online"
        await second.ok("login", username="alice", password=PASSWORD, takeover=True)
        assert await first.event("session_replaced")
        assert await first.wait_closed() == 4001
        assert (await second.ok("online"))["users"] == ["alice"]


async def test_simultaneous_logins_on_two_processes_one_wins(two_servers):
    one, two = two_servers
    await signup(one.url, "alice")
    for _ in range(3):
        async with Peer(one.url) as p1, Peer(two.url) as p2:
            replies = await asyncio.gather(
                p1.request("login", username="alice", password=PASSWORD),
                p2.request("login", username="alice", password=PASSWORD),
            )
            assert sorted(r["type"] for r in replies) == ["error", "ok"], replies
            assert [r["code"] for r in replies if r["type"] == "error"] == ["already_online"]
        await released("alice")


async def released(username, timeout=10):
    """Wait until the servers have processed the disconnects."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await asyncio.to_thread(Presence.objects.filter(user__username=username).exists):
        assert loop.time() < deadline, "presence was never released"
        await asyncio.sleep(0.05)


async def test_lockout_is_shared_by_the_processes(two_servers):
    one, two = two_servers
    await signup(one.url, "alice")
    async with Peer(one.url) as p1, Peer(two.url) as p2:
        for peer in (p1, p2, p1):
            assert (await peer.request("login", username="alice", password="wrong"))["code"] == "invalid_credentials"
        assert (await p2.request("login", username="alice", password=PASSWORD))["code"] == "locked"


async def test_idle_connections_outlive_every_client_timeout():
    """Nothing on the path (redis-py's socket timeout, channels_redis's
    blocking receive or its subscription, daphne's pings) may end a quiet
    connection: with each of channels_redis's layers, side by side, so the
    suite waits once."""
    need(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    need(bool(settings.REDIS_URL), "Redis (REDIS_URL)")
    servers = {layer: [Server(CHANNEL_LAYER=layer), Server(CHANNEL_LAYER=layer)] for layer in LAYERS}
    try:
        await asyncio.gather(*(asyncio.to_thread(server.start) for pair in servers.values() for server in pair))
        await signup(servers["core"][0].url, "alice", "bob", "carol", "dave")
        users = {"core": ("alice", "bob"), "pubsub": ("carol", "dave")}
        peers = {}
        for layer, (one, two) in servers.items():
            a, b = await Peer(one.url).__aenter__(), await Peer(two.url).__aenter__()
            peers[layer] = (a, b)
            await a.ok("login", username=users[layer][0], password=PASSWORD)
            await b.ok("login", username=users[layer][1], password=PASSWORD)
        await asyncio.sleep(35)
        for layer, (a, b) in peers.items():
            first, second = users[layer]
            sent = await a.ok("send", to=second, body="still there?")
            assert sent["delivered"] == "live", layer
            assert (await b.event("message", timeout=10))["id"] == sent["id"]
            assert (await b.ok("send", to=first, body="yes"))["delivered"] == "live", layer
            assert (await a.event("message", timeout=10))["body"] == "yes"
            await a.close()
            await b.close()
    finally:
        for pair in servers.values():
            for server in pair:
                server.stop()
