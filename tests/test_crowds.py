"""What each connection keeps, made smaller for crowds (issue 23, item 3),
and the behaviours that had to stay the same.

- core/queues.py: SlimQueue, the queue of every socket (daphne's input
  queue, the in-memory channel layer's channel), FIFO, bounded, passing an
  item on when its getter is cancelled, and small when empty.
- chatsite/sockets.py: SocketSession, cookies, session and user in one
  step: no query without a session cookie, the user of a valid one, nobody
  for a bad one.
- messaging/transport.py: daphne gives each WebSocket a SlimQueue.
- chatsite/layers.py: the in-memory layer's channels are SlimQueues, and
  its expiry sweep still works on them.
- The terminal client: a request whose connection ends while it is being
  sent leaves no "Future exception was never retrieved" on the terminal.
"""

import asyncio
import gc
import time
import tracemalloc

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chatclient.protocol import Closed, Session
from core.queues import SlimQueue

from .helpers import PASSWORD
from .servers import Peer

# --- SlimQueue ---------------------------------------------------------------------------


async def test_a_slim_queue_is_fifo_and_wakes_its_getter():
    queue = SlimQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    for i in range(3):
        queue.put_nowait(i)
    assert await getter == 0
    assert [queue.get_nowait(), await queue.get()] == [1, 2]
    assert queue.empty() and queue.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_bounded_slim_queue_refuses_past_its_size():
    queue = SlimQueue(maxsize=2)
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert queue.full()
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait("c")
    assert queue.get_nowait() == "a" and not queue.full()


async def test_an_item_for_a_cancelled_getter_goes_to_the_next_one():
    queue = SlimQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("x")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "x"
    assert first.cancelled()
    assert queue._getters is None  # nobody waits: nothing kept


def test_an_empty_slim_queue_is_a_tenth_of_an_asyncio_queue():
    def cost(make):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(1000)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert len(kept) == 1000
        return (after - before) / 1000

    slim, stock = cost(SlimQueue), cost(asyncio.Queue)
    assert slim < 150 and stock > 1500, (slim, stock)


async def test_a_slim_queue_gives_back_its_items_memory_when_emptied():
    queue = SlimQueue()
    empty = queue._queue
    queue.put_nowait(1)
    assert queue._queue is not empty
    queue.get_nowait()
    assert queue._queue is empty  # the shared empty one: the deque's block is freed


# --- SocketSession -------------------------------------------------------------------------


async def _scope_through(headers):
    from chatsite.sockets import SocketSession

    seen = {}

    async def inner(scope, receive, send):
        seen.update(scope)

    await SocketSession(inner)({"type": "websocket", "headers": headers}, None, None)
    return seen


async def test_a_socket_without_a_session_cookie_costs_no_query(monkeypatch):
    import chatsite.sockets

    async def no_query(scope):
        raise AssertionError("looked a user up without a session cookie")

    monkeypatch.setattr(chatsite.sockets, "get_user", no_query)
    scope = await _scope_through([(b"cookie", b"other=1")])
    assert scope["cookies"] == {"other": "1"}
    assert scope["session"] is None and not scope["user"].is_authenticated


@pytest.mark.django_db(transaction=True)
async def test_a_socket_with_a_session_cookie_gets_its_user_and_a_bad_one_nobody(django_user_model):
    await sync_to_async(django_user_model.objects.create_user)(username="alice", password=PASSWORD)
    http = Client()
    assert await sync_to_async(http.login)(username="alice", password=PASSWORD)
    key = http.cookies["sessionid"].value
    scope = await _scope_through([(b"host", b"localhost"), (b"cookie", f"sessionid={key}".encode())])
    assert scope["user"].username == "alice" and scope["session"].session_key == key
    scope = await _scope_through([(b"cookie", b"sessionid=not-a-session")])
    assert not scope["user"].is_authenticated


# --- The queues daphne and the layer give each socket ----------------------------------------


async def test_daphne_gives_a_websocket_a_slim_queue_and_http_a_spooled_one():
    from daphne.server import Server

    from messaging import transport

    transport.daphne_spools_bodies()
    server = Server.__new__(Server)
    protocol = object()
    server.connections = {protocol: {}}
    server.request_buffer_size = 8192
    got = {}

    async def application(scope, receive, send):
        got[scope["type"]] = receive

    server.application = application
    queue = server.create_application(protocol, {"type": "websocket"})
    assert isinstance(queue, SlimQueue)
    await server.connections[protocol]["application_instance"]
    assert got["websocket"] == queue.get
    server.connections = {protocol: {}}
    assert isinstance(server.create_application(protocol, {"type": "http"}), transport.SpooledBodyQueue)
    await server.connections[protocol]["application_instance"]


async def test_the_in_memory_layer_queues_on_slim_queues_and_still_expires():
    from chatsite.layers import InMemoryChannelLayer

    layer = InMemoryChannelLayer(expiry=60)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "x.y", "n": 1})
    assert isinstance(layer.channels[channel], SlimQueue)
    assert (await layer.receive(channel))["n"] == 1
    assert channel not in layer.channels  # emptied: nothing kept for it
    # An expired message is swept, and its channel leaves its groups.
    layer._put(channel, {"type": "x.y"})
    expiry, message = layer.channels[channel]._queue[0]
    layer.channels[channel]._queue[0] = (time.time() - 1, message)
    layer._swept_at = 0.0
    layer._clean_expired()
    assert channel not in layer.channels and channel not in layer.groups.get("g", {})


async def test_private_messages_cross_a_live_server_on_the_slim_queues(server):
    from .servers import signup

    await signup(server.url, "alice", "bob")
    async with Peer(server.url) as alice, Peer(server.url) as bob:
        await alice.ok("login", username="alice", password=PASSWORD)
        await bob.ok("login", username="bob", password=PASSWORD)
        for i in range(20):
            await alice.ok("send", to="bob", body=f"hello {i}")
        bodies = [(await bob.event("message", timeout=5))["body"] for _ in range(20)]
        assert bodies == [f"hello {i}" for i in range(20)]


# --- The terminal client --------------------------------------------------------------------


class _DyingTransport:
    """A socket whose send is under way when the connection ends."""

    def __init__(self):
        self.gone = asyncio.Event()

    async def send(self, text):
        self.gone.set()
        await asyncio.sleep(0.05)  # the reader sees the end meanwhile
        raise Closed(1012)

    async def recv(self):
        await self.gone.wait()
        raise Closed(1012)

    async def close(self):
        pass


async def test_a_request_cut_off_while_sending_leaves_no_stray_error():
    loop = asyncio.get_running_loop()
    unretrieved = []
    loop.set_exception_handler(lambda loop, context: unretrieved.append(context["message"]))
    try:
        session = Session(_DyingTransport()).start()
        with pytest.raises(Closed):
            await session.request("whoami")
        await session.closed.wait()
        del session
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not [m for m in unretrieved if "never retrieved" in m]


# --- The heartbeat of a process's presence rows ------------------------------------------------


@pytest.mark.django_db
def test_the_tick_refreshes_this_process_rows_in_one_go_and_lets_a_leaked_one_expire(django_user_model):
    from datetime import timedelta

    from django.utils import timezone

    from messaging import services
    from messaging.models import Presence

    names = []
    for i in range(3):
        user = django_user_model.objects.create_user(username=f"u{i}", password=PASSWORD)
        services.presence_claim(user=user, channel_name=f"chan-{i}")
        names.append(f"chan-{i}")
    other = django_user_model.objects.create_user(username="elsewhere", password=PASSWORD)
    long_ago = timezone.now() - timedelta(seconds=20)
    Presence.objects.create(
        user=other, channel_name="theirs", host="another-host", pid=1, connected_at=long_ago, heartbeat_at=long_ago
    )
    Presence.objects.update(heartbeat_at=long_ago)
    # chan-2's socket is gone but its row was left (a release that failed);
    # "vanished" lost its row (taken over elsewhere, or expired).
    lost = services.presence_tick(channel_names=["chan-0", "chan-1", "vanished"], expire=False)
    assert lost == ["vanished"]
    fresh = set(Presence.objects.filter(heartbeat_at__gt=long_ago).values_list("channel_name", flat=True))
    assert fresh == {"chan-0", "chan-1"}  # not the leaked row, not another process's
    # Written again only once a third of the presence timeout old (15 s of
    # 45): not at every tick.
    beats = dict(Presence.objects.values_list("channel_name", "heartbeat_at"))
    services.presence_tick(channel_names=["chan-0", "chan-1"], expire=False)
    assert dict(Presence.objects.values_list("channel_name", "heartbeat_at")) == beats
    Presence.objects.filter(channel_name="chan-0").update(heartbeat_at=timezone.now() - timedelta(seconds=16))
    services.presence_tick(channel_names=["chan-0", "chan-1"], expire=False)
    assert Presence.objects.get(channel_name="chan-0").heartbeat_at > beats["chan-0"]
    assert Presence.objects.get(channel_name="chan-1").heartbeat_at == beats["chan-1"]


@pytest.mark.django_db
def test_the_tick_with_many_leaked_rows_still_refreshes_only_the_held_ones(django_user_model):
    from datetime import timedelta

    from django.utils import timezone

    from messaging import services
    from messaging.models import Presence

    users = django_user_model.objects.bulk_create(
        [django_user_model(username=f"v{i}", password="x") for i in range(520)]
    )
    for user in users:
        services.presence_claim(user=user, channel_name=f"c-{user.username}")
    long_ago = timezone.now() - timedelta(seconds=20)
    Presence.objects.update(heartbeat_at=long_ago)
    assert services.presence_tick(channel_names=["c-v0", "c-v1"], expire=False) == []
    assert Presence.objects.filter(heartbeat_at__gt=long_ago).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("leaked", [0, 501])
def test_the_re_push_reaches_the_named_connections_of_this_process_only(django_user_model, leaked):
    """delivery_redeliver reads this process's presence rows by host and
    pid, less those not named (a login still pushing what waited): overdue
    messages go again to the named ones only, never to the others of this
    process nor to another process's. Past 500 rows not named, it goes by
    the names themselves, to the same effect."""
    from datetime import timedelta

    from django.utils import timezone

    from messaging import services
    from messaging.models import Delivery, Presence

    sender = django_user_model.objects.create_user(username="sender", password=PASSWORD)
    people = {name: django_user_model.objects.create_user(username=name, password=PASSWORD) for name in "abcd"}
    for name in "abc":
        services.presence_claim(user=people[name], channel_name=f"chan-{name}")
    now = timezone.now()
    Presence.objects.create(user=people["d"], channel_name="chan-d", host="another-host", pid=1,
                            connected_at=now, heartbeat_at=now)  # fmt: skip
    extra = django_user_model.objects.bulk_create(
        [django_user_model(username=f"w{i}", password="x") for i in range(leaked)]
    )
    for user in extra:
        services.presence_claim(user=user, channel_name=f"c-{user.username}")
    for name in "abcd":
        services.message_send(sender=sender, to_username=name, body=f"to {name}")
    Delivery.objects.update(pushed_at=now - timedelta(seconds=60))
    # chan-c is still pushing what waited at its login: not named.
    assert services.delivery_redeliver(channel_names=["chan-a", "chan-b", "chan-d"]) == 2
    repushed = Delivery.objects.filter(pushed_at__gt=now).values_list("recipient__username", flat=True)
    assert sorted(repushed) == ["a", "b"]
    assert services.delivery_redeliver(channel_names=["chan-a", "chan-b", "chan-c"]) == 1  # c's turn


# --- The session check, every tick ------------------------------------------------------------


@pytest.mark.django_db
def test_the_session_check_decodes_only_what_changed_and_still_ends_every_ended_login(django_user_model, monkeypatch):
    """With the pump's cache of verdicts, a tick decodes no session whose
    data, user password and active flag are as they were; a logout, a
    password change (here or elsewhere), a changed session, a deactivation
    or an expiry still ends that connection at the next tick."""
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from accounts import selectors as account_selectors
    from accounts import services as accounts
    from messaging import services

    users, tokens = {}, {}
    for name in ("ann", "ben", "cat", "dan", "eve", "fay"):
        users[name] = django_user_model.objects.create_user(username=name, password=PASSWORD)
        tokens[name] = accounts.session_create(user=users[name])
        services.presence_claim(user=users[name], channel_name=f"c-{name}", session_key=tokens[name])
    names = [f"c-{name}" for name in users]
    checked = []
    real_check = account_selectors.sessions_check

    def counting(keys):
        checked.extend(keys)
        return real_check(keys)

    monkeypatch.setattr(account_selectors, "sessions_check", counting)
    verified: dict[str, int] = {}
    assert services.presence_sessions_check(channel_names=names, verified=verified) == []
    assert len(checked) == 6 and set(verified) == set(names)
    checked.clear()
    assert services.presence_sessions_check(channel_names=names, verified=verified) == []
    assert checked == []  # nothing changed: nothing decoded

    Session.objects.filter(session_key=tokens["ann"]).delete()  # logged out
    users["ben"].set_password("another-horse-43")  # changed elsewhere
    users["ben"].save()
    django_user_model.objects.filter(pk=users["cat"].pk).update(is_active=False)
    Session.objects.filter(session_key=tokens["dan"]).update(expire_date=timezone.now() - timedelta(seconds=1))
    session = Session.objects.get(session_key=tokens["eve"])  # another user's login written into it
    data = session.get_decoded() | {"_auth_user_id": str(users["fay"].pk)}
    Session.objects.filter(pk=session.pk).update(session_data=Session.objects.encode(data))
    ended = services.presence_sessions_check(channel_names=names, verified=verified)
    assert sorted(ended) == ["c-ann", "c-ben", "c-cat", "c-dan", "c-eve"]
    assert set(verified) == {"c-fay"}
    # A connection that went is forgotten.
    services.presence_sessions_check(channel_names=[], verified=verified)
    assert verified == {}


def test_sessions_outside_the_database_have_no_stamp_so_each_tick_checks_them(settings):
    from accounts import selectors as account_selectors

    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    assert account_selectors.session_stamp("k" * 32) is None


# --- What a socket keeps of its handshake ------------------------------------------------------


async def test_a_cookie_socket_over_daphne_logs_in_and_asks_batched_presence_after_the_headers_go(server):
    """The handshake's headers are let go at the accept (DaphneTransport.
    forget_handshake): the cookie login and the URL's presence_batch were
    read before, and the socket works as ever."""
    from .helpers import amake_user
    from .servers import signup

    await amake_user("alice")  # this process's password hasher: the cookie login below checks it here
    await signup(server.url, "bob")  # the server's: bob logs in there
    http = Client()
    assert await sync_to_async(http.login)(username="alice", password=PASSWORD)
    cookie = f"sessionid={http.cookies['sessionid'].value}"
    async with (
        Peer(server.url + "?presence_batch=1", additional_headers={"Cookie": cookie}) as alice,
        Peer(server.url) as bob,
    ):
        assert (await alice.ok("whoami"))["username"] == "alice"
        await bob.ok("login", username="bob", password=PASSWORD)
        online: list[str] = []
        while "bob" not in online:  # a batch may carry alice's own login first
            online = (await alice.event("presence_batch", timeout=10))["online"]
        await bob.ok("send", to="alice", body="after the handshake")
        assert (await alice.event("message", timeout=5))["body"] == "after the handshake"
