"""Faults of the scale-out stack, each on two real server processes.

One process killed with SIGKILL, Redis restarting, PostgreSQL restarting:
the users of a dead process log in again on the other, everyone else keeps
their connection, nothing accepted is lost, and no process needs a
restart. The Redis and PostgreSQL that a test stops are private instances
(tests/private.py): the machine's shared ones serve other test runs. The
last test, in-process, pins down what the Redis one relies on.
"""

import asyncio
import shutil
import time

import pytest
import websockets
from django.conf import settings
from django.db import connection

from chatclient.protocol import Closed, ReplyError
from messaging import events, services
from messaging.models import Message
from messaging.runtime import runtime

from .conftest import need
from .helpers import PASSWORD, amake_user, connected
from .private import PrivatePostgres, PrivateRedis, postgres_bin
from .servers import Peer, Server, signup

pytestmark = pytest.mark.django_db(transaction=True)
# The tests with server processes: PostgreSQL and Redis, or private ones.
processes = pytest.mark.scaleout

# A quick heartbeat, so a dead process's users expire within seconds.
FAST = {"CHAT_PUMP_SECONDS": "0.5", "CHAT_PRESENCE_TIMEOUT_SECONDS": "5", "CHAT_REDELIVER_SECONDS": "2"}


@pytest.fixture
def start_servers():
    """start_servers(n, **env): n server processes, all stopped at the end."""
    need(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    need(bool(settings.REDIS_URL), "Redis (REDIS_URL)")
    started = []

    def start(n=2, **env):
        servers = [Server(**env) for _ in range(n)]
        started.extend(servers)
        return [server.start() for server in servers]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def private_redis(tmp_path):
    need(shutil.which("redis-server") is not None, "redis-server")
    redis = PrivateRedis(tmp_path)
    try:
        yield redis.start()
    finally:
        redis.stop()


@pytest.fixture
def private_postgres():
    need(postgres_bin() is not None, "PostgreSQL's programs (initdb, postgres)")
    postgres = PrivatePostgres()
    try:
        yield postgres.create()
    finally:
        postgres.destroy()


async def logged_in(url, username, **fields):
    peer = await Peer(url).__aenter__()
    try:
        await peer.ok("login", username=username, password=PASSWORD, **fields)
    except BaseException:
        await peer.close()
        raise
    return peer


async def log_in_again(url, username, timeout=30):
    """What a client does when its connection dropped: connect and log in
    again (taking over its old presence), with a pause between tries."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await logged_in(url, username, takeover=True)
        except (Closed, ReplyError, OSError, TimeoutError):
            assert loop.time() < deadline, f"{username} could not log in again"
            await asyncio.sleep(0.2)


async def messages_until(peer, ids, timeout=20):
    """Collect message events until every id in `ids` came; the ids that came."""
    seen = set()
    while not ids <= seen:
        seen.add((await peer.event("message", timeout=timeout))["id"])
    return seen


async def until(condition, *tasks, timeout=30):
    """Wait until `condition()` holds; a task that failed meanwhile fails the test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        for task in tasks:
            if task.done():
                task.result()
        assert loop.time() < deadline, "the traffic stalled"
        await asyncio.sleep(0.05)


def alive(*servers):
    return all(s.proc.poll() is None for s in servers)


@processes
async def test_kill_9_of_one_of_two_processes(start_servers):
    """Its users log in on the other and get everything pending; their
    presence expires with the heartbeat; the other's users notice nothing."""
    survivor, victim = start_servers(2, **FAST)
    await signup(survivor.url, "alice", "carol", "bob", "dave")
    a, c = await logged_in(survivor.url, "alice"), await logged_in(survivor.url, "carol")
    b, d = await logged_in(victim.url, "bob"), await logged_in(victim.url, "dave")
    first = await a.ok("send", to="bob", body="before")
    await b.event("message", id=first["id"])
    await b.ok("ack", ids=[first["id"]])

    to_bob, from_bob, between_survivors = [], [], []

    async def alice_and_carol():
        # Until told to stop: alice writes to bob, carol and alice to each other.
        while not stop.is_set():
            to_bob.append((await a.ok("send", to="bob", body="to bob"))["id"])
            sent = await c.ok("send", to="alice", body="to alice")
            assert (await a.event("message", id=sent["id"]))["body"] == "to alice"
            between_survivors.append(sent["id"])
            await asyncio.sleep(0.02)

    async def bob():
        while True:
            try:
                from_bob.append((await b.ok("send", to="alice", body="from bob"))["id"])
            except Closed:
                return
            await asyncio.sleep(0.02)

    stop = asyncio.Event()
    survivors, victims = asyncio.create_task(alice_and_carol()), asyncio.create_task(bob())
    await until(lambda: len(from_bob) >= 5, survivors, victims)
    victim.kill()
    await victims
    chatted = len(between_survivors)
    await until(lambda: len(between_survivors) >= chatted + 5, survivors)
    stop.set()
    await survivors

    # Bob logs in on the survivor: his old presence looks alive, so he takes it over.
    b = await log_in_again(survivor.url, "bob")
    assert await messages_until(b, set(to_bob)) == set(to_bob)
    # Everything bob sent before the kill reached alice.
    for mid in from_bob:
        await a.event("message", id=mid)
    # Dave did not come back: his presence expires, and he may log in plainly.
    await a.event("presence", username="dave", online=False, timeout=30)
    assert (await a.ok("online"))["users"] == ["alice", "bob", "carol"]
    d = await logged_in(survivor.url, "dave")

    # Alice and carol were never disconnected nor told anything.
    assert not a.closed.is_set() and not c.closed.is_set()
    assert not [f for f in a.kept + c.kept if f["type"] in ("session_ended", "session_replaced", "error")]
    sent = await c.ok("send", to="alice", body="still here")
    assert sent["delivered"] == "live" and (await a.event("message", id=sent["id"]))
    for peer in (a, b, c, d):
        await peer.close()


@processes
@pytest.mark.parametrize("layer", ["core", "pubsub"])
async def test_redis_restarting_under_traffic(start_servers, private_redis, layer):
    """The connections wait Redis out; what was sent meanwhile is stored and
    arrives from its pending delivery once Redis is back; no process needs
    a restart. With each of channels_redis's layers (settings.CHANNEL_LAYER):
    the core one's processes join their groups again, the pub/sub one's
    subscriptions are renewed by redis-py."""
    one, two = start_servers(2, REDIS_URL=private_redis.url, CHANNEL_LAYER=layer, **FAST)
    await signup(one.url, "alice", "bob")
    a, b = await logged_in(one.url, "alice"), await logged_in(two.url, "bob")
    sent = await a.ok("send", to="bob", body="before")
    await b.event("message", id=sent["id"])
    await b.ok("ack", ids=[sent["id"]])

    to_bob = []

    async def alice():
        while not stop.is_set():
            to_bob.append((await a.ok("send", to="bob", body="under traffic"))["id"])
            await asyncio.sleep(0.02)

    async def sent_some_more(count=5):
        target = len(to_bob) + count
        await until(lambda: len(to_bob) >= target, traffic)

    stop = asyncio.Event()
    traffic = asyncio.create_task(alice())
    await sent_some_more()
    private_redis.stop()
    await sent_some_more()  # sends are answered while Redis is down
    private_redis.start()
    await sent_some_more()
    stop.set()
    await traffic

    assert await messages_until(b, set(to_bob)) == set(to_bob)
    assert alive(one, two) and not a.closed.is_set() and not b.closed.is_set()
    sent = await b.ok("send", to="alice", body="after")
    assert sent["delivered"] == "live"
    await a.event("message", id=sent["id"])
    for peer in (a, b):
        await peer.close()


@processes
async def test_postgresql_restarting(start_servers, private_postgres):
    """While the database is down, requests answer internal_error and the
    connections and processes stay up; once it is back, everything works
    again without a restart."""
    one, two = start_servers(2, DATABASE_URL=private_postgres.url, **FAST)
    await signup(one.url, "alice", "bob")
    a, b = await logged_in(one.url, "alice"), await logged_in(two.url, "bob")
    sent = await a.ok("send", to="bob", body="before")
    await b.event("message", id=sent["id"])

    private_postgres.stop()
    await asyncio.sleep(1.5)  # the heartbeat fails a few times too
    for peer in (a, b):
        for op, fields in (("send", {"to": "alice", "body": "down"}), ("online", {}), ("history", {"with": "alice"})):
            reply = await peer.request(op, **fields)
            assert reply.get("code") == "internal_error", reply
    newcomer = await Peer(two.url).__aenter__()
    assert (await newcomer.request("login", username="alice", password=PASSWORD))["code"] == "internal_error"
    assert alive(one, two) and not a.closed.is_set() and not b.closed.is_set()

    private_postgres.start()
    (back,) = private_postgres.query("SELECT now()")[0]
    assert (await a.ok("online"))["users"] == ["alice", "bob"]
    sent = await a.ok("send", to="bob", body="after")
    assert sent["delivered"] == "live"
    await b.event("message", id=sent["id"])
    await b.ok("send", to="alice", body="back")
    await a.event("message", body="back")
    await newcomer.ok("signup", username="carol", password=PASSWORD)
    await newcomer.ok("login", username="carol", password=PASSWORD)
    # Each process's heartbeat runs again, so nobody is expired later.
    beating = "SELECT count(*) FROM messaging_presence WHERE heartbeat_at > %s"
    await until(lambda: private_postgres.query(beating, [back]) == [(3,)])
    for peer in (a, b, newcomer):
        await peer.close()


async def test_a_push_lost_after_the_commit_fails_nothing_and_repeats_nothing(monkeypatch):
    """The channel layer failing between the commit and the push: the
    requests succeeded (a retry would store them twice), and the messages
    wait as pending deliveries."""
    alice, carol, _ = [await amake_user(name) for name in ("alice", "carol", "bob")]

    async def unreachable(push):
        raise ConnectionError("the channel layer is down")

    monkeypatch.setattr(events, "send", unreachable)
    sent = await asyncio.gather(
        runtime.writer.submit(services.SendRequest(sender=alice, to_username="bob", body="one")),
        runtime.writer.submit(services.SendRequest(sender=carol, to_username="bob", body="two")),
    )
    assert [s.message.body for s in sent] == ["one", "two"]
    monkeypatch.undo()
    bob = await connected()
    assert (await bob.login("bob"))["pending"] == 2
    assert [(await bob.event("message"))["body"] for _ in sent] == ["one", "two"]
    assert await Message.objects.acount() == 2
    await bob.close()


async def test_a_caller_cancelled_mid_change_does_not_cancel_its_pushes(monkeypatch):
    """A socket that closes while its login's claim runs cancels the login,
    not the claim: committed, its "online" must still reach the others
    (it was lost, and the user stayed offline to everyone after a storm)."""
    alice = await amake_user("alice")
    await amake_user("bob")
    bob = await connected("bob")
    started, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    claim = services.presence_claim

    def slow_claim(**kwargs):
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)
        return claim(**kwargs)

    login = asyncio.ensure_future(events.run_then_push(slow_claim, user=alice, channel_name="test.gone"))
    await started.wait()
    login.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await login
    await bob.event("presence", username="alice", online=True, timeout=5)
    await bob.close()


@processes
async def test_while_redis_is_down_a_login_says_it_is_temporary_and_works_after(start_servers, private_redis):
    """A login that cannot complete says so (`unavailable`, with
    retry_after: clients try again by themselves) rather than "the server
    failed"; a new socket is refused at the handshake without a traceback;
    a sign-up, which needs no Redis, answers ok; all work once it is back."""
    (one,) = start_servers(1, REDIS_URL=private_redis.url, **FAST)
    await signup(one.url, "alice")
    async with Peer(one.url) as early:
        private_redis.stop()
        assert (await early.ok("signup", username="bob", password=PASSWORD))["username"] == "bob"
        reply = await early.request("login", username="alice", password=PASSWORD)
        assert reply["type"] == "error" and reply["code"] == "unavailable" and reply["retry_after"] >= 1, reply
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(one.url)
        private_redis.start()
        deadline = time.monotonic() + 20
        while (reply := await early.request("login", username="alice", password=PASSWORD))["type"] != "ok":
            assert reply["code"] == "unavailable" and time.monotonic() < deadline, reply
            await asyncio.sleep(reply["retry_after"])
    log = one.log_text()
    assert "Exception inside application" not in log and "internal_error" not in log
    # An outage is news in a line or two, not a traceback a second.
    assert "Traceback" not in log, log[-3000:]
    assert 1 <= log.count("Redis is unreachable") <= 2  # once per layer that noticed, not once a second
