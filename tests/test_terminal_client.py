"""The terminal client: its logic against a real server, and the real
program in a pseudo-terminal (pexpect) and in tmux (what the screen shows)."""

import asyncio
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pexpect
import pytest
import websockets
from channels.db import database_sync_to_async
from django.contrib.auth.hashers import make_password
from prompt_toolkit.document import Document

from accounts.models import User
from chatclient import connection, protocol
from chatclient.client import ChatClient
from chatclient.commands import COMMANDS, HELP
from chatclient.connection import ConnectFailed, NotAChatServer
from chatclient.protocol import Closed
from chatclient.text import render_message
from chatclient.tui import ChatCompleter
from messaging.models import Message, Presence

from .conftest import need
from .helpers import PASSWORD
from .servers import ROOT, Peer, Server, free_port, signup

pytestmark = pytest.mark.django_db(transaction=True)


class Lines(list):
    async def wait_for(self, text, timeout=10):
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(text in line for line in self):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} not in {self!r}")
            await asyncio.sleep(0.02)
        return next(line for line in self if text in line)

    def count(self, text):
        return sum(text in line for line in self)


async def client_for(server, username=None, **options):
    lines = Lines()
    client = ChatClient(server.url, lines.append, **options)
    await client.connect()
    if username:
        assert await client.login(username, PASSWORD) is None
    return client, lines


def restart_soon(server):
    """Start a stopped server in a thread; await the result."""
    return asyncio.get_running_loop().run_in_executor(None, server.start)


# --- The client's logic against a live server ----------------------------------------


async def test_commands_and_incoming_messages(server):
    await signup(server.url, "alice", "bob")
    alice, alice_lines = await client_for(server, "alice")
    bob, bob_lines = await client_for(server, "bob")
    await alice_lines.wait_for("* bob is online")
    await alice.execute("/msg bob hello there")
    line = await bob_lines.wait_for("hello there")
    assert line.endswith("] alice: hello there")
    await alice.execute("plain text follows the last conversation")
    await bob_lines.wait_for("] alice: plain text follows")
    await alice.execute("/all to all")
    await bob_lines.wait_for("alice → everyone: to all")
    await alice_lines.wait_for("(to everyone: 1 online now, 0 later)")
    await bob.execute("/block alice")
    await alice.execute("/msg bob still there?")
    await alice_lines.wait_for("Not sent: bob does not accept your messages.")
    await bob.execute("/blocked")
    await bob_lines.wait_for("You block: alice")
    await bob.execute("/unblock alice")
    await alice.execute("/msg nobody hi")
    await alice_lines.wait_for("Not sent: There is no user called nobody.")
    await alice.execute("/online")
    await alice_lines.wait_for("Online now (2): alice, bob")
    await alice.execute("/history bob")
    await alice_lines.wait_for("--- 2 message(s) with bob ---")
    await alice.execute("/frobnicate")
    await alice_lines.wait_for("Unknown command /frobnicate")
    assert await alice.execute("/logout") is False
    await bob_lines.wait_for("* alice is offline")
    await bob.close()


async def test_history_never_sends_plain_text_to_everyone(server):
    """Defect 1: `/history` without a name used to point plain text at everyone."""
    await signup(server.url, "alice", "bob", "carol")
    async with Peer(server.url) as bob, Peer(server.url) as carol:
        await bob.ok("login", username="bob", password=PASSWORD)
        await carol.ok("login", username="carol", password=PASSWORD)
        alice, lines = await client_for(server, "alice")
        await alice.execute("/msg bob hi")
        await bob.event("message", body="hi")
        await alice.execute("/history")
        await lines.wait_for("to everyone")
        await alice.execute("just for bob")
        assert (await bob.event("message", timeout=5))["body"] == "just for bob"
        assert not any("(to everyone" in line for line in lines)
        assert alice.prompt() == "to bob > "
        await alice.execute("/history carol")
        assert alice.prompt() == "to bob > "
        assert not await database_sync_to_async(Message.objects.filter(kind="broadcast").exists)()
        await alice.close()


async def test_a_private_message_gives_plain_text_somewhere_to_go(server):
    """Defect 4: after waited messages from alice, plain text answers alice;
    but a message never takes plain text away from a conversation the person
    chose (that is what /reply is for)."""
    await signup(server.url, "alice", "bob", "carol")
    async with Peer(server.url) as alice:
        await alice.ok("login", username="alice", password=PASSWORD)
        await alice.ok("send", to="bob", body="are you there?")
        await alice.ok("send", to="bob", body="hello?")
        bob, lines = await client_for(server, "bob")
        await lines.wait_for("hello?")
        assert bob.prompt() == "to alice > "
        await bob.execute("thanks alice")
        assert (await alice.event("message", timeout=5))["body"] == "thanks alice"
        assert not any("Who is that for" in line for line in lines)

        await bob.execute("/msg carol lunch?")
        await alice.ok("send", to="bob", body="one more thing")
        await lines.wait_for("one more thing")
        assert bob.prompt() == "to carol > "
        await bob.execute("/reply go on")
        assert (await alice.event("message", timeout=5))["body"] == "go on"
        assert bob.prompt() == "to alice > "
        await bob.close()


async def test_waiting_messages_are_marked_acked_and_shown_once(server):
    await signup(server.url, "alice", "bob")
    async with Peer(server.url) as alice:
        await alice.ok("login", username="alice", password=PASSWORD)
        sent = await alice.ok("send", to="bob", body="while you were out")
    bob, lines = await client_for(server, "bob")
    line = await lines.wait_for("while you were out")
    assert "(waited while you were offline)" in line
    assert "1 message(s) waited" in lines[0]
    # The same id pushed again (a re-delivery) is not shown twice.
    await bob.on_event(
        {
            "type": "message",
            "id": sent["id"],
            "kind": "private",
            "from": "alice",
            "to": "bob",
            "body": "while you were out",
            "sent_at": "2026-01-01T00:00:00+00:00",
            "stored": False,
        }
    )
    assert lines.count("while you were out") == 1
    await bob.close()
    # It was acked: nothing waits at the next login.
    bob, lines = await client_for(server, "bob")
    assert "waited" not in lines[0]
    await bob.close()


async def test_reconnects_after_the_server_restarts(server):
    await signup(server.url, "alice")
    alice, lines = await client_for(server, first_delay=0.2, max_delay=1)
    asked, request = [], alice.request

    async def recording(type, **fields):
        asked.append(type)
        return await request(type, **fields)

    alice.request = recording
    assert await alice.login("alice", PASSWORD) is None
    await asyncio.sleep(0.3)
    assert {"online", "recent"} <= set(asked)  # names for Tab, at the first login
    server.stop()
    await lines.wait_for("Connection lost")
    asked.clear()
    await restart_soon(server)
    await lines.wait_for("Reconnected as alice.")
    await asyncio.sleep(0.3)
    # Not again: after a restart every client asking moves N² names.
    assert not {"online", "recent"} & set(asked)
    await alice.execute("/online")
    await lines.wait_for("Online now (1): alice")
    await alice.close()


async def test_reconnects_with_the_token_never_the_password(server):
    await signup(server.url, "alice")
    alice, lines = await client_for(server, "alice", first_delay=0.2, max_delay=1)
    assert alice.token
    assert PASSWORD not in repr(vars(alice))
    server.stop()
    await lines.wait_for("Connection lost")
    await restart_soon(server)
    await lines.wait_for("Reconnected as alice.")
    assert PASSWORD not in repr(vars(alice))
    await alice.close()


async def test_every_message_arrives_once_through_a_restart(server):
    """A long outage (scaled down): both clients keep trying; what was typed
    meanwhile is sent once it is back; everything is shown and stored once."""
    await signup(server.url, "alice", "bob")
    alice, a = await client_for(server, "alice", first_delay=0.2, max_delay=2)
    bob, b = await client_for(server, "bob", first_delay=0.2, max_delay=2)
    await bob.execute("/msg alice before")
    await a.wait_for("bob: before")
    server.stop()
    await a.wait_for("Connection lost")
    await b.wait_for("Connection lost")
    await alice.execute("/msg bob while down 1")
    await alice.execute("while down 2")
    await bob.execute("/msg alice while down 3")
    while a.count("Still no connection") < 5 or b.count("Still no connection") < 5:
        await asyncio.sleep(0.1)
    await restart_soon(server)
    await a.wait_for("Reconnected as alice.")
    await b.wait_for("Reconnected as bob.")
    await bob.execute("after")
    await a.wait_for("bob: after")
    await b.wait_for("alice: while down 2")
    assert a.count("bob: before") == a.count("bob: while down 3") == a.count("bob: after") == 1
    assert b.count("alice: while down 1") == b.count("alice: while down 2") == 1
    bodies = await database_sync_to_async(lambda: sorted(Message.objects.values_list("body", flat=True)))()
    assert bodies == ["after", "before", "while down 1", "while down 2", "while down 3"]
    await alice.close()
    await bob.close()


class LosesAnAnswer:
    """A transport that, when armed, loses the `ok` of the next send and the
    connection with it: as when a link dies between the server's commit and
    its reply reaching the client."""

    armed = False

    def __init__(self, inner):
        self.inner = inner

    async def send(self, text):
        await self.inner.send(text)

    async def recv(self):
        frame = await self.inner.recv()
        if LosesAnAnswer.armed and '"delivered"' in frame:
            LosesAnAnswer.armed = False
            await self.inner.close()
            raise Closed(None)
        return frame

    async def close(self):
        await self.inner.close()


async def test_a_send_whose_answer_was_lost_is_stored_once(server, monkeypatch):
    async def flaky_connect(url, **options):
        return LosesAnAnswer(await protocol.connect(url, **options))

    await signup(server.url, "alice", "bob")
    monkeypatch.setattr(connection, "connect", flaky_connect)
    async with Peer(server.url) as bob:
        await bob.ok("login", username="bob", password=PASSWORD)
        alice, lines = await client_for(server, "alice", first_delay=0.2, max_delay=1)
        LosesAnAnswer.armed = True
        await alice.execute("/msg bob exactly once")
        await lines.wait_for("(the connection dropped")
        await lines.wait_for("(sent to bob: exactly once)")
        assert (await bob.event("message"))["body"] == "exactly once"
        assert await database_sync_to_async(Message.objects.filter(body="exactly once").count)() == 1
        await alice.close()


async def wait_until(condition, timeout=10):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


async def test_receipts_both_ways(server):
    await signup(server.url, "alice", "bob")
    async with Peer(server.url) as bob:
        await bob.ok("login", username="bob", password=PASSWORD)
        alice, lines = await client_for(server, "alice")
        await alice.execute("/msg bob lunch?")
        sent = await bob.event("message")
        assert "your last message to bob: sent" in alice.status()
        await bob.ok("ack", ids=[sent["id"]])
        await wait_until(lambda: "your last message to bob: delivered" in alice.status())
        await bob.ok("read", **{"with": "alice", "up_to": sent["id"]})
        await wait_until(lambda: "your last message to bob: read" in alice.status())
        await alice.execute("/history bob")
        await lines.wait_for(f"you → bob: lunch? (read, #{sent['id']})")
        # What alice's client shows, it acks and marks read.
        answer = await bob.ok("send", to="alice", body="sure")
        await lines.wait_for("bob: sure")
        assert (await bob.event("receipt", status="delivered"))["id"] == answer["id"]
        assert (await bob.event("receipt", status="read"))["up_to"] == answer["id"]
        await alice.close()


async def test_typing_both_ways(server):
    await signup(server.url, "alice", "bob")
    now = [1000.0]
    async with Peer(server.url) as bob:
        await bob.ok("login", username="bob", password=PASSWORD)
        alice, _ = await client_for(server, "alice", clock=lambda: now[0])
        await bob.ok("typing", to="alice")
        await wait_until(lambda: "bob is typing…" in alice.status())
        now[0] += 7  # no repeat for longer than 6 s
        assert "typing" not in alice.status()
        await asyncio.sleep(1.1)  # the server drops repeats within a second
        await bob.ok("typing", to="alice")
        await wait_until(lambda: "bob is typing…" in alice.status())
        await bob.ok("typing", to="alice", typing=False)
        await wait_until(lambda: "typing" not in alice.status())

        await alice.execute("/msg bob hi")
        await bob.event("message", body="hi")
        told = []
        notify = alice.conn.notify

        async def spy(type, **fields):
            if type == "typing":
                told.append(fields["typing"])
            await notify(type, **fields)

        alice.conn.notify = spy
        for text, later in (("h", 0), ("he", 1), ("hel", 1), ("hell", 1.5)):
            now[0] += later
            alice.typed(text)
        await asyncio.gather(*alice.chores)
        assert told == [True, True]  # at 0 s and 3.5 s, not in between
        assert (await bob.event("typing"))["typing"] is True
        await alice.execute("hello")
        await asyncio.gather(*alice.chores)
        assert told == [True, True, False]
        assert (await bob.event("typing", typing=False))["from"] == "alice"
        await alice.close()


async def test_search_edit_and_delete(server):
    await signup(server.url, "alice", "bob")
    alice, a = await client_for(server, "alice")
    bob, b = await client_for(server, "bob")
    await alice.execute("/msg bob lunch at noon?")
    await b.wait_for("alice: lunch at noon?")
    await alice.execute("dinner later")
    await b.wait_for("alice: dinner later")
    await alice.execute("/edit dinner tonight")
    await a.wait_for("(edited #")
    await b.wait_for("alice edited: dinner tonight")
    await alice.execute("/search lun")
    await a.wait_for("--- 1 message(s) with “lun” ---")
    assert "you → bob: lunch at noon?" in a[-1]
    first = min(alice.sent)
    await alice.execute(f"/edit #{first} lunch at one?")
    await b.wait_for("alice edited: lunch at one?")
    await alice.execute("/delete")
    await b.wait_for("alice deleted their message of")
    await bob.execute("/history alice")
    await b.wait_for("--- 1 message(s) with alice ---")
    assert b[-1].endswith(f"alice: lunch at one? (edited, #{first})")  # ids: for /reply and /react
    await bob.execute("/search dinner")
    await b.wait_for("No messages with “dinner”.")
    await alice.execute("/delete #999999")
    await a.wait_for("Not deleted: You have no such message")
    await alice.close()
    await bob.close()


async def test_rooms_in_the_terminal_client(server):
    """Issue 20: rooms, replies and reactions from the terminal."""
    await signup(server.url, "alice", "bob", "carol")
    now = [1000.0]
    alice, a = await client_for(server, "alice")
    bob, b = await client_for(server, "bob", clock=lambda: now[0])
    await alice.execute("/create team bob")
    await a.wait_for("Created #team with 2 member(s).")
    assert alice.prompt() == "to #team > "
    await b.wait_for("* you were added to the new room #team")
    await alice.execute("hi team")
    line = await b.wait_for("hi team")
    assert "] #team alice: hi team (#" in line
    await bob.execute("/rooms")
    await b.wait_for("#team")
    await bob.execute("/room team")
    assert bob.prompt() == "to #team > "
    await bob.execute("/members")
    await b.wait_for("Members of #team (2): alice (admin) (online), bob (online)")

    await alice.execute("/invite carol")
    await b.wait_for("* carol was added to #team")
    await alice.execute("welcome carol")
    await b.wait_for("welcome carol")
    carol, c = await client_for(server, "carol")
    await c.wait_for("#team alice: welcome carol")  # waited: shown with its room's name
    await asyncio.sleep(0.5)  # the read mark the client sends for what it showed
    await carol.execute("/rooms")
    await c.wait_for("(3 members, id ")  # nothing unread
    await carol.execute("/room #team")
    await carol.execute("/history")
    await c.wait_for("--- 1 message(s) in #team ---")  # not what was said before carol came
    first = list(alice.sent)[-1]
    await carol.execute(f"/reply #{first} hello alice")
    line = await a.wait_for("hello alice")
    assert f"#team carol: ↪ alice #{first} “welcome carol” hello alice" in line
    await bob.execute(f"/react #{first} 👍")
    await a.wait_for(f"(bob reacted 👍 to #{first})")
    await c.wait_for(f"(bob reacted 👍 to #{first})")
    await bob.execute(f"/unreact #{first} 👍")
    await a.wait_for(f"(bob took back 👍 on #{first})")
    await carol.execute("/search hello")
    await c.wait_for("--- 1 message(s) with “hello” (in #team) ---")

    carol.typed("typing here")
    await wait_until(lambda: "carol is typing in #team…" in bob.status())
    await alice.execute("/rename crew")
    await b.wait_for("* #team is now called #crew")
    assert bob.prompt() == "to #crew > "
    await bob.execute("/rename nope")
    await b.wait_for("Not renamed: Only an admin of the room may do that.")
    await alice.execute("/kick carol")
    await b.wait_for("* carol was removed from #crew")
    await c.wait_for("* you were removed from #crew")
    assert carol.prompt() == "> "
    await bob.execute("/leave")
    await b.wait_for("You left #crew.")
    await a.wait_for("* bob left #crew")
    await alice.execute("/members")
    await a.wait_for("Members of #crew (1): alice (admin) (online)")
    for client in (alice, bob, carol):
        await client.close()


def test_room_commands_complete_and_render():
    client = ChatClient("ws://unused/", print)
    client.known = {"alice", "bob"}
    client.rooms = {7: {"id": 7, "name": "team", "member_count": 2, "admin": True, "unread": 0}}
    assert client.completions("/ro") == ["/rooms", "/room"]
    assert client.completions("/room t") == ["team"]
    assert client.completions("/invite alice b") == ["bob"]
    assert client.completions("/create crew a") == ["alice"]
    assert client.completions("/create a") == []  # the room's name
    message = {"id": 9, "kind": "room", "room": 7, "from": "bob", "to": None, "body": "yes",
               "sent_at": "2020-01-01T10:00:00+00:00", "reactions": {"👍": ["alice"]},
               "reply_to": {"id": 8, "from": "alice", "excerpt": "lunch? " * 20}}  # fmt: skip
    line = render_message(message, "alice", rooms={7: "team"})
    assert line.endswith("#team bob: ↪ alice #8 “lunch? lunch? lunch? lunch? lunch? lunc…” yes (👍 1, #9)")


async def test_a_delete_that_overtakes_its_message_hides_it():
    lines = Lines()
    client = ChatClient("ws://unused/", lines.append)
    client.username = "bob"
    await client.on_event({"type": "message_deleted", "id": 7})
    await client.on_event(
        {"type": "message", "id": 7, "kind": "private", "from": "alice", "to": "bob", "body": "oops",
         "sent_at": "2026-01-01T00:00:00+00:00", "stored": False, "edited_at": None}
    )  # fmt: skip
    assert lines == []


def change_password(username, password):
    """As the admin does, with the server's hasher (MD5 in the suite: tests/servers.py)."""
    user = User.objects.get(username=username)
    user.password = make_password(password)
    user.save()


async def test_a_new_password_elsewhere_asks_to_log_in_again(server):
    await signup(server.url, "alice")
    alice, lines = await client_for(server, "alice", first_delay=0.2, max_delay=1)

    await database_sync_to_async(change_password)("alice", PASSWORD + "-new")
    await asyncio.wait_for(alice.finished.wait(), 10)
    assert alice.ended.login_again and "log in again" in alice.ended.message
    alice.restart()
    assert await alice.login("alice", PASSWORD + "-new") is None
    await alice.execute("/online")
    await lines.wait_for("Online now (1): alice")
    await alice.close()


async def test_keeps_trying_through_a_long_outage(server):
    """Defect 8: it used to give up after 8 tries (about 2 minutes)."""
    await signup(server.url, "alice")
    alice, lines = await client_for(server, "alice", first_delay=0.01, max_delay=0.05)
    server.stop()
    while lines.count("Still no connection") < 12:
        await lines.wait_for("Still no connection")
        await asyncio.sleep(0.05)
    assert not alice.finished.is_set()
    assert "next try in" in lines[-1]
    assert not alice.online
    await restart_soon(server)
    await lines.wait_for("Reconnected as alice.")
    assert not alice.finished.is_set()
    await alice.close()


async def test_back_within_seconds_of_the_server(server):
    """Issue 24.1: the wait between tries grew to 30 s, so a client came back
    many seconds after the server did; it is capped at 5 s now."""
    await signup(server.url, "alice")
    alice, lines = await client_for(server, "alice")
    server.stop()
    await lines.wait_for("Connection lost")
    await asyncio.sleep(14)  # four failed tries: the old fifth wait was 12-16 s
    await restart_soon(server)
    began = time.monotonic()
    await lines.wait_for("Reconnected as alice.", timeout=30)
    assert time.monotonic() - began < 8
    assert all(float(line.rsplit("in ", 1)[1].split()[0]) <= 5 for line in lines if "next try in" in line)
    await alice.close()


async def test_an_empty_line_tries_again_at_once(server):
    """Issue 24.1: there was no "retry now"; Enter on an empty line is one."""
    await signup(server.url, "alice")
    alice, lines = await client_for(server, "alice", first_delay=30, max_delay=30)
    server.stop()
    await lines.wait_for("Enter on an empty line: now", timeout=20)
    await restart_soon(server)
    began = time.monotonic()
    await alice.execute("")
    await lines.wait_for("Reconnected as alice.", timeout=10)
    assert time.monotonic() - began < 5  # the wait it announced was 15-30 s
    await alice.close()


async def test_an_expired_connection_reconnects(server):
    """Defect 9: "Your connection expired; reconnect." used to end the client."""
    await signup(server.url, "alice", "bob")
    alice, lines = await client_for(server, "alice", first_delay=0.2, max_delay=1)
    # What a server sees when a connection's presence expired (e.g. the
    # database was unreachable for longer than the heartbeat timeout).
    await database_sync_to_async(Presence.objects.filter(user__username="alice").delete)()
    await lines.wait_for("Reconnected as alice.")
    assert not alice.finished.is_set() and alice.ended is None
    async with Peer(server.url) as bob:
        await bob.ok("login", username="bob", password=PASSWORD)
        await bob.ok("send", to="alice", body="still there?")
        await lines.wait_for("still there?")
    await alice.close()


async def test_an_administrator_ending_the_session_ends_the_client(server):
    await signup(server.url, "alice")
    alice, lines = await client_for(server, "alice", first_delay=0.2, max_delay=1)
    # What the server sends before it closes with 4003 (the admin's action).
    await alice.on_event({"type": "session_ended", "reason": "An administrator ended your session."})
    await alice.conn.close()
    await asyncio.wait_for(alice.finished.wait(), 10)
    assert alice.ended.code == 6 and "administrator" in alice.ended.message
    assert not any("Reconnect" in line for line in lines)
    await alice.close()


async def test_the_login_deadline_goes_unnoticed(transactional_db):
    """The server ends anonymous connections after CHAT_LOGIN_DEADLINE_SECONDS:
    a person who takes longer at the menu still just logs in."""
    server = Server(CHAT_LOGIN_DEADLINE_SECONDS=2).start()
    try:
        await signup(server.url, "alice")
        alice, lines = await client_for(server)
        closed = alice.conn
        await asyncio.wait_for(closed.closed.wait(), 10)  # at the menu, past the deadline
        assert closed.close_code == 1008
        await asyncio.sleep(0.5)
        assert alice.conn is closed  # a new connection only when one is needed
        assert await alice.login("alice", PASSWORD) is None
        assert lines[0].startswith("Logged in as alice.")
        assert not any("connection" in line.lower() for line in lines)
        await alice.close()
    finally:
        server.stop()


async def test_an_old_anonymous_connection_is_replaced_before_logging_in(server, monkeypatch):
    monkeypatch.setattr("chatclient.client.ANONYMOUS_FOR", 0.5)
    await signup(server.url, "alice")
    alice, lines = await client_for(server)
    old, asked = alice.conn, []
    old.request = lambda type, **fields: asked.append(type)
    await asyncio.sleep(1)
    assert await alice.login("alice", PASSWORD) is None
    assert alice.conn is not old and asked == []
    assert not any("connection" in line.lower() for line in lines)
    await alice.close()


async def test_signup_logs_in(server):
    alice, lines = await client_for(server)
    error = await alice.signup("alice", "short")
    assert error["code"] == "invalid" and not alice.username
    assert await alice.signup("alice", PASSWORD) is None
    assert alice.username == "alice"
    assert "Account alice created. Logged in as alice." in lines[-1]
    await alice.execute("/online")
    await lines.wait_for("Online now (1): alice")
    await alice.close()


async def test_refused_and_foreign_servers_are_clear_errors():
    with pytest.raises(ConnectFailed, match="connection refused"):
        await ChatClient(f"ws://127.0.0.1:{free_port()}/ws/chat/", print).connect()
    port = free_port()
    http = HTTPServer(("127.0.0.1", port), partial(SimpleHTTPRequestHandler, directory=str(ROOT / "docs")))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        with pytest.raises(NotAChatServer):
            await ChatClient(f"ws://127.0.0.1:{port}/ws/chat/", print).connect()
    finally:
        http.shutdown()


def test_a_failed_login_says_when_the_next_one_locks():
    """Issue 24.5: the server's warning is shown, not the bare sentence."""
    from chatclient.text import explain

    warned = "Wrong username or password. One more wrong password locks this name for a minute."
    assert explain({"code": "invalid_credentials", "attempts_left": 1, "message": warned}) == warned
    assert explain({"code": "invalid_credentials", "attempts_left": 2, "message": "x"}) == "Wrong username or password."


def test_a_keepalive_ping_that_meets_a_restart_prints_no_traceback():
    """websockets logs a failed keepalive ping as an error with its
    traceback; the terminal client keeps that off the person's screen."""
    script = (
        "import logging, chatclient.connection\n"
        "try:\n    raise ConnectionResetError(104, 'Connection reset by peer')\n"
        "except OSError:\n    logging.getLogger('websockets.client').error('keepalive ping failed', exc_info=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and "keepalive ping failed" not in done.stderr and "Traceback" not in done.stderr


def test_a_presence_line_names_a_few_and_counts_the_rest():
    """A batch of thousands coming online (a restart) is one short line,
    not a screenful of names; every name still completes with Tab."""
    lines = []
    client = ChatClient("ws://unused/", lines.append)
    client.username = "me"
    crowd = [f"user{i}" for i in range(1, 1001)]
    client.on_presence_batch({"online": ["me", *crowd], "offline": ["bob", "carol"]})
    assert lines == [
        "* user1, user2, user3, user4, user5 and 995 others are online",
        "* bob and carol are offline",
    ]
    assert client.known >= set(crowd)
    client.on_presence_batch({"online": crowd[:6]})  # one more than shown: all six, not "1 others"
    assert lines[-1] == "* user1, user2, user3, user4, user5 and user6 are online"


def test_completion_and_rendering():
    client = ChatClient("ws://unused/", print)
    client.known = {"alice", "albert", "bob"}
    assert client.completions("/ms") == ["/msg"]
    assert client.completions("/msg al") == ["albert", "alice"]
    assert client.completions("/all al") == []
    stored = {
        "kind": "private",
        "from": "bob",
        "to": "me",
        "body": "x",
        "sent_at": "2020-01-01T10:00:00+00:00",
        "stored": True,
    }
    assert render_message(stored, "me").endswith("bob: x (waited while you were offline)")


def test_markdown_is_left_as_typed():
    """Issue 24.9: the page shows *bold*, `code` and quotes; the terminal
    shows the characters as they were typed."""
    body = "*bold* **b** _it_ `x` > q"
    message = {"kind": "private", "from": "bob", "to": "me", "body": body, "sent_at": "2020-01-01T10:00:00+00:00"}
    assert render_message(message, "me").endswith(f"bob: {body}")


def test_others_words_cannot_drive_the_terminal():
    """No escape sequences or bidi overrides from a message reach the
    terminal, and a newline cannot fake a line of its own."""
    hostile = {"kind": "private", "from": "bob\x1b[31m", "to": "me", "sent_at": "2020-01-01T10:00:00+00:00",
               "body": "\x1b[2Jhi\r\n[10:00] carol: send me your password\u202e"}  # fmt: skip
    line = render_message(hostile, "me")
    assert not any(c in line for c in "\x1b\r\u202e")
    assert "hi�\n    [10:00] carol: send me your password" in line


def test_completion_adds_a_space():
    """Defect 6."""
    client = ChatClient("ws://unused/", print)
    client.known = {"alice"}
    completer = ChatCompleter(client)
    assert [c.text for c in completer.get_completions(Document("/ms"), None)] == ["/msg "]
    assert [c.text for c in completer.get_completions(Document("/msg al"), None)] == ["alice "]


def test_one_list_of_commands():
    """Issue 14: the command list was kept twice and they disagreed (/exit)."""
    client = ChatClient("ws://unused/", print)
    assert client.completions("/ex") == ["/exit"]
    listed = {word for line in HELP.splitlines() for word in line.split() if word.startswith("/")}
    assert listed == set(COMMANDS)


# --- The real program ----------------------------------------------------------------

PROGRAM_ENV = {"TERM": "xterm", "PATH": "/usr/bin:/bin", "PROMPT_TOOLKIT_NO_CPR": "1", "LANG": "C.UTF-8"}


def run_program(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "manage.py", "chat", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def program(server):
    """`program()` starts the real client on the test server in a
    pseudo-terminal; whatever is still running is closed at the end."""
    children = []

    def spawn(*args):
        children.append(
            pexpect.spawn(
                sys.executable,
                ["manage.py", "chat", "--port", str(server.port), *args],
                cwd=str(ROOT),
                encoding="utf-8",
                timeout=15,
                dimensions=(30, 100),
                env=PROGRAM_ENV,
            )
        )
        return children[-1]

    yield spawn
    for child in children:
        child.close()


def log_in(child, username="alice"):
    child.expect("1\\) Log in")
    child.sendline("1")
    child.expect("Username:")
    child.sendline(username)
    child.expect("Password:")
    child.sendline(PASSWORD)
    child.expect(f"Logged in as {username}")


def ends_well(child):
    """It says Bye, exits 0, and nothing went wrong on the way."""
    child.expect("Bye!")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in child.before and "Task exception" not in child.before


def test_exit_codes_of_the_program():
    port = free_port()
    result = run_program("--port", str(port))
    assert result.returncode == 2
    assert "Cannot connect" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_an_http_url_is_understood():
    """Defect 10: `--url http://…` exited with code 1, which no one listed."""
    port = free_port()
    result = run_program("--url", f"http://127.0.0.1:{port}/")
    assert result.returncode == 2
    assert f"Cannot connect to ws://127.0.0.1:{port}/ws/chat/" in result.stdout
    result = run_program("--url", "ftp://example.com/")
    assert result.returncode == 2
    assert "--url" in result.stderr and "Traceback" not in result.stdout + result.stderr


def test_a_wrong_path_is_a_clear_error(server):
    """The client's side of the unknown-path item: say where the chat is."""
    result = run_program("--url", f"ws://127.0.0.1:{server.port}/nope/")
    assert result.returncode == 3
    assert "/nope/" in result.stdout and "/ws/chat/" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


async def test_the_server_refuses_an_unknown_path_cleanly(server):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"ws://127.0.0.1:{server.port}/nope/", open_timeout=5)
    assert refused.value.response.status_code in (403, 404)
    server.stop()  # its log is complete
    assert "Traceback" not in server.log_text()


def test_the_real_program_in_a_terminal(server, program):
    asyncio.run(signup(server.url, "alice", "bob"))
    child = program()
    log_in(child)

    async def bob_talks():
        async with Peer(server.url) as bob:
            await bob.ok("login", username="bob", password=PASSWORD)
            await bob.ok("send", to="alice", body="hi alice, typed by bob")
            await asyncio.get_running_loop().run_in_executor(None, child.expect, "typed by bob")
            await asyncio.get_running_loop().run_in_executor(None, child.sendline, "/msg bob hello from the terminal")
            event = await bob.event("message", timeout=10)
            assert event["body"] == "hello from the terminal" and event["from"] == "alice"

    asyncio.run(bob_talks())
    child.sendline("/quit")
    ends_well(child)


def test_a_room_in_the_real_program(server, program):
    """Issue 20: Tab knows the room, room lines say its name (the prompt,
    drawn with cursor moves, is checked in `test_rooms_in_the_terminal_client`)."""
    asyncio.run(signup(server.url, "alice", "bob"))
    child = program()
    log_in(child)
    child.sendline("/create team bob")
    child.expect("Created #team with 2 member\\(s\\).")
    for keys in ("/room te\t", "\r"):  # Tab completes the room's name; as a person types
        child.send(keys)
        time.sleep(0.5)
    child.expect("Plain text now goes to #team.")

    async def bob_answers():
        async with Peer(server.url) as bob:
            await bob.ok("login", username="bob", password=PASSWORD)
            room = (await bob.ok("rooms"))["rooms"][0]["id"]
            await bob.ok("send", room=room, body="hi from bob")
            await asyncio.get_running_loop().run_in_executor(None, child.expect, "#team bob: hi from bob")

    asyncio.run(bob_answers())
    child.sendline("/quit")
    ends_well(child)


def test_ctrl_c_says_bye_and_exits_cleanly(server, program):
    """Defect 2: Ctrl-C printed a traceback of a task that was never retrieved."""
    asyncio.run(signup(server.url, "alice"))
    at_the_menu = program()
    at_the_menu.expect("1\\) Log in")
    at_the_menu.sendcontrol("c")
    ends_well(at_the_menu)
    logged_in = program()
    log_in(logged_in)
    logged_in.sendcontrol("c")
    ends_well(logged_in)


def test_completion_in_the_terminal_adds_a_space(server, program):
    """Defect 6, end to end: Tab, then type on."""
    asyncio.run(signup(server.url, "alice", "bob"))

    async def scenario():
        async with Peer(server.url) as bob:
            await bob.ok("login", username="bob", password=PASSWORD)
            child = program()
            await asyncio.get_running_loop().run_in_executor(None, log_in, child)
            # As a person types: each Tab is answered before the next key.
            for keys in ("/ms\t", "bo\t", "hello via tab\r"):
                child.send(keys)
                await asyncio.sleep(0.5)
            event = await bob.event("message", timeout=10)
            assert event["body"] == "hello via tab"

    asyncio.run(scenario())


def test_signup_in_the_terminal(program):
    """Defect 5: a bad username is said before the password is asked, the
    password is asked twice, errors do not look like prompts, and sign-up
    logs in."""
    child = program()
    child.expect("1\\) Log in")
    child.sendline("2")
    child.expect("Username")
    child.sendline("no spaces please")
    child.expect("letters, digits")
    child.expect("Username")
    child.sendline("carol")
    child.expect("Password:")
    child.sendline("short")
    child.expect("again:")
    child.sendline("short")
    child.expect("Cannot sign up: This password is too short")
    assert "Password: This password" not in child.before
    child.expect("Password:")
    child.sendline(PASSWORD)
    child.expect("again:")
    child.sendline(PASSWORD + "x")
    child.expect("differ")
    child.expect("Password:")
    child.sendline(PASSWORD)
    child.expect("again:")
    child.sendline(PASSWORD)
    child.expect("Account carol created. Logged in as carol.")
    child.sendline("/quit")
    ends_well(child)


def test_the_login_menu_says_when_the_server_drops(server, program):
    """Defect 3: it used to say so only after name and password."""
    asyncio.run(signup(server.url, "alice"))
    child = program()
    child.expect("1\\) Log in")
    server.stop()
    child.expect("Lost the connection to the server")
    server.start()
    child.expect("Connected again")
    log_in(child)
    child.sendline("/quit")
    ends_well(child)


# --- What the screen shows (tmux) ----------------------------------------------------

_terminals = itertools.count()


class Terminal:
    """The real program in a tmux pane, read as the person sees it."""

    def __init__(self, *args, width=100, height=30):
        need(shutil.which("tmux"), "tmux")
        self.socket = f"chat-test-{os.getpid()}-{next(_terminals)}"
        command = shlex.join([sys.executable, "manage.py", "chat", *args])
        self.tmux(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            str(width),
            "-y",
            str(height),
            "-c",
            str(ROOT),
            f"{command}; echo EXIT=$?; sleep 600",
        )

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def type(self, text):
        self.tmux("send-keys", "-t", "0", "-l", text)

    def press(self, *keys):
        self.tmux("send-keys", "-t", "0", *keys)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "0")

    def wait_for(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while text not in (screen := self.screen()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on the screen:\n{screen}")
            time.sleep(0.1)
        return screen

    def log_in(self, username="alice"):
        self.wait_for("1) Log in")
        self.type("1")
        self.press("Enter")
        self.wait_for("Username:")
        self.type(username)
        self.press("Enter")
        self.wait_for("Password:")
        self.type(PASSWORD)
        self.press("Enter")
        self.wait_for(f"Logged in as {username}")

    def close(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, capture_output=True)


@pytest.fixture
def terminal():
    opened = []

    def open_terminal(*args):
        opened.append(Terminal(*args))
        return opened[-1]

    yield open_terminal
    for t in opened:
        t.close()


def test_typing_during_an_outage_keeps_the_prompt(server, terminal):
    """Defect 7, and the prompt says where plain text goes (defect 1)."""
    asyncio.run(signup(server.url, "alice", "bob"))
    screen = terminal("--port", str(server.port))
    screen.log_in()
    screen.type("/msg bob first")
    screen.press("Enter")
    screen.wait_for("to bob >")
    server.stop()
    screen.wait_for("Connection lost")
    screen.type("typed while down")
    shown = screen.wait_for("typed while down")
    assert "to bob > typed while down" in shown
    server.start()
    screen.wait_for("Reconnected as alice")
    screen.press("Enter")

    async def bob_reads():
        async with Peer(server.url) as bob:
            await bob.ok("login", username="bob", password=PASSWORD)
            bodies = [(await bob.event("message", timeout=10))["body"] for _ in range(2)]
            assert bodies == ["first", "typed while down"]

    asyncio.run(bob_reads())
    screen.type("/quit")
    screen.press("Enter")
    screen.wait_for("EXIT=0")


def test_the_status_line_says_who_is_typing(server, terminal):
    asyncio.run(signup(server.url, "alice", "bob"))
    screen = terminal("--port", str(server.port))
    screen.log_in()

    async def bob_types():
        async with Peer(server.url) as bob:
            await bob.ok("login", username="bob", password=PASSWORD)
            await bob.ok("typing", to="alice")
            await asyncio.to_thread(screen.wait_for, "bob is typing…")
            await bob.ok("send", to="alice", body="done typing")
            await asyncio.to_thread(screen.wait_for, "bob: done typing")
            assert "typing…" not in screen.screen()
            screen.type("thanks, b")  # plain text now answers bob
            assert (await bob.event("typing", timeout=10))["from"] == "alice"
            screen.press("Enter")
            await bob.event("message", body="thanks, b", timeout=10)
            await asyncio.to_thread(screen.wait_for, "your last message to bob: sent")
            await bob.ok("read", **{"with": "alice", "up_to": 10**6})
            await asyncio.to_thread(screen.wait_for, "your last message to bob: read")

    asyncio.run(bob_types())


def test_a_new_password_elsewhere_brings_the_login_back(server, program):
    asyncio.run(signup(server.url, "alice"))
    child = program()
    log_in(child)
    change_password("alice", "another-horse-43")
    child.expect("log in again")
    child.expect("Password:")
    child.sendline("another-horse-43")
    child.expect("Logged in as alice")
    child.sendline("/quit")
    ends_well(child)


async def test_a_login_the_server_cannot_complete_just_now_is_tried_again(monkeypatch):
    """`unavailable` (the server's Redis is down) is temporary: the client
    says so and tries again after retry_after, instead of showing an error."""
    lines = Lines()
    client = ChatClient("ws://unused/", lines.append)
    replies = [
        {"type": "error", "code": "unavailable", "message": "briefly", "retry_after": 1},
        {"type": "error", "code": "invalid_credentials", "message": "Wrong username or password."},
    ]
    asked = []

    async def anonymous(type, **fields):
        asked.append(type)
        return replies.pop(0)

    monkeypatch.setattr(client, "_anonymous", anonymous)
    reply = await client.login("alice", "secret")
    assert asked == ["login", "login"]
    assert reply["code"] == "invalid_credentials"
    # At least what was asked, and a random part more (1 to 2.1 s).
    assert any(("briefly unavailable; trying again in 1 s" in line or "in 2 s" in line) for line in lines)


async def test_a_login_again_told_to_come_back_later_retries_quietly(monkeypatch):
    """After a drop, the token's login may be told `unavailable` (a
    restart's crowd past the logins the server serves at once): the client
    waits what it was told and a random part more, on the same connection,
    and says nothing a person would take for trouble."""
    from chatclient import client as client_module

    lines = Lines()
    client = ChatClient("ws://unused/", lines.append)
    client.token = "a-token"
    asked, waits = [], []

    class Conn:
        async def request(self, type, **fields):
            asked.append(type)
            if type == "login" and asked.count("login") < 3:
                return {"type": "error", "code": "unavailable", "message": "busy", "retry_after": 7}
            if type == "login":
                return {"type": "ok", "username": "alice", "pending": 0}
            return {"type": "ok", "rooms": []}

    async def no_sleep(seconds):
        waits.append(seconds)

    client.conn = Conn()
    monkeypatch.setattr(client_module.asyncio, "sleep", no_sleep)
    await client._log_in_again()
    assert asked == ["login", "login", "login", "rooms"]
    assert len(waits) == 2 and all(7 <= w <= 7 + 1 + 7 / 10 for w in waits)
    assert lines == ["Reconnected as alice."]


async def test_a_restart_past_the_logins_in_progress_brings_everyone_back_quietly(transactional_db):
    """A server that serves one login at a time and refuses the rest at
    once: after its restart every client is back, having been told to come
    back later, and none printed more than that it reconnects."""
    server = Server(CHAT_LOGINS_IN_PROGRESS=1, CHAT_LOGIN_WAIT_SECONDS=0).start()
    names = [f"user{i}" for i in range(8)]
    clients = []
    try:
        await signup(server.url, *names)
        # Retrying every 0.1 s at most while the server is down, they all
        # knock within a tenth of a second once it listens: with one login
        # at a time, some are surely told to come back (spread over a second,
        # eight 20 ms logins missed each other about one run in ten).
        for name in names:
            clients.append(await client_for(server, name, first_delay=0.05, max_delay=0.1))
        server.stop()
        for _, lines in clients:
            await lines.wait_for("Connection lost")
        await restart_soon(server)
        for _, lines in clients:
            await lines.wait_for("Reconnected as", timeout=30)
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{server.http}/metrics", timeout=5).read())
        refused = re.search(rb"^chat_logins_refused_total (\S+)$", metrics, re.M)
        assert refused and float(refused[1]) > 0  # some were told to come back
        calm = ("Logged in as", "Connection lost. Reconnecting", "Still no connection", "Reconnected as", "* ")
        said = [line for _, lines in clients for line in lines if not line.startswith(calm)]
        assert said == []
    finally:
        for client, _ in clients:
            await client.close()
        server.stop()
