"""The terminal client: its logic against a real server, and the real
program in a pseudo-terminal."""

import asyncio
import subprocess
import sys
import threading
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pexpect
import pytest

from chatclient.connection import ConnectFailed, NotAChatServer
from chatclient.core import ChatClient, render_message

from .helpers import PASSWORD
from .servers import ROOT, Peer, free_port, signup

pytestmark = pytest.mark.django_db(transaction=True)



class Lines(list):
    async def wait_for(self, text, timeout=5):
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(text in line for line in self):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} not in {self!r}")
            await asyncio.sleep(0.02)
        return next(line for line in self if text in line)


async def client_for(server, username=None):
    lines = Lines()
    client = ChatClient(server.url, lines.append)
    await client.connect()
    if username:
        assert await client.login(username, PASSWORD) is None
    return client, lines


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
    await alice_lines.wait_for("--- last 2 message(s) with bob ---")
    await alice.execute("/frobnicate")
    await alice_lines.wait_for("Unknown command /frobnicate")
    assert await alice.execute("/logout") is False
    await bob_lines.wait_for("* alice is offline")
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
    await bob.on_event({"type": "message", "id": sent["id"], "kind": "private", "from": "alice", "to": "bob",
                        "body": "while you were out", "sent_at": "2026-01-01T00:00:00+00:00", "stored": False})
    assert sum("while you were out" in x for x in lines) == 1
    await bob.close()
    # It was acked: nothing waits at the next login.
    bob, lines = await client_for(server, "bob")
    assert "waited" not in lines[0]
    await bob.close()


async def test_reconnects_after_the_server_restarts(server):
    await signup(server.url, "alice")
    alice, lines = await client_for(server, "alice")
    server.stop()
    await asyncio.wait_for(alice.conn.closed.wait(), 5)
    restart = asyncio.get_running_loop().run_in_executor(None, server.start)
    assert await alice.reconnect(attempts=10, first_delay=0.3)
    await restart
    assert "Reconnected as alice." in lines
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


def test_completion_and_rendering():
    client = ChatClient("ws://unused/", print)
    client.known = {"alice", "albert", "bob"}
    assert client.completions("/ms") == ["/msg"]
    assert client.completions("/msg al") == ["albert", "alice"]
    assert client.completions("/all al") == []
    stored = {"kind": "private", "from": "bob", "to": "me", "body": "x", "sent_at": "2020-01-01T10:00:00+00:00", "stored": True}
    assert render_message(stored, "me").endswith("bob: x (waited while you were offline)")


def test_exit_codes_of_the_program():
    port = free_port()
    result = subprocess.run(
        [sys.executable, "manage.py", "chat", "--port", str(port)], cwd=ROOT, capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "Cannot connect" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_the_real_program_in_a_terminal(server):
    asyncio.run(signup(server.url, "alice", "bob"))
    child = pexpect.spawn(
        sys.executable, ["manage.py", "chat", "--port", str(server.port)], cwd=str(ROOT),
        encoding="utf-8", timeout=15, dimensions=(30, 100), env={"TERM": "xterm", "PATH": "/usr/bin:/bin", "PROMPT_TOOLKIT_NO_CPR": "1"},
    )
    try:
        child.expect("1\\) Log in")
        child.sendline("1")
        child.expect("Username:")
        child.sendline("alice")
        child.expect("Password:")
        child.sendline(PASSWORD)
        child.expect("Logged in as alice")

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
        child.expect("Bye!")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
