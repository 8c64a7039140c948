"""What waited at login, and what a client leaves behind (issue 18,
findings 1 and 6): a stuffed mailbox arrives whole, paced by the client's
acks; a client that floods and leaves is not served after it left."""

import asyncio
import json

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from messaging import connection
from messaging.models import Delivery, Message

from .helpers import PASSWORD, amake_user, connected
from .servers import Peer, signup

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()


@sync_to_async
def stuff_mailbox(sender, recipient, count, body):
    """`count` messages waiting for `recipient`, as a sender within the
    rate limit could leave them over time (written in bulk: the sending
    path is not what is tested)."""
    sender, recipient = User.objects.get(username=sender), User.objects.get(username=recipient)
    with transaction.atomic():
        messages = Message.objects.bulk_create(
            [
                Message(
                    kind=Message.Kind.PRIVATE, sender=sender, recipient=recipient, body=body, sent_at=timezone.now()
                )
                for _ in range(count)
            ]
        )
        Delivery.objects.bulk_create([Delivery(message=m, recipient=recipient) for m in messages])
    return [m.id for m in messages]


@sync_to_async
def pending_for(username):
    return Delivery.objects.filter(recipient__username=username, acked_at__isnull=True).count()


async def test_a_stuffed_mailbox_arrives_whole_on_a_real_server(server):
    """400 messages of 4,000 "€" (about 4.8 MB) wait: the first page used to
    be written at once, overflow the unread cap and close the socket with
    1008 at every login, so nothing was ever delivered."""
    await signup(server.url, "alice", "bob")
    ids = await stuff_mailbox("alice", "bob", 400, "€" * 4000)
    async with Peer(server.url) as bob:
        login = await bob.ok("login", username="bob", password=PASSWORD)
        assert login["pending"] == 400
        got = []
        while len(got) < 400:
            event = await bob.event("message", timeout=10)
            assert event["body"] == "€" * 4000
            got.append(event["id"])
            if len(got) % 50 == 0:
                await bob.notify("ack", ids=got[-50:])
        assert got == ids
        assert (await bob.ok("online"))["users"] == ["bob"]  # still connected
    assert await pending_for("bob") == 0


async def test_what_waited_is_paced_by_the_clients_acks(monkeypatch):
    """A client gets a window of what waited, and the rest as it acks."""
    monkeypatch.setattr(connection, "PENDING_PAGE", 10)
    monkeypatch.setattr(connection, "PENDING_WINDOW_MESSAGES", 30)
    await amake_user("alice")
    await amake_user("bob")
    ids = await stuff_mailbox("alice", "bob", 75, "hello")
    bob = await connected()
    await bob.login("bob")
    first = [(await bob.event("message"))["id"] for _ in range(30)]
    assert first == ids[:30]
    await bob.no_frame(0.5)  # the window is full until bob acks
    await bob.ok("ack", ids=first)
    rest = [(await bob.event("message"))["id"] for _ in range(30)]
    assert rest == ids[30:60]
    await bob.ok("ack", ids=rest)
    assert [(await bob.event("message"))["id"] for _ in range(15)] == ids[60:]
    await bob.close()


@pytest.mark.parametrize("held_bytes", [connection.HELD_MAX_BYTES, 1], ids=["held", "past-the-cap"])
async def test_what_is_sent_while_what_waited_goes_out_comes_after_it(monkeypatch, held_bytes):
    """A private message and a broadcast sent while bob's mailbox is still
    going out wait behind it: oldest first, none overtakes (the terminal
    client's reconnect test saw a resent message arrive after a newer one).
    Past the cap of what is held, they come with the pages all the same."""
    monkeypatch.setattr(connection, "HELD_MAX_BYTES", held_bytes)
    monkeypatch.setattr(connection, "PENDING_PAGE", 10)
    monkeypatch.setattr(connection, "PENDING_WINDOW_MESSAGES", 30)
    for name in ("alice", "bob", "carol"):
        await amake_user(name)
    ids = await stuff_mailbox("carol", "bob", 45, "waited")
    alice = await connected("alice")
    bob = await connected()
    await bob.login("bob")
    first = [(await bob.event("message"))["id"] for _ in range(30)]
    assert first == ids[:30]  # the window is full until bob acks
    private = (await alice.ok("send", to="bob", body="live"))["id"]
    broadcast = (await alice.ok("broadcast", body="to all"))["id"]
    await bob.no_frame(0.5)
    await bob.ok("ack", ids=first)
    rest = [(await bob.event("message"))["id"] for _ in range(17)]
    assert rest == ids[30:] + [private, broadcast]
    await bob.ok("ack", ids=rest)
    await bob.no_frame(0.5)  # each once
    assert (await bob.ok("online"))["users"] == ["alice", "bob"]
    await alice.close()
    await bob.close()


async def test_a_client_that_never_acks_still_gets_everything(monkeypatch):
    """Acks pace a client that sends them; one that does not is paced by
    its reading alone, after a grace period."""
    monkeypatch.setattr(connection, "PENDING_PAGE", 10)
    monkeypatch.setattr(connection, "PENDING_WINDOW_MESSAGES", 20)
    monkeypatch.setattr(connection, "PENDING_ACK_GRACE_SECONDS", 0.3)
    await amake_user("alice")
    await amake_user("bob")
    ids = await stuff_mailbox("alice", "bob", 45, "hello")
    bob = await connected()
    await bob.login("bob")
    assert [(await bob.event("message"))["id"] for _ in range(45)] == ids
    await bob.close()


async def test_repeated_typing_is_dropped_both_ways():
    """A repeat of the same typing state within a second is not passed on,
    `false` included, and a pair gets a few typing events a second at most."""
    for name in ("alice", "bob"):
        await amake_user(name)
    a, b = await connected("alice"), await connected("bob")
    for _ in range(5):
        await a.ok("typing", to="bob", typing=False)
    for state in [True, False] * 5:
        await a.ok("typing", to="bob", typing=state)
    await asyncio.sleep(0.2)
    seen = [f["typing"] for f in b.kept if f["type"] == "typing"]
    assert seen == [False, True, False], seen
    await a.close()
    await b.close()


async def test_a_flood_then_close_is_not_served_after_the_client_left(server):
    """Thousands of typing frames, then the client goes: its queued frames
    are dropped, its peer is not told it types after it left, and it goes
    offline at once rather than after the queue."""
    await signup(server.url, "alice", "bob")
    async with Peer(server.url) as bob:
        await bob.ok("login", username="bob", password=PASSWORD, presence_batch=False)
        flooder = await websockets.connect(server.url)
        await flooder.send(json.dumps({"type": "login", "username": "alice", "password": PASSWORD}))
        await bob.event("presence", username="alice", online=True)
        for i in range(3000):
            await flooder.send(json.dumps({"type": "typing", "to": "bob", "typing": i % 2 == 1}))
        flooder.transport.abort()
        await bob.event("presence", username="alice", online=False, timeout=5)
        await asyncio.sleep(1)
        typing = [f for f in bob.kept if f["type"] == "typing"]
        assert len(typing) <= 10, len(typing)


async def test_what_a_client_sent_before_leaving_still_counts_if_it_lasts(server):
    """Of what a gone client had queued, the changes it expects are made
    (its acks, its sends); the rest (typing, reads) is dropped."""
    await signup(server.url, "alice", "bob")
    async with Peer(server.url) as alice:
        await alice.ok("login", username="alice", password=PASSWORD)
        waiting = await alice.ok("send", to="bob", body="ack me")
    leaving = await websockets.connect(server.url)
    await leaving.send(json.dumps({"type": "login", "username": "bob", "password": PASSWORD}))
    while json.loads(await leaving.recv()).get("type") != "message":
        pass
    for _ in range(300):
        await leaving.send(json.dumps({"type": "history", "with": "alice"}))
    await leaving.send(json.dumps({"type": "ack", "ids": [waiting["id"]]}))
    await leaving.send(json.dumps({"type": "send", "to": "alice", "body": "bye"}))
    closing = asyncio.ensure_future(leaving.close())  # a clean close, after all it sent
    deadline = asyncio.get_running_loop().time() + 10
    while await pending_for("bob") or not await sent_by("bob"):
        assert asyncio.get_running_loop().time() < deadline, "the gone client's ack and send were not made"
        await asyncio.sleep(0.1)
    await closing


@sync_to_async
def sent_by(username):
    return Message.objects.filter(sender__username=username).count()


async def test_a_page_of_history_over_a_megabyte_arrives(server):
    """daphne's 1 MiB message limit applied to what the server sends: a page
    of 100 long messages (1.2 MB) was never sent, and the page waited on
    "Loading…" for ever."""
    await signup(server.url, "alice", "bob")
    ids = await stuff_mailbox("alice", "bob", 100, "€" * 4000)
    async with Peer(server.url) as bob:
        await bob.ok("login", username="bob", password=PASSWORD)
        page = await bob.ok("history", **{"with": "alice", "limit": 100})
        assert [m["id"] for m in page["messages"]] == ids
        assert (await bob.ok("online"))["users"] == ["bob"]
    assert "Traceback" not in server.log_text()


async def test_with_nothing_waiting_what_was_past_the_cap_still_comes_at_once(monkeypatch):
    """A login with nothing waiting skips the pages; but if messages sent
    before its flush were past the cap of what is held, the pages run and
    find them (not the re-push, seconds later)."""
    monkeypatch.setattr(connection, "HELD_MAX_BYTES", 1)
    go = asyncio.Event()
    original = connection.ChatConsumer.push_pending

    async def late(self):
        await go.wait()
        await original(self)

    monkeypatch.setattr(connection.ChatConsumer, "push_pending", late)
    for name in ("alice", "bob"):
        await amake_user(name)
    alice = await connected("alice")
    bob = await connected()
    await bob.login("bob")
    sent = [(await alice.ok("send", to="bob", body=f"live {i}"))["id"] for i in range(2)]
    go.set()
    assert [(await bob.event("message", timeout=5))["id"] for _ in range(2)] == sent
    await alice.close()
    await bob.close()
