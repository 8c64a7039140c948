"""Protocol 1.1 through the consumer: resume tokens, sending exactly once,
receipts, typing, search, edit and delete. On SQLite and PostgreSQL alike."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging import selectors
from messaging.models import ClientRequest, Delivery, Message

from .helpers import PASSWORD, amake_user, connected

pytestmark = [pytest.mark.django_db(transaction=True)]
User = get_user_model()


@pytest.fixture
async def users():
    for name in ("alice", "bob", "carol"):
        await amake_user(name)


async def count(queryset):
    return await sync_to_async(queryset.count)()


# --- Resume tokens ------------------------------------------------------------------


async def test_password_login_gives_a_token_that_logs_in_without_the_password(users):
    a = await connected()
    reply = await a.login("alice")
    token = reply["token"]
    assert isinstance(token, str) and 32 <= len(token) <= 200
    await a.close()
    b = await connected()
    again = await b.ok("login", token=token)
    assert (again["username"], again["token"]) == ("alice", token)
    assert (await b.ok("whoami"))["username"] == "alice"
    await b.close()


async def test_token_login_checks_no_password_and_ignores_the_lockout(users, settings):
    a = await connected()
    token = (await a.login("alice"))["token"]
    await a.close()
    c = await connected()
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        await c.error("login", "invalid_credentials", username="alice", password="wrong")
    await c.error("login", "locked", username="alice", password=PASSWORD)
    # Same IP, same user, locked: the token still works.
    await c.ok("login", token=token)
    await c.close()


async def test_token_with_takeover_moves_the_session(users):
    a = await connected()
    token = (await a.login("alice"))["token"]
    b = await connected()
    await b.error("login", "already_online", token=token)
    await b.ok("login", token=token, takeover=True)
    assert await a.event("session_replaced")
    assert await a.closed_with() == 4001
    await b.close()


async def test_bad_tokens_are_invalid_credentials(users):
    c = await connected()
    await c.error("login", "invalid_credentials", token="not-a-session")
    await c.error("login", "invalid_credentials", token="")
    await c.error("login", "invalid_credentials", token="x" * 201)
    await c.error("login", "bad_request", token=12)
    await c.close()


async def test_logout_ends_the_token(users):
    a = await connected()
    token = (await a.login("alice"))["token"]
    await a.ok("logout")
    b = await connected()
    await b.error("login", "invalid_credentials", token=token)
    await b.close()


async def test_password_change_and_deactivation_end_tokens(users):
    a = await connected()
    token = (await a.login("alice"))["token"]
    await a.close()
    alice = await sync_to_async(User.objects.get)(username="alice")
    alice.set_password("a-new-password-99")
    await sync_to_async(alice.save)()
    b = await connected()
    await b.error("login", "invalid_credentials", token=token)
    token = (await b.login("alice", password="a-new-password-99"))["token"]
    await b.close()
    await sync_to_async(User.objects.filter(username="alice").update)(is_active=False)
    c = await connected()
    await c.error("login", "invalid_credentials", token=token)
    await c.close()


async def test_expired_token(users, settings):
    a = await connected()
    token = (await a.login("alice"))["token"]
    await a.close()
    expiry = await sync_to_async(lambda: Session.objects.get(session_key=token).expire_date)()
    assert expiry > timezone.now() + timedelta(seconds=settings.CHAT_TOKEN_SECONDS - 60)
    await sync_to_async(Session.objects.filter(session_key=token).update)(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    b = await connected()
    await b.error("login", "invalid_credentials", token=token)
    await b.close()


# --- Sending exactly once -----------------------------------------------------------


async def test_a_resend_with_the_same_client_id_stores_nothing(users):
    a = await connected("alice")
    first = await a.ok("send", to="bob", body="once", client_id="c-1")
    again = await a.ok("send", to="bob", body="once", client_id="c-1")
    assert again["id"] == first["id"] and again["delivered"] == first["delivered"] == "stored"
    other = await a.ok("send", to="bob", body="once", client_id="c-2")
    assert other["id"] != first["id"]
    await a.close()
    # From another connection (a client that reconnected), still the same.
    b = await connected()
    await b.login("alice")
    assert (await b.ok("send", to="bob", body="once", client_id="c-1"))["id"] == first["id"]
    assert await count(Message.objects.filter(body="once")) == 2
    assert await count(Delivery.objects.filter(message__body="once")) == 2
    await b.close()


async def test_two_concurrent_sends_with_one_client_id_store_one_message(users):
    a = await connected("alice")
    replies = await asyncio.gather(*(a.request("send", to="bob", body="dup?", client_id="same") for _ in range(4)))
    assert all(r["type"] == "ok" for r in replies), replies
    assert len({r["id"] for r in replies}) == 1
    assert await count(Message.objects.filter(body="dup?")) == 1
    await a.close()


async def test_client_ids_are_per_sender_and_answer_the_first_whatever_the_op(users):
    a = await connected("alice")
    b = await connected("bob")
    x = await a.ok("send", to="carol", body="from alice", client_id="k")
    y = await b.ok("send", to="carol", body="from bob", client_id="k")
    assert x["id"] != y["id"]
    first = await a.ok("broadcast", body="all", client_id="b-1")
    again = await a.ok("broadcast", body="all", client_id="b-1")
    assert (again["id"], again["live"], again["stored"]) == (first["id"], first["live"], first["stored"])
    # k was a private message: a broadcast with it stores nothing and answers that message's id.
    replay = await a.ok("broadcast", body="all again", client_id="k")
    assert (replay["id"], replay["live"] + replay["stored"]) == (x["id"], 1)
    assert (await a.ok("send", to="carol", body="b", client_id="b-1"))["id"] == first["id"]
    await a.error("send", "invalid", to="bob", body="x", client_id="")
    await a.error("send", "invalid", to="bob", body="x", client_id="x" * 65)
    await a.error("send", "invalid", to="bob", body="x", client_id=7)
    await a.close()
    await b.close()


async def test_a_failed_send_does_not_use_up_its_client_id(users):
    a = await connected("alice")
    await a.error("send", "unknown_user", to="nobody", body="hi", client_id="retry")
    assert (await a.ok("send", to="bob", body="hi", client_id="retry"))["id"]
    await a.close()


async def test_client_ids_are_remembered_for_a_day(users):
    a = await connected("alice")
    first = await a.ok("send", to="bob", body="old", client_id="day")
    await sync_to_async(ClientRequest.objects.update)(created_at=timezone.now() - timedelta(hours=25))
    second = await a.ok("send", to="bob", body="new", client_id="day")
    assert second["id"] != first["id"]
    await a.close()


# --- Receipts -----------------------------------------------------------------------


async def test_delivered_receipt_when_the_recipient_first_acks(users):
    a = await connected("alice")
    b = await connected("bob")
    sent = await a.ok("send", to="bob", body="ack me")
    assert (await b.event("message"))["id"] == sent["id"]
    await b.ok("ack", ids=[sent["id"]])
    receipt = await a.event("receipt")
    assert receipt == {"type": "receipt", "status": "delivered", "id": sent["id"], "by": "bob"}
    await b.ok("ack", ids=[sent["id"]])  # not the first time: no receipt
    await a.ok("online")
    assert not [f for f in a.kept if f["type"] == "receipt"]
    # Broadcasts have no receipts.
    everyone = await a.ok("broadcast", body="all")
    await b.event("message", id=everyone["id"])
    await b.ok("ack", ids=[everyone["id"]])
    await a.ok("online")
    assert not [f for f in a.kept if f["type"] == "receipt"]
    await a.close()
    await b.close()


async def test_read_receipt_when_the_recipient_moves_the_mark(users):
    a = await connected("alice")
    b = await connected("bob")
    first = (await a.ok("send", to="bob", body="1"))["id"]
    second = (await a.ok("send", to="bob", body="2"))["id"]
    await b.ok("read", up_to=second, **{"with": "alice"})
    assert await a.event("receipt", status="read") == {
        "type": "receipt",
        "status": "read",
        "by": "bob",
        "up_to": second,
    }
    await b.ok("read", up_to=first, **{"with": "alice"})  # backwards: no move, no receipt
    await a.ok("online")
    assert not [f for f in a.kept if f["type"] == "receipt" and f["status"] == "read"]
    await a.close()
    await b.close()


async def test_an_offline_sender_sees_the_receipts_later_in_history(users):
    a = await connected("alice")
    one = (await a.ok("send", to="bob", body="one"))["id"]
    two = (await a.ok("send", to="bob", body="two"))["id"]
    await a.ok("logout")
    b = await connected()
    await b.login("bob")
    await b.event("message", id=one)
    await b.ok("ack", ids=[one, two])
    await b.ok("read", up_to=one, **{"with": "alice"})
    await b.close()
    a = await connected()
    await a.login("alice")
    history = (await a.ok("history", **{"with": "bob"}))["messages"]
    assert [(m["id"], m["delivered"], m["read"]) for m in history] == [(one, True, True), (two, True, False)]
    last = (await a.ok("conversations"))["conversations"][0]["last"]
    assert (last["id"], last["delivered"], last["read"]) == (two, True, False)
    # What bob sees of alice's messages carries no receipt fields.
    b = await connected()
    await b.login("bob")
    assert "delivered" not in (await b.ok("history", **{"with": "alice"}))["messages"][0]
    await a.close()
    await b.close()


# --- Typing -------------------------------------------------------------------------


async def test_typing_reaches_the_recipient_and_repeats_are_thinned(users):
    a = await connected("alice")
    b = await connected("bob")
    await a.ok("typing", to="bob")
    assert await b.event("typing") == {"type": "typing", "from": "alice", "typing": True}
    await a.ok("typing", to="bob", typing=True)  # within a second: dropped
    await a.ok("typing", to="bob", typing=False)  # stopping always goes through
    assert (await b.event("typing"))["typing"] is False
    await b.ok("online")
    assert not [f for f in b.kept if f["type"] == "typing"]
    await a.close()
    await b.close()


async def test_typing_errors_and_a_blocking_recipient(users):
    a = await connected("alice")
    b = await connected("bob")
    await a.error("typing", "invalid", to="alice")
    await a.error("typing", "unknown_user", to="nobody")
    await a.error("typing", "invalid", to="bob", typing="yes")
    await a.error("typing", "bad_request")
    await b.ok("block", username="alice")
    await a.ok("typing", to="bob")  # answered, but bob hears nothing
    await b.no_frame(0.3)
    assert not await count(Message.objects.all())  # nothing stored
    await a.close()
    await b.close()


# --- Search -------------------------------------------------------------------------


async def test_search_words_any_order_case_insensitive_last_word_prefix(users):
    a = await connected("alice")
    await a.ok("send", to="bob", body="The quick brown fox")
    await a.ok("send", to="bob", body="a lazy dog")
    newest = (await a.ok("send", to="bob", body="Brown dogs are QUICK too"))["id"]
    found = (await a.ok("search", query="quick BROWN"))["messages"]
    assert [m["body"] for m in found] == ["Brown dogs are QUICK too", "The quick brown fox"]
    assert found[0]["id"] == newest and found[0]["delivered"] is False  # message objects
    assert [m["body"] for m in (await a.ok("search", query="do"))["messages"]] == [
        "Brown dogs are QUICK too",
        "a lazy dog",
    ]
    assert (await a.ok("search", query="fo brown"))["messages"] == []  # only the last word is a prefix
    assert (await a.ok("search", query="?!"))["messages"] == []
    await a.close()


async def test_search_only_sees_what_the_user_could_see(users):
    a = await connected("alice")
    b = await connected("bob")
    c = await connected("carol")
    await a.ok("send", to="bob", body="secret plans")
    await b.ok("send", to="alice", body="secret reply")
    await c.ok("broadcast", body="secret party")
    assert (await c.ok("search", query="secret"))["messages"][0]["body"] == "secret party"
    assert len((await c.ok("search", query="secret"))["messages"]) == 1
    assert {m["body"] for m in (await a.ok("search", query="secret"))["messages"]} == {
        "secret plans",
        "secret reply",
        "secret party",
    }
    assert [m["body"] for m in (await a.ok("search", query="secret", **{"with": "bob"}))["messages"]] == [
        "secret reply",
        "secret plans",
    ]
    assert [m["body"] for m in (await a.ok("search", query="secret", **{"with": None}))["messages"]] == ["secret party"]
    # A block drops what was pending from that user, and it is no longer found.
    await c.ok("block", username="bob")
    await b.ok("send", to="alice", body="more secret")
    page = (await a.ok("search", query="secret", limit=2))["messages"]
    assert [m["body"] for m in page] == ["more secret", "secret party"]
    older = (await a.ok("search", query="secret", before=page[-1]["id"]))["messages"]
    assert [m["body"] for m in older] == ["secret reply", "secret plans"]
    for client in (a, b, c):
        await client.close()


async def test_search_finds_emoji_and_other_symbols(users, monkeypatch):
    """Issue 24.6: neither index has a token for 🎉, so a search for it found
    nothing; a query of symbols alone now scans the user's newest messages."""
    a = await connected("alice")
    b = await connected("bob")
    c = await connected("carol")
    await b.ok("send", to="alice", body="we won 🎉")
    await a.ok("send", to="bob", body="🎉🎉 party ¯\\_(ツ)_/¯")
    await c.ok("send", to="bob", body="not for alice 🎉")
    await b.ok("broadcast", body="🎉 for everyone")
    found = (await a.ok("search", query="🎉"))["messages"]
    assert [m["body"] for m in found] == ["🎉 for everyone", "🎉🎉 party ¯\\_(ツ)_/¯", "we won 🎉"]
    assert [m["body"] for m in (await a.ok("search", query="🎉", **{"with": "bob"}))["messages"]] == [
        "🎉🎉 party ¯\\_(ツ)_/¯",
        "we won 🎉",
    ]
    assert [m["body"] for m in (await a.ok("search", query="🎉 ¯\\_(ツ)_/¯"))["messages"]] == ["🎉🎉 party ¯\\_(ツ)_/¯"]
    page = (await a.ok("search", query="🎉", limit=1))["messages"]
    older = (await a.ok("search", query="🎉", before=page[0]["id"]))["messages"]
    assert [m["body"] for m in older] == ["🎉🎉 party ¯\\_(ツ)_/¯", "we won 🎉"]
    # Bounded: only the newest SYMBOL_SCAN of one's messages are looked at.
    monkeypatch.setattr(selectors, "SYMBOL_SCAN", 1)
    assert [m["body"] for m in (await a.ok("search", query="🎉"))["messages"]] == [
        "🎉 for everyone",
        "🎉🎉 party ¯\\_(ツ)_/¯",
    ]
    for client in (a, b, c):
        await client.close()


async def test_search_errors(users):
    a = await connected("alice")
    await a.error("search", "invalid", query="")
    await a.error("search", "invalid", query="x" * 201)
    await a.error("search", "invalid", query="x", limit=0)
    await a.error("search", "invalid", query="x", limit=101)
    await a.error("search", "unknown_user", query="x", **{"with": "nobody"})
    await a.error("search", "bad_request")
    await a.close()


@pytest.mark.django_db(transaction=True)
def test_search_uses_the_full_text_index(users):
    """The query that `search` runs goes through FTS5 (SQLite), or through
    the user's own ids and the GIN index expression (PostgreSQL): never a
    scan of every body."""
    alice = User.objects.get(username="alice")
    with CaptureQueriesContext(connection) as queries:
        assert selectors.message_search(user=alice, query="secret pla") == []
    sql = queries[0]["sql"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")  # a tiny table would be scanned anyway
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("SET enable_seqscan = on")
            assert "Seq Scan" not in plan, plan
            assert "to_tsvector('simple'::regconfig, COALESCE(body, ''::text)) @@" in plan, plan
            assert "recipient_id = " in plan and "sender_id = " in plan, plan
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
            assert "VIRTUAL TABLE INDEX" in plan and "messaging_message_fts" in plan, plan
            assert "SCAN messaging_message\n" not in plan + "\n", plan


# --- Edit and delete ----------------------------------------------------------------


async def test_edit_reaches_the_online_recipient_and_shows_in_history(users):
    a = await connected("alice")
    b = await connected("bob")
    sent = (await a.ok("send", to="bob", body="teh typo"))["id"]
    await b.event("message", id=sent)
    reply = await a.ok("edit", id=sent, body="  the fix  ")
    edited = await b.event("message_edited")
    assert edited == {"type": "message_edited", "id": sent, "body": "the fix", "edited_at": reply["edited_at"]}
    [message] = (await b.ok("history", **{"with": "alice"}))["messages"]
    assert (message["body"], message["edited_at"]) == ("the fix", reply["edited_at"])
    assert (await b.ok("search", query="fix"))["messages"][0]["id"] == sent
    assert (await b.ok("search", query="typo"))["messages"] == []
    await a.close()
    await b.close()


async def test_edit_and_delete_errors(users):
    a = await connected("alice")
    b = await connected("bob")
    mine = (await a.ok("send", to="bob", body="mine"))["id"]
    await b.error("edit", "unknown_message", id=mine, body="not yours")
    await b.error("delete", "unknown_message", id=mine)
    await a.error("edit", "unknown_message", id=10**9, body="x")
    await a.error("delete", "unknown_message", id=10**9)
    await a.error("edit", "invalid", id=mine, body="   ")
    await a.error("edit", "invalid", id=mine, body="x" * 4001)
    await a.error("edit", "invalid", id="one", body="x")
    await a.error("delete", "unknown_message", id="one")
    await a.error("edit", "bad_request", id=mine)
    await a.error("delete", "bad_request")
    await a.ok("delete", id=mine)
    await a.error("delete", "unknown_message", id=mine)
    await a.error("edit", "unknown_message", id=mine, body="too late")
    await a.close()
    await b.close()


async def test_an_edit_of_a_pending_message_is_delivered_edited(users):
    a = await connected("alice")
    sent = (await a.ok("send", to="bob", body="draft"))["id"]
    await a.ok("edit", id=sent, body="final")
    b = await connected()
    assert (await b.login("bob"))["pending"] == 1
    message = await b.event("message")
    assert (message["id"], message["body"], message["stored"]) == (sent, "final", True)
    assert message["edited_at"]
    await a.close()
    await b.close()


async def test_delete_is_gone_everywhere_and_pending_never_arrives(users):
    a = await connected("alice")
    c = await connected("carol")
    gone = (await a.ok("send", to="bob", body="oops wrong person"))["id"]
    kept = (await a.ok("send", to="bob", body="the right one"))["id"]
    everyone = (await a.ok("broadcast", body="oops everyone"))["id"]
    await c.event("message", id=everyone)
    await a.ok("delete", id=gone)
    await a.ok("delete", id=everyone)
    assert await c.event("message_deleted") == {"type": "message_deleted", "id": everyone}
    b = await connected()
    assert (await b.login("bob"))["pending"] == 1
    assert (await b.event("message"))["id"] == kept
    await b.no_frame(0.3)
    for who in (a, b):
        assert [m["id"] for m in (await who.ok("history", **{"with": "alice" if who is b else "bob"}))["messages"]] == [
            kept
        ]
        assert (await who.ok("search", query="oops"))["messages"] == []
        assert all(c_["last"]["id"] not in (gone, everyone) for c_ in (await who.ok("conversations"))["conversations"])
    assert await sync_to_async(lambda: Message.objects.get(pk=gone).body)() == ""
    for client in (a, b, c):
        await client.close()


async def test_a_broadcast_edit_skips_those_who_block_the_sender(users):
    a = await connected("alice")
    b = await connected("bob")
    c = await connected("carol")
    await c.ok("block", username="alice")
    sent = (await a.ok("broadcast", body="hello"))["id"]
    await b.event("message", id=sent)
    await a.ok("edit", id=sent, body="hello all")
    assert (await b.event("message_edited"))["body"] == "hello all"
    await c.no_frame(0.3)
    await a.no_frame(0.1)
    for client in (a, b, c):
        await client.close()


async def test_a_delete_racing_the_delivery(users):
    """Whatever the order, bob ends with nothing of the deleted messages
    shown: each he was pushed is followed by its deletion."""
    a = await connected("alice")
    ids = [(await a.ok("send", to="bob", body=f"m{i}"))["id"] for i in range(30)]
    b = await connected()
    await asyncio.gather(b.login("bob"), *(a.ok("delete", id=i) for i in ids))
    await b.ok("online")
    await asyncio.sleep(0.2)
    await b.ok("online")
    pushed = [f["id"] for f in b.kept if f["type"] == "message"]
    deleted = {f["id"] for f in b.kept if f["type"] == "message_deleted"}
    assert set(pushed) <= deleted
    for message_id in pushed:
        frames = [f for f in b.kept if f.get("id") == message_id]
        assert [f["type"] for f in frames][-1] == "message_deleted"
    assert (await b.ok("history", **{"with": "alice"}))["messages"] == []
    assert await sync_to_async(selectors.pending_count)(user=await sync_to_async(User.objects.get)(username="bob")) == 0
    await a.close()
    await b.close()


async def test_search_treats_query_syntax_as_words(users):
    """FTS5 and tsquery operators in a query are just punctuation."""
    a = await connected("alice")
    await a.ok("send", to="bob", body='tom\'s "quoted" (stuff) & more | less')
    for query in ['"quoted"', "tom's", "stuff) OR (x", "NEAR(tom more)", "* & | ! :*", "more -less", "st*"]:
        reply = await a.request("search", query=query)
        assert reply["type"] == "ok", (query, reply)
    assert len((await a.ok("search", query='"quoted" (stuff)'))["messages"]) == 1
    assert (await a.ok("search", query="stuff OR nothing"))["messages"] == []  # OR is a word, not an operator
    await a.close()


async def test_an_edit_over_the_rate_limit_is_rate_limited_and_changes_nothing(users, settings):
    settings.CHAT_RATE_LIMIT_COUNT, settings.CHAT_RATE_LIMIT_SECONDS = 2, 60
    a = await connected("alice")
    b = await connected("bob")
    sent = (await a.ok("send", to="bob", body="v0"))["id"]
    await b.event("message", id=sent)
    await a.ok("edit", id=sent, body="v1")
    refused = await a.error("edit", "rate_limited", id=sent, body="x" * 4000)
    assert 1 <= refused["retry_after"] <= 60
    assert (await b.event("message_edited"))["body"] == "v1"
    await b.no_frame(0.3)
    [message] = (await b.ok("history", **{"with": "alice"}))["messages"]
    assert message["body"] == "v1"
    await a.close()
    await b.close()
