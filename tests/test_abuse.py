"""Hostile and careless clients against a real server (daphne subprocess):
memory stays bounded, nobody is left online as a ghost, and `make run`
gives the server room for many sockets."""

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import time

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from accounts import services as accounts
from messaging import services
from messaging.models import Message, Presence

from .helpers import PASSWORD
from .servers import ROOT, Peer, Server, free_port, signup

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()
MiB = 1024 * 1024


def raise_open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(transactional_db):
    raise_open_files()
    # Rows that a closed socket failed to release must not expire (45 s by
    # default) before a test has looked for them.
    srv = Server(CHAT_PRESENCE_TIMEOUT_SECONDS=600).start()
    yield srv
    srv.stop()


async def settled_rss(pid, seconds=1.0):
    await asyncio.sleep(seconds)
    return rss(pid)


# --- 2. Memory: floods and clients that never read ----------------------------------


async def test_an_anonymous_flood_does_not_grow_the_server(server):
    await signup(server.url, "alice")
    async with Peer(server.url) as alice:
        await alice.ok("login", username="alice", password=PASSWORD)
        before = await settled_rss(server.proc.pid)
        flooder = await websockets.connect(server.url, max_size=None)
        frame = json.dumps({"type": "online", "pad": "x" * 4000})

        async def flood():
            while True:
                await flooder.send(frame)

        task = asyncio.ensure_future(flood())
        for _ in range(16):  # meanwhile, another user is served as usual
            await asyncio.sleep(0.5)
            assert (await alice.ok("online"))["users"] == ["alice"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        flooder.transport.abort()
        grown = rss(server.proc.pid) - before
        assert grown < 40 * MiB, f"the server grew {grown / MiB:.0f} MiB"
        assert (await alice.ok("online"))["users"] == ["alice"]


async def test_a_client_that_never_reads_is_closed(server):
    await signup(server.url, "alice", "bob")
    alice = await sync_to_async(User.objects.get)(username="alice")
    for i in range(100):
        await sync_to_async(services.message_send)(
            sender=alice, to_username="bob", body=f"{i} " + "y" * 3990, rate_limit=False
        )
    before = await settled_rss(server.proc.pid)
    greedy = await websockets.connect(server.url, max_size=None)
    await greedy.send(json.dumps({"type": "login", "username": "alice", "password": PASSWORD, "ref": "in"}))
    while json.loads(await greedy.recv()).get("ref") != "in":
        pass
    greedy.transport.pause_reading()  # from now on it reads nothing at all
    request = json.dumps({"type": "history", "with": "bob", "limit": 100})
    # 1,000 replies of 400 KB each: 400 MB if the server kept them.
    sending = asyncio.ensure_future(asyncio.gather(*(greedy.send(request) for _ in range(1000))))
    deadline = time.monotonic() + 60
    while await sync_to_async(Presence.objects.filter(user=alice).exists)():
        assert time.monotonic() < deadline, "the server kept the connection of a client that reads nothing"
        await asyncio.sleep(0.2)
    grown = await settled_rss(server.proc.pid) - before
    assert grown < 50 * MiB, f"the server grew {grown / MiB:.0f} MiB"
    assert "closing alice: You are not reading what the server sends." in server.log_text()
    sending.cancel()
    greedy.transport.abort()
    async with Peer(server.url) as bob:
        await bob.ok("login", username="bob", password=PASSWORD)  # the server is fine


async def test_ten_thousand_waiting_messages_go_out_as_the_client_reads(server):
    await signup(server.url, "alice", "bob")
    await sync_to_async(_wait_for_bob)(10000)
    before = await settled_rss(server.proc.pid)
    slow = await websockets.connect(server.url, max_size=None)
    await slow.send(json.dumps({"type": "login", "username": "bob", "password": PASSWORD}))
    await asyncio.sleep(3)  # not reading: the server must not queue all 20 MB
    grown = rss(server.proc.pid) - before
    seen = set()
    while len(seen) < 10000:
        frame = json.loads(await asyncio.wait_for(slow.recv(), 20))
        if frame["type"] == "message":
            seen.add(frame["id"])
    await slow.close()
    assert grown < 15 * MiB, f"the server grew {grown / MiB:.0f} MiB"


def _wait_for_bob(n):
    """n messages of 2,000 characters from alice, pending for bob."""
    from messaging.models import Delivery

    alice, bob = User.objects.get(username="alice"), User.objects.get(username="bob")
    messages = Message.objects.bulk_create(
        [
            Message(kind="private", sender=alice, recipient=bob, body=f"{i} " + "z" * 2000, sent_at=alice.date_joined)
            for i in range(n)
        ]
    )
    Delivery.objects.bulk_create([Delivery(message=m, recipient=bob) for m in messages])


# --- 3. No ghosts -------------------------------------------------------------------


async def test_hundreds_of_sockets_closed_every_way_leave_nobody_online(server):
    """Five hundred sockets, a hundred at a time, each way of ending one a
    hundred times: the races of a close with a login or a reply. (A
    thousand took two minutes of a loaded machine; sizes belong in bench/.)"""
    hard = raise_open_files()
    n = 500 if hard >= 2500 else 200
    names = [f"ghost{i}" for i in range(n)]
    await sync_to_async(accounts.user_bulk_create)(usernames=names, password=PASSWORD)
    tokens = await sync_to_async(
        lambda: [accounts.session_create(user=u) for u in User.objects.filter(username__in=names)]
    )()
    ways = ["close", "abort", "request_then_close", "request_then_abort", "login_then_abort"]

    async def log_in(ws, token):
        await ws.send(json.dumps({"type": "login", "token": token, "ref": "in"}))
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("ref") == "in":
                assert frame["type"] == "ok", frame
                return

    async def end(i, token):
        ws = await websockets.connect(server.url, max_size=None)
        way = ways[i % len(ways)]
        if way == "login_then_abort":
            await ws.send(json.dumps({"type": "login", "token": token}))
            ws.transport.abort()
            return
        await log_in(ws, token)
        if way.startswith("request"):
            await ws.send(json.dumps({"type": "history", "with": None}))
        if way.endswith("close"):
            await ws.close()
        else:
            ws.transport.abort()

    for start in range(0, n, 100):
        await asyncio.gather(*(end(i, tokens[i]) for i in range(start, min(n, start + 100))))
    deadline = time.monotonic() + 30  # a row left behind stays: see the fixture
    while await sync_to_async(Presence.objects.count)():
        assert time.monotonic() < deadline, f"{await sync_to_async(Presence.objects.count)()} still online"
        await asyncio.sleep(0.2)
    async with Peer(server.url) as back:
        await back.ok("login", token=tokens[0])  # not already_online
        assert (await back.ok("online"))["users"] == [names[0]]


# --- 8. File descriptors ------------------------------------------------------------


def test_make_run_raises_the_open_file_limit(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 1024:
        pytest.skip("the hard limit here leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/run.sqlite3"}
    env.pop("REDIS_URL", None)
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert make.poll() is None, make.stdout.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "make run did not start"
                time.sleep(0.2)
        daphne = subprocess.run(
            ["pgrep", "-s", str(os.getpgid(make.pid)), "-f", "daphne"], capture_output=True, text=True
        )
        pid = int(daphne.stdout.split()[0])
        limits = open(f"/proc/{pid}/limits").read()
        line = next(li for li in limits.splitlines() if li.startswith("Max open files"))
        assert int(line.split()[3]) == hard, line
    finally:
        os.killpg(os.getpgid(make.pid), signal.SIGTERM)
        make.wait(10)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- 5. A client that vanishes without a close ---------------------------------------------


async def test_a_client_that_stops_answering_pings_goes_offline_and_others_stay(transactional_db):
    """daphne pings a socket silent for --ping-interval and drops it when no
    pong comes within --ping-timeout; its presence goes with it (the
    protocol's minute). Its timers look only at the sockets that are due
    (messaging/transport.py): this is what they must still do."""
    # A pong may take a loaded machine a while: 3 s to answer.
    server = Server(args=["--ping-interval", "1", "--ping-timeout", "3"], CHAT_PRESENCE_TIMEOUT_SECONDS=600).start()
    try:
        await signup(server.url, "alice", "bob")
        async with Peer(server.url) as bob, Peer(server.url) as alice:
            await bob.ok("login", username="bob", password=PASSWORD)
            await alice.ok("login", username="alice", password=PASSWORD)
            # Talking past the first round of daphne's timeout check, so the
            # ping that finds alice gone is the one her deadline brings.
            for _ in range(9):
                await alice.ok("whoami")
                await asyncio.sleep(0.3)
            alice.ws.transport.pause_reading()  # reads nothing more: no pong
            gone_at = time.monotonic()
            await bob.event("presence", username="alice", online=False, timeout=20)
            assert time.monotonic() - gone_at < 12
            # bob, silent all along too, answered each ping: still here.
            assert (await bob.ok("whoami"))["username"] == "bob"
            assert (await bob.ok("online"))["users"] == ["bob"]
    finally:
        server.stop()
