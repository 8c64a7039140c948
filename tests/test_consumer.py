"""Protocol v1 through the consumer, with Channels' WebsocketCommunicator.

Every op, every error code, bad frames. These run against the database and
channel layer that settings name (SQLite and in-memory by default).
"""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from messaging import services
from messaging.models import Delivery, Message, Presence
from messaging.runtime import runtime

from .helpers import PASSWORD, ProtocolClient, amake_user, connected

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def users():
    for name in ("alice", "bob", "carol"):
        await amake_user(name)


# --- Frames -------------------------------------------------------------------


async def test_bad_frames_get_bad_request_and_the_connection_stays_usable(users):
    c = await connected()
    for raw in ["not json", "[1, 2]", '"text"', "null", "{}", '{"type": 5}', '{"type": "fly"}', "[" * 50000]:
        await c.send_raw(raw)
        reply = await c.reply()
        assert reply["type"] == "error" and reply["code"] == "bad_request", (raw[:20], reply)
    await c.send_raw(bytes_data=b'{"type": "online"}')
    assert (await c.reply())["code"] == "bad_request"
    await c.error("signup", "bad_request", username="x")  # lacks password
    await c.login("alice")
    await c.error("send", "bad_request", to="bob")  # lacks body
    assert (await c.ok("online"))["users"] == ["alice"]
    await c.close()


async def test_ref_is_echoed_unchanged(users):
    c = await connected("alice")
    for ref in [1, "abc", {"nested": [1, 2]}, None]:
        await c.send_raw(json.dumps({"type": "online", "ref": ref}))
        reply = await c.reply()
        assert reply["type"] == "ok" and reply["ref"] == ref
    await c.send_raw(json.dumps({"type": "nope", "ref": "r1"}))
    reply = await c.reply()
    assert reply == {"type": "error", "ref": "r1", "code": "bad_request", "message": reply["message"]}
    await c.close()


async def test_frame_over_64_kib_is_too_large(users):
    c = await connected("alice")
    await c.send_raw(json.dumps({"type": "broadcast", "ref": "big", "body": "x" * (64 * 1024)}))
    reply = await c.reply()
    assert (reply["code"], reply["ref"]) == ("too_large", "big")  # the ref is echoed all the same
    # Counted in UTF-8 bytes, not characters.
    await c.send_raw(json.dumps({"type": "broadcast", "body": "é" * 40000}, ensure_ascii=False))
    assert (await c.reply())["code"] == "too_large"
    assert await sync_to_async(Message.objects.count)() == 0
    await c.ok("online")
    await c.close()


async def test_anonymous_may_only_signup_and_login(users):
    c = await connected()
    for op, fields in [
        ("logout", {}),
        ("send", {"to": "bob", "body": "hi"}),
        ("broadcast", {"body": "hi"}),
        ("block", {"username": "bob"}),
        ("unblock", {"username": "bob"}),
        ("blocked", {}),
        ("online", {}),
        ("recent", {}),
        ("ack", {"ids": [1]}),
        ("history", {"with": None}),
        ("conversations", {}),
        ("read", {"with": None, "up_to": 1}),
    ]:
        await c.error(op, "not_logged_in", **fields)
    await c.close()


async def test_hostile_strings_are_refused_not_crashing(users):
    c = await connected("alice")
    await c.error("send", "invalid", to="bob", body="nul\x00byte")
    await c.send_raw('{"type": "send", "to": "bob", "body": "\\ud800"}')
    assert (await c.reply())["code"] == "invalid"
    await c.error("send", "invalid", to="bob", body=12)
    await c.error("ack", "invalid", ids=[2**70])
    await c.error("ack", "invalid", ids=[True])
    await c.error("ack", "invalid", ids="1,2")
    await c.error("history", "invalid", **{"with": None, "before": "x"})
    await c.error("unblock", "bad_request", username=["bob"])
    await c.send_raw('{"type": "online", "ref": "\\udc80"}')
    reply = await c.reply()
    assert reply["type"] == "ok" and reply["ref"] == "\udc80"
    await c.ok("online")
    await c.close()


# --- signup / login / logout --------------------------------------------------


async def test_signup_creates_an_account_without_logging_in(users):
    c = await connected()
    assert (await c.ok("signup", username="dave", password=PASSWORD))["username"] == "dave"
    assert (await c.ok("whoami"))["username"] is None
    await c.error("signup", "username_taken", username="dave", password=PASSWORD)
    await c.error("signup", "username_taken", username="Dave", password=PASSWORD)
    await c.error("signup", "invalid", username="no spaces", password=PASSWORD)
    await c.error("signup", "invalid", username="", password=PASSWORD)
    await c.error("signup", "invalid", username="erin", password="short")
    await c.error("signup", "invalid", username="erin", password="12345678901")
    await c.error("signup", "invalid", username="erin", password="password")
    reply = await c.login("dave")
    assert (reply["username"], reply["pending"]) == ("dave", 0)
    await c.close()


async def test_login_errors(users):
    c = await connected()
    await c.error("login", "invalid_credentials", username="alice", password="wrong")
    await c.error("login", "invalid_credentials", username="nobody", password=PASSWORD)
    await c.error("login", "bad_request", username="alice")
    await c.login("alice")
    await c.error("login", "already_logged_in", username="alice", password=PASSWORD)
    other = await connected()
    await other.error("login", "already_online", username="alice", password=PASSWORD)
    await c.close()
    await other.close()


async def test_lockout_after_three_failures_and_password_not_checked(users, settings):
    settings.LOGIN_LOCKOUT_SECONDS = 60
    c = await connected()
    # Issue 24.5: each failure says how many more the lock allows, and the
    # message warns before the one that locks.
    replies = [await c.error("login", "invalid_credentials", username="alice", password="wrong") for _ in range(3)]
    assert [r["attempts_left"] for r in replies] == [2, 1, 0]
    assert replies[0]["message"] == "Wrong username or password."
    assert "One more wrong password locks this name for a minute." in replies[1]["message"]
    assert "now locked for a minute" in replies[2]["message"]
    reply = await c.error("login", "locked", username="alice", password=PASSWORD)
    assert 55 <= reply["retry_after"] <= 60
    # Another IP is not locked out.
    other = await connected(client=("10.1.1.1", 1234))
    await other.login("alice")
    await other.close()
    await c.close()


async def test_logout_replies_ok_then_closes_and_goes_offline(users):
    a = await connected("alice")
    b = await connected("bob")
    await a.ok("logout")
    assert await a.closed_with() == 1000
    assert (await b.event("presence", username="alice"))["online"] is False
    assert (await b.ok("online"))["users"] == ["bob"]
    await b.close()


async def test_session_cookie_logs_the_connection_in_and_logout_ends_the_session(users):
    http = Client()
    await sync_to_async(http.login)(username="alice", password=PASSWORD)
    cookie = f"sessionid={http.cookies['sessionid'].value}".encode()
    c = await ProtocolClient(
        headers=[(b"cookie", cookie), (b"origin", b"http://localhost"), (b"host", b"localhost")]
    ).connect()
    assert (await c.ok("whoami"))["username"] == "alice"
    await c.ok("logout")
    response = await sync_to_async(http.get)("/")
    assert response.wsgi_request.user.is_authenticated is False


async def test_session_conflict_stays_anonymous_and_takeover_moves_it(users):
    http = Client()
    await sync_to_async(http.login)(username="alice", password=PASSWORD)
    cookie = f"sessionid={http.cookies['sessionid'].value}".encode()
    first = await ProtocolClient(headers=[(b"cookie", cookie)]).connect()
    second = await ProtocolClient(headers=[(b"cookie", cookie)]).connect()
    error = await second.event("error")
    assert error["code"] == "already_online" and "ref" not in error
    assert (await second.ok("whoami"))["username"] is None
    await second.error("online", "not_logged_in")
    reply = await second.ok("login", takeover=True)
    assert reply["username"] == "alice"
    assert await first.event("session_replaced")
    assert await first.closed_with() == 4001
    assert (await second.ok("online"))["users"] == ["alice"]
    await second.close()


async def test_takeover_without_a_session_is_bad_request(users):
    c = await connected()
    await c.error("login", "bad_request", takeover=True)
    await c.close()


async def test_takeover_with_password(users):
    first = await connected("alice")
    second = await connected()
    await second.login("alice", takeover=True)
    await first.event("session_replaced")
    assert await first.closed_with() == 4001
    # The row moved to the new connection (the only one this process
    # holds now), and nobody was told of a presence change.
    await second.ok("online")
    row = await sync_to_async(Presence.objects.get)(user__username="alice")
    assert list(runtime.hub.connections) == [row.channel_name]
    assert not [e for e in second.kept if e["type"] == "presence"]
    await second.close()


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (b"http://evil.example", b"127.0.0.1:2000", False),
        (b"http://127.0.0.1:2000.evil.example", b"127.0.0.1:2000", False),
        (b"null", b"127.0.0.1:2000", False),
        (b"http://192.168.1.5:2000", b"192.168.1.5:2000", True),  # same origin
        (b"http://LOCALHOST:80", b"localhost", True),  # same origin, default port spelt out
        # Same host, another scheme or port: another site (cookies ignore ports).
        (b"http://127.0.0.1:8080", b"127.0.0.1:2000", False),
        (b"https://127.0.0.1:2000", b"127.0.0.1:2000", False),
        (b"http://localhost:9999", b"localhost:2000", False),
        (b"http://localhost:2000", b"chat.internal", False),  # a listed host is no listed origin
        (b"https://chat.example.com", b"chat.example.com", True),  # in CSRF_TRUSTED_ORIGINS
        (b"https://eu.chat.example.org", b"eu.chat.example.org", True),  # matches https://*.example.org
        (b"http://eu.chat.example.org", b"eu.chat.example.org:443", False),
        (None, b"127.0.0.1:2000", True),  # a program, not a browser
    ],
)
async def test_origin_check(users, settings, origin, host, allowed):
    from channels.testing import WebsocketCommunicator

    from chatsite.asgi import application

    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.example.org"]
    headers = [(b"host", host)] + ([(b"origin", origin)] if origin else [])
    comm = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected_, _ = await comm.connect()
    assert connected_ is allowed
    await comm.disconnect()


# --- send / broadcast / ack -----------------------------------------------------


async def test_send_live_and_stored(users):
    a = await connected("alice")
    b = await connected("bob")
    reply = await a.ok("send", to="bob", body="  hello bob  ")
    assert reply["delivered"] == "live"
    event = await b.event("message")
    assert event == {
        "type": "message",
        "id": reply["id"],
        "kind": "private",
        "from": "alice",
        "to": "bob",
        "body": "hello bob",
        "sent_at": event["sent_at"],
        "edited_at": None,
        "room": None,
        "reply_to": None,
        "reactions": {},
        "attachments": [],
        "stored": False,
    }
    assert event["sent_at"].endswith("+00:00")
    stored = await a.ok("send", to="carol", body="for later")
    assert stored["delivered"] == "stored" and stored["id"] > reply["id"]
    await a.close()
    await b.close()


async def test_send_errors(users, settings):
    a = await connected("alice")
    await a.error("send", "unknown_user", to="nobody", body="hi")
    await a.error("send", "invalid", to="alice", body="me")
    await a.error("send", "invalid", to="bob", body="   ")
    await a.error("send", "invalid", to="bob", body="x" * 4001)
    await a.ok("send", to="bob", body="x" * 4000)
    b = await connected("bob")
    await b.ok("block", username="alice")
    await a.error("send", "blocked", to="bob", body="hi")
    settings.CHAT_RATE_LIMIT_COUNT = 2
    await a.ok("send", to="carol", body="1")
    reply = await a.error("send", "rate_limited", to="carol", body="2")
    assert reply["retry_after"] >= 1
    await a.error("broadcast", "rate_limited", body="3")
    await a.close()
    await b.close()


async def test_pending_messages_arrive_at_next_login_until_acked(users):
    a = await connected("alice")
    ids = [(await a.ok("send", to="bob", body=f"m{i}"))["id"] for i in range(3)]
    b = await connected()
    reply = await b.login("bob")
    assert reply["pending"] == 3
    pushed = [await b.event("message") for _ in ids]
    assert [m["id"] for m in pushed] == ids
    assert all(m["stored"] for m in pushed)
    await b.ok("ack", ids=ids[:2])
    await b.ok("logout")
    b = await connected()
    assert (await b.login("bob"))["pending"] == 1
    assert (await b.event("message"))["id"] == ids[2]
    await b.ok("ack", ids=[ids[2], 999999])  # an unknown id is harmless
    await a.close()
    await b.close()


async def test_broadcast_live_stored_and_blocked(users):
    await amake_user("dave")
    a = await connected("alice")
    b = await connected("bob")
    c = await connected("carol")
    await c.ok("block", username="alice")
    reply = await a.ok("broadcast", body="hello all")
    assert (reply["live"], reply["stored"]) == (1, 1)  # bob live, dave stored, carol blocks
    event = await b.event("message")
    assert event["kind"] == "broadcast" and event["to"] is None and event["from"] == "alice"
    await c.no_frame()
    await a.no_frame()
    d = await connected()
    assert (await d.login("dave"))["pending"] == 1
    for client in (a, b, c, d):
        await client.close()


# --- block / unblock / blocked ----------------------------------------------------


async def test_block_unblock_and_list(users):
    a = await connected("alice")
    await a.ok("block", username="carol")
    await a.ok("block", username="bob")
    assert (await a.ok("blocked"))["users"] == ["bob", "carol"]
    await a.error("block", "already_blocked", username="bob")
    await a.error("block", "unknown_user", username="nobody")
    await a.error("block", "invalid", username="alice")
    await a.ok("unblock", username="bob")
    await a.error("unblock", "not_blocked", username="bob")
    await a.error("unblock", "unknown_user", username="nobody")
    assert (await a.ok("blocked"))["users"] == ["carol"]
    await a.close()


async def test_blocking_drops_what_is_pending_from_that_user(users):
    a = await connected("alice")
    await a.ok("send", to="bob", body="one")
    await a.ok("broadcast", body="two")
    await a.ok("send", to="bob", body="from carol? no, alice")
    await a.close()
    b = await connected()
    c = await connected("carol")
    await c.ok("send", to="bob", body="keep me")
    await c.close()
    await b.ok("login", username="bob", password=PASSWORD)
    await b.ok("ack", ids=[])
    await b.ok("logout")
    b = await connected("bob")
    await b.ok("block", username="alice")
    await b.ok("logout")
    b = await connected()
    assert (await b.login("bob"))["pending"] == 1
    assert (await b.event("message"))["body"] == "keep me"
    assert (await b.ok("history", **{"with": "alice"}))["messages"] == []
    await b.close()


# --- online / recent --------------------------------------------------------------


async def test_online_and_presence_events(users):
    a = await connected("alice")
    assert await a.event("presence", username="alice", online=True)  # every logged-in connection, hers too
    assert (await a.ok("online"))["users"] == ["alice"]
    b = await connected("bob")
    assert await a.event("presence", username="bob", online=True)
    assert (await a.ok("online"))["users"] == ["alice", "bob"]
    await b.close()
    assert await a.event("presence", username="bob", online=False)
    assert (await a.ok("online"))["users"] == ["alice"]
    await a.close()


async def test_recent_lists_online_and_seen_within_the_hour(users):
    User = get_user_model()
    await sync_to_async(User.objects.filter(username="carol").update)(last_seen=timezone.now() - timedelta(hours=2))
    b = await connected("bob")
    await b.ok("logout")
    a = await connected("alice")
    users = (await a.ok("recent"))["users"]
    assert [u["username"] for u in users] == ["alice", "bob"]
    alice, bob = users
    assert alice["online"] is True and bob["online"] is False
    assert alice["last_login"] and bob["last_login"] and bob["last_seen"]
    assert alice["last_seen"] >= alice["last_login"]
    await a.close()


# --- history / conversations / read -------------------------------------------------


async def test_history_pages_oldest_first(users):
    a = await connected("alice")
    ids = [(await a.ok("send", to="bob", body=f"m{i}"))["id"] for i in range(5)]
    await a.ok("broadcast", body="everyone")
    page = (await a.ok("history", limit=2, **{"with": "bob"}))["messages"]
    assert [m["id"] for m in page] == ids[3:]
    earlier = (await a.ok("history", before=ids[3], limit=100, **{"with": "bob"}))["messages"]
    assert [m["id"] for m in earlier] == ids[:3]
    assert set(earlier[0]) == {
        *("id", "kind", "from", "to", "body", "sent_at", "edited_at", "delivered", "read"),
        *("room", "reply_to", "reactions", "attachments"),  # protocol 1.2
    }
    broadcasts = (await a.ok("history", **{"with": None}))["messages"]
    assert [m["body"] for m in broadcasts] == ["everyone"]
    await a.error("history", "unknown_user", **{"with": "nobody"})
    await a.error("history", "invalid", limit=0, **{"with": "bob"})
    await a.error("history", "invalid", limit=101, **{"with": "bob"})
    await a.error("history", "bad_request")
    c = await connected("carol")
    assert (await c.ok("history", **{"with": "bob"}))["messages"] == []  # not hers
    await a.close()
    await c.close()


async def test_conversations_unread_and_read(users):
    a = await connected("alice")
    b = await connected("bob")
    first = (await a.ok("send", to="bob", body="one"))["id"]
    second = (await a.ok("send", to="bob", body="two"))["id"]
    await b.ok("send", to="alice", body="back")
    await a.ok("broadcast", body="all")
    convs = (await b.ok("conversations"))["conversations"]
    assert [c["with"] for c in convs] == [None, "alice"]
    assert convs[0]["unread"] == 1
    assert convs[1]["unread"] == 2 and convs[1]["last"]["body"] == "back"
    await b.ok("read", up_to=first, **{"with": "alice"})
    convs = (await b.ok("conversations"))["conversations"]
    assert convs[1]["unread"] == 1
    await b.ok("read", up_to=second, **{"with": "alice"})
    await b.ok("read", up_to=first, **{"with": "alice"})  # never moves back
    await b.ok("read", up_to=10**9, **{"with": None})
    assert [c["unread"] for c in (await b.ok("conversations"))["conversations"]] == [0, 0]
    await b.error("read", "unknown_user", up_to=1, **{"with": "nobody"})
    await b.error("read", "invalid", up_to="x", **{"with": "alice"})
    await b.error("read", "bad_request", **{"with": "alice"})
    # read is not ack: the messages are still pending for bob.
    assert await sync_to_async(Delivery.objects.filter(recipient__username="bob", acked_at=None).count)() == 3
    await a.close()
    await b.close()


# --- Redelivery and heartbeat -------------------------------------------------------


async def test_unacked_push_is_pushed_again(users, settings):
    settings.CHAT_PUMP_SECONDS = 0.1
    settings.CHAT_REDELIVER_SECONDS = 0.3
    a = await connected("alice")
    b = await connected("bob")
    sent = (await a.ok("send", to="bob", body="ack me"))["id"]
    assert (await b.event("message"))["id"] == sent
    again = await b.event("message", timeout=3)
    assert again["id"] == sent and again["stored"] is False
    await b.ok("ack", ids=[sent])
    b.kept.clear()
    await asyncio.sleep(0.8)  # two redelivery periods: the reader keeps whatever arrives
    assert not [e for e in b.kept if e["type"] == "message"]
    await a.close()
    await b.close()


async def test_dead_connection_expires(users, settings):
    """A row whose heartbeat stopped (its process died) stops counting."""
    settings.CHAT_PUMP_SECONDS = 0.1
    # Long enough that a loaded CI machine's late tick does not expire
    # alice's own live row too (0.5 s did, once).
    settings.CHAT_PRESENCE_TIMEOUT_SECONDS = 2
    a = await connected("alice")
    # bob's row as a crashed process on another host would leave it.
    bob = await sync_to_async(get_user_model().objects.get)(username="bob")
    await sync_to_async(Presence.objects.create)(
        user=bob,
        channel_name="dead!x",
        host="elsewhere",
        pid=1,
        connected_at=timezone.now(),
        heartbeat_at=timezone.now() - timedelta(seconds=1),
    )
    assert (await a.ok("online"))["users"] == ["alice", "bob"]
    assert await a.event("presence", username="bob", online=False, timeout=5)
    assert (await a.ok("online"))["users"] == ["alice"]
    assert not await sync_to_async(Presence.objects.filter(user=bob).exists)()
    # Alice's own heartbeat kept her online throughout.
    await a.close()


async def test_other_users_never_see_a_crash(users):
    """A failing request answers internal_error; others are untouched."""
    from unittest import mock

    a = await connected("alice")
    b = await connected("bob")
    with mock.patch("messaging.selectors.online_usernames", side_effect=RuntimeError("boom")):
        await a.error("online", "internal_error")
    await a.ok("send", to="bob", body="still here")
    assert (await b.event("message"))["body"] == "still here"
    await a.close()
    await b.close()


async def test_admin_disconnect_tells_the_user_why_and_closes(users):
    a = await connected("alice")
    b = await connected("bob")
    alice = await sync_to_async(get_user_model().objects.get)(username="alice")
    await sync_to_async(services.presence_disconnect)(user=alice)
    event = await a.event("session_ended")
    assert "administrator" in event["reason"] and event["action"] == "stop"
    assert await a.closed_with() == 4003
    assert await b.event("presence", username="alice", online=False)
    await b.close()


async def test_batched_presence_carries_every_change_in_one_frame(users, settings):
    settings.CHAT_PRESENCE_BATCH_SECONDS = 1  # room for three logins and a close on a busy machine
    watcher = await connected()
    await watcher.login("alice", presence_batch=True)
    others = [await connected(name) for name in ("bob", "carol")]
    await others[0].close()  # bob came and went: listed once, as he is now
    batch = await watcher.event("presence_batch")  # her own arrival too, as presence events do
    assert batch == {"type": "presence_batch", "online": ["alice", "carol"], "offline": ["bob"]}
    assert not [f for f in watcher.kept if f["type"] == "presence"]
    await others[1].close()
    assert await watcher.event("presence_batch", offline=["carol"])
    await watcher.close()


def test_the_batch_interval_stretches_with_listeners_so_a_storm_stays_linear(settings):
    """Frames per listener over a storm of N logins at a steady login rate:
    storm seconds / interval. With the interval growing with N, that stays
    bounded, so all frames grow with N, not N squared (up to the cap)."""
    from messaging.hub import batch_interval

    settings.CHAT_PRESENCE_BATCH_SECONDS = 1
    settings.CHAT_PRESENCE_BATCH_USERS = 500
    settings.CHAT_PRESENCE_BATCH_MAX_SECONDS = 10
    assert [batch_interval(n) for n in (0, 1, 500, 1000, 2500, 100_000)] == [1, 1, 1, 2, 5, 10]
    logins_per_second = 200
    per_listener = [(n / logins_per_second) / batch_interval(n) for n in (1000, 2000, 4000)]
    assert max(per_listener) == min(per_listener)
    settings.CHAT_PRESENCE_BATCH_MAX_SECONDS = 0  # never below the base interval
    assert batch_interval(5000) == 1


async def test_a_cookie_connection_asks_for_batched_presence_in_its_url(users, settings):
    settings.CHAT_PRESENCE_BATCH_SECONDS = 0.2
    http = Client()
    await sync_to_async(http.login)(username="alice", password=PASSWORD)
    cookie = f"sessionid={http.cookies['sessionid'].value}".encode()
    page = ProtocolClient(headers=[(b"cookie", cookie)])
    page.comm = type(page.comm)(page.comm.application, "/ws/chat/?presence_batch=1", headers=[(b"cookie", cookie)])
    page.transport.comm = page.comm
    await page.connect()
    b = await connected("bob")
    # A batch lists who came online since the one before: alice's own login
    # may go out alone, before bob arrives, and his in a later batch.
    online: list[str] = []
    while "bob" not in online:
        online += (await page.event("presence_batch"))["online"]
    assert sorted(online) == ["alice", "bob"]
    assert not [f for f in page.kept if f["type"] == "presence" and f["username"] == "bob"]
    await b.close()
    await page.close()


async def test_replies_carry_what_the_page_needs(users):
    a = await connected("alice")
    b = await connected("bob")
    sent = await a.ok("send", to="bob", body="hi")
    assert sent["sent_at"].endswith("+00:00")
    assert (await a.ok("broadcast", body="all"))["sent_at"]
    await b.ok("read", up_to=sent["id"], **{"with": "alice"})
    convs = {c["with"]: c for c in (await b.ok("conversations"))["conversations"]}
    assert (convs["alice"]["read_up_to"], convs[None]["read_up_to"]) == (sent["id"], 0)
    await a.close()
    await b.close()


async def test_signup_may_give_an_email_for_a_forgotten_password():
    c = await connected()
    await c.ok("signup", username="dora", password=PASSWORD, email="dora@example.com")
    user = await sync_to_async(get_user_model().objects.get)(username="dora")
    assert user.email == "dora@example.com"
    await c.error("signup", "invalid", username="eve", password=PASSWORD, email="not an address")
    assert not await sync_to_async(get_user_model().objects.filter(username="eve").exists)()
    await c.close()
