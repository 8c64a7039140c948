"""A restart with thousands of connections (issue 23, item 4): what the
stop and the logins that follow cost the database, made smaller without
changing a rule of the contract.

- The graceful stop ends this process's presence in one transaction
  (services.presence_release_process), tells everyone in events of many
  names, and no closing socket releases a row of its own; a login that
  claimed during the stop is released at its end.
- A process that starts clears what a dead one left in one go.
- A token login writes no broadcast cursor when no broadcast came since
  the user's, reads an empty mailbox without a transaction, and a `rooms`
  of a user in no room is one plain query.
"""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from core.errors import ServiceError
from messaging import events, selectors, services
from messaging.hub import Hub
from messaging.models import BroadcastCursor, Message, Presence
from messaging.runtime import runtime

from .helpers import connected, make_user


def _claim(user, channel=None):
    return services.presence_claim(user=user, channel_name=channel or f"chan-{user.username}")


def _other_process_row(user):
    now = timezone.now()
    Presence.objects.create(
        user=user, channel_name="theirs", host="another-host", pid=1, connected_at=now, heartbeat_at=now
    )


# --- The stop ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_stop_ends_this_process_presence_in_a_few_statements(capture_pushes, monkeypatch):
    monkeypatch.setattr(events, "PRESENCE_CHUNK", 10)
    users = [make_user(f"u{i:02}") for i in range(25)]
    elsewhere = make_user("elsewhere")
    sender = make_user("sender")
    for user in users:
        _claim(user)
    _other_process_row(elsewhere)
    broadcast = services.message_broadcast(sender=sender, body="before the stop")

    with capture_pushes() as pushes, CaptureQueriesContext(connection) as queries:
        ended = services.presence_release_process()

    assert ended == sorted(u.username for u in users)
    assert list(Presence.objects.values_list("user__username", flat=True)) == ["elsewhere"]
    # Each user's cursor is at the latest broadcast and their last_seen is set:
    # what a release one by one did.
    cursors = dict(BroadcastCursor.objects.values_list("user_id", "up_to"))
    assert all(cursors[u.pk] == broadcast.message.pk for u in users)
    assert not User.objects.filter(pk__in=[u.pk for u in users], last_seen__isnull=True).exists()
    # A statement per 500 users, not a transaction per user (25 here).
    assert len(queries) <= 8, [q["sql"] for q in queries]
    # Everyone is told, ten names an event.
    told = [p.event for p in pushes if p.event["type"] == events.HUB_PRESENCE]
    assert [len(e["usernames"]) for e in told] == [10, 10, 5]
    assert all(e["online"] is False for e in told)
    assert sorted(n for e in told for n in e["usernames"]) == ended


@pytest.mark.django_db
def test_a_start_clears_what_dead_processes_left_in_one_go(capture_pushes):
    now = timezone.now()
    dead = [make_user(f"d{i:02}") for i in range(20)]
    for i, user in enumerate(dead):
        Presence.objects.create(
            user=user,
            channel_name=f"dead-{i}",
            host=services.HOST,
            pid=2**22 + 1 + i % 3,
            connected_at=now,
            heartbeat_at=now,
        )
    kept, stale = make_user("kept"), make_user("stale")
    _claim(kept, "kept-chan")
    _claim(stale, "stale-chan")  # our pid, but no socket here holds it
    _other_process_row(make_user("elsewhere"))

    with capture_pushes() as pushes, CaptureQueriesContext(connection) as queries:
        cleared = services.presence_clear_dead_processes(keep=["kept-chan"])

    assert cleared == sorted([u.username for u in dead] + ["stale"])
    assert sorted(Presence.objects.values_list("user__username", flat=True)) == ["elsewhere", "kept"]
    assert len(queries) <= 10, [q["sql"] for q in queries]
    told = [p.event for p in pushes if p.event["type"] == events.HUB_PRESENCE]
    assert len(told) == 1 and sorted(told[0]["usernames"]) == cleared


@pytest.mark.django_db
def test_a_start_with_nothing_left_behind_writes_nothing(capture_pushes):
    _claim(make_user("alive"))
    with capture_pushes() as pushes, CaptureQueriesContext(connection) as queries:
        assert services.presence_clear_dead_processes(keep=["chan-alive"]) == []
    assert pushes == [] and len(queries) <= 2


def test_the_hub_hands_a_change_of_many_to_each_connection_as_it_asked():
    got: dict[str, list[str]] = {}

    asked = []

    class Conn:
        logged_in, flushing, user_id = True, False, 1

        def __init__(self, name, batched):
            self.channel_name, self.batched = name, batched

        @property
        def presence_batched(self):
            asked.append(self.channel_name)
            return self.batched

        def deliver(self, texts, message_ids=None):
            got.setdefault(self.channel_name, []).extend(texts)

    async def run():
        hub = Hub()
        hub.add(Conn("plain", False))
        hub.add(Conn("batched", True))
        hub.dispatch({"type": events.HUB_PRESENCE, "usernames": ["ann", "ben"], "online": False})
        hub.dispatch({"type": events.HUB_PRESENCE, "username": "cat", "online": True})
        assert hub.changes == {"ann": False, "ben": False, "cat": True}
        # A presence event walks the plain ones only: no connection is asked
        # how it takes presence (at 10,000 connections, for each login).
        asked.clear()
        hub.dispatch({"type": events.HUB_PRESENCE, "username": "dan", "online": True})
        assert asked == []
        hub.leave(hub.connections["plain"])
        assert not hub.plain
        hub.stop()

    asyncio.run(run())
    # Protocol 1.0's listener: one presence event per user; the batched one
    # gets them in its next presence_batch.
    assert [f.replace(" ", "") for f in got["plain"]] == [
        '{"type":"presence","username":"ann","online":false}',
        '{"type":"presence","username":"ben","online":false}',
        '{"type":"presence","username":"cat","online":true}',
        '{"type":"presence","username":"dan","online":true}',
    ]
    assert "batched" not in got


@pytest.fixture
def people(transactional_db):
    for name in ("alice", "bob", "carol"):
        make_user(name)


async def test_the_stop_releases_once_for_all_and_no_socket_releases_its_own(people, monkeypatch):
    released = []
    real_release = services.presence_release

    def release(**kwargs):
        released.append(kwargs["channel_name"])
        return real_release(**kwargs)

    monkeypatch.setattr(services, "presence_release", release)
    pump_running = []
    real_release_process = services.presence_release_process

    def release_process():
        # The heartbeat is stopped first: a tick now would find the rows
        # gone and end each socket as "expired" before it is told why.
        pump_running.append(runtime.pump.task is not None)
        return real_release_process()

    monkeypatch.setattr(services, "presence_release_process", release_process)
    clients = [await connected(name) for name in ("alice", "bob", "carol")]
    assert runtime.pump.task is not None
    late = await sync_to_async(make_user)("dave")
    real_close = runtime._close_connections

    async def close_after_a_late_claim():
        # A login in flight when the stop began claims after the release.
        await sync_to_async(_claim)(late, "late-chan")
        await real_close()

    monkeypatch.setattr(runtime, "_close_connections", close_after_a_late_claim)
    await runtime.shutdown()
    for client in clients:
        ended = await client.event("session_ended")
        assert ended["action"] == "reconnect"
        assert await client.closed_with() == 1012
    assert released == [] and pump_running == [False, False]
    assert not await sync_to_async(Presence.objects.exists)()


# --- The logins after it -----------------------------------------------------------------------


def _writes(queries):
    return [q["sql"] for q in queries if q["sql"].split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]


@pytest.mark.django_db
def test_a_login_with_no_broadcast_since_its_cursor_writes_no_cursor():
    sender, alice = make_user("sender"), make_user("alice")
    services.message_broadcast(sender=sender, body="one")
    _claim(alice)
    services.presence_release(user=alice, channel_name="chan-alice")  # the cursor moves to "one"

    with CaptureQueriesContext(connection) as queries:
        _claim(alice)
    assert not [sql for sql in _writes(queries) if "broadcastcursor" in sql.lower()]

    # A broadcast while offline: the next login catches up and moves it.
    services.presence_release(user=alice, channel_name="chan-alice")
    two = services.message_broadcast(sender=sender, body="two")
    _claim(alice)
    assert BroadcastCursor.objects.get(user=alice).up_to == two.message.pk
    assert selectors.pending_count(user=alice) == 2


@pytest.mark.django_db(transaction=True)
def test_an_empty_mailbox_is_read_in_one_query_outside_a_transaction():
    alice, bob = make_user("alice"), make_user("bob")
    seen = []

    def watch(execute, sql, params, many, context):
        seen.append((sql, connection.in_atomic_block))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch):
        assert services.delivery_flush_page(user=alice) == []
    assert len(seen) == 1 and seen[0][1] is False, seen

    services.message_send(sender=bob, to_username="alice", body="hi")
    page = services.delivery_flush_page(user=alice)
    assert [e["body"] for e in page] == ["hi"]
    assert Message.objects.get(body="hi").deliveries.get().pushed_at is not None


def _unbuilt(*args, **kwargs):
    raise AssertionError("built a query that can only find nothing")


@pytest.mark.django_db
def test_rooms_of_a_user_in_no_room_is_one_plain_query(django_assert_num_queries, monkeypatch):
    """Building room_objects' query is the cost (Django resolves and
    compiles its subqueries even when it finds nothing): not for nobody."""
    alice, bob = make_user("alice"), make_user("bob")
    room = services.room_create(user=bob, name="team").room["id"]
    monkeypatch.setattr(selectors, "room_objects", _unbuilt)
    with django_assert_num_queries(1):
        assert selectors.room_list(user=alice) == []
    monkeypatch.undo()
    assert [r["id"] for r in selectors.room_list(user=bob)] == [room]


def test_the_extras_of_an_empty_page_build_no_query(monkeypatch):
    monkeypatch.setattr(selectors.Message.objects, "filter", _unbuilt)
    monkeypatch.setattr(selectors.Reaction.objects, "filter", _unbuilt)
    extras = selectors.message_extras(messages=[])
    assert (extras.replies, extras.reactions) == ({}, {})


@pytest.mark.django_db
def test_a_login_claims_and_counts_in_one_transaction_and_undoes_both_on_failure(capture_pushes, monkeypatch):
    from messaging.services import presence

    alice, bob = make_user("alice"), make_user("bob")
    services.message_send(sender=bob, to_username="alice", body="waiting")
    with capture_pushes():
        assert services.presence_login(user=alice, channel_name="a1") == (None, 1)
    services.presence_release(user=alice, channel_name="a1")

    def count_fails(**kwargs):
        raise RuntimeError("the count failed")

    monkeypatch.setattr(presence, "pending_rows", count_fails)
    with capture_pushes() as pushes, pytest.raises(RuntimeError):
        services.presence_login(user=alice, channel_name="a2")
    assert not Presence.objects.filter(user=alice).exists()
    assert pushes == []  # nobody was told alice came online


async def test_a_login_with_nothing_waiting_reads_no_page_and_misses_nothing(people, monkeypatch):
    pages = []
    real_page = services.delivery_flush_page

    def page(**kwargs):
        pages.append(kwargs["user"].username)
        return real_page(**kwargs)

    monkeypatch.setattr(services, "delivery_flush_page", page)
    bob = await connected("bob")
    alice = await connected()
    reply = await alice.login("alice")
    assert reply["pending"] == 0
    await bob.ok("send", to="alice", body="live")
    assert (await alice.event("message"))["body"] == "live"
    assert pages == []

    # Something waiting: the login reads it, a page, as ever.
    await alice.close()
    await bob.ok("send", to="alice", body="stored")
    again = await connected()
    assert (await again.login("alice"))["pending"] == 2  # "live" was never acked
    got = [(await again.event("message"))["body"] for _ in range(2)]
    assert got == ["live", "stored"] and pages and set(pages) == {"alice"}


async def test_a_login_whose_socket_closed_meanwhile_claims_nothing(people, monkeypatch):
    """A client that gave up waiting for its login (a restart's storm) has
    closed its socket: the claim is not made for nobody."""
    from messaging.transport import transport_for

    from .helpers import PASSWORD

    gone = []
    real_subscribe = events.subscribe

    async def subscribe(*args, **kwargs):
        gone.append(True)  # the socket closes while the login is under way
        await real_subscribe(*args, **kwargs)

    client = await connected()
    monkeypatch.setattr(type(transport_for(lambda message: None)), "peer_gone", lambda self: bool(gone))
    monkeypatch.setattr(events, "subscribe", subscribe)
    reply = await client.request("login", username="alice", password=PASSWORD)
    assert reply["type"] == "error" and gone
    assert not await sync_to_async(Presence.objects.exists)()


async def test_a_token_login_whose_socket_closes_is_cancelled_before_its_claim(people, monkeypatch):
    """A client that gave up on its token login (its request timed out in a
    restart's storm) closes the socket: the login stops there, though the
    consumer reads nothing else while a login runs. The connection ends
    at once, not when the token's lookup comes back, and nothing is
    claimed for nobody."""
    import threading

    from accounts import selectors as account_selectors

    token = (await (first := await connected()).login("alice"))["token"]
    await first.close()
    started, release = threading.Event(), threading.Event()
    lookup, claims = account_selectors.sessions_check, []

    def slow_lookup(**kwargs):
        started.set()
        release.wait(10)
        return lookup(**kwargs)

    monkeypatch.setattr(account_selectors, "sessions_check", slow_lookup)
    before_claims(monkeypatch, lambda requests: claims.extend(r.channel_name for r in requests))
    client = await connected()
    await client.send_raw(f'{{"type": "login", "token": "{token}", "ref": 1}}')
    assert await asyncio.to_thread(started.wait, 5)
    await client.comm.send_input({"type": "websocket.disconnect", "code": 1006})
    try:
        await asyncio.wait_for(asyncio.shield(client.comm.future), 3)  # the lookup still runs
    finally:
        release.set()
    await asyncio.sleep(0.2)
    assert claims == []
    assert not await sync_to_async(Presence.objects.exists)()


async def test_a_cookie_login_whose_socket_closes_is_cancelled(people, monkeypatch):
    """The page's login by its cookie runs as the socket opens, the same
    way: a close meanwhile cancels it, before the claim."""
    from django.test import Client

    from .helpers import PASSWORD, ProtocolClient

    http = Client()
    await sync_to_async(http.login)(username="alice", password=PASSWORD)
    cookie = f"sessionid={http.cookies['sessionid'].value}".encode()
    joining, release, claims = asyncio.Event(), asyncio.Event(), []
    real_subscribe = events.subscribe

    async def slow_subscribe(*args, **kwargs):
        joining.set()
        await release.wait()
        await real_subscribe(*args, **kwargs)

    monkeypatch.setattr(events, "subscribe", slow_subscribe)
    before_claims(monkeypatch, lambda requests: claims.extend(r.channel_name for r in requests))
    page = await ProtocolClient(headers=[(b"cookie", cookie)]).connect()
    await asyncio.wait_for(joining.wait(), 5)
    await page.comm.send_input({"type": "websocket.disconnect", "code": 1001})
    try:
        await asyncio.wait_for(asyncio.shield(page.comm.future), 3)
    finally:
        release.set()
    await asyncio.sleep(0.2)
    assert claims == []
    assert not await sync_to_async(Presence.objects.exists)()


# --- Logins in turns ---------------------------------------------------------------------------


def before_claims(monkeypatch, before):
    """Call `before(requests)` in the database thread ahead of each batch of
    logins' claims that the writer commits."""
    from messaging.services import batch

    real = batch._SERVICES[services.ClaimRequest]

    def claims(*, requests):
        before(requests)
        return real(requests=requests)

    monkeypatch.setitem(batch._SERVICES, services.ClaimRequest, claims)


@pytest.fixture
def held_claim(monkeypatch):
    """The claims of logins wait until `release` is set (in the database
    thread); `claiming` is set once one waits there."""
    import threading

    claiming, release = threading.Event(), threading.Event()

    def hold(requests):
        claiming.set()
        release.wait(10)

    before_claims(monkeypatch, hold)
    yield claiming, release
    release.set()


async def token_for(name):
    """A resume token of `name`'s, made without a login (whose claim the
    tests below hold)."""
    from accounts import services as accounts

    user = await sync_to_async(User.objects.get)(username=name)
    return await sync_to_async(accounts.session_create)(user=user)


async def alice_held_at_her_claim(settings, held_claim, *, wait):
    """Token logins take turns one at a time, each waiting at most `wait`
    seconds for its turn; alice's is started and held at its claim (until
    held_claim's `release`). Returns her client, her pending login and
    bob's token (made before: the held claim holds the database thread)."""
    settings.CHAT_LOGINS_IN_PROGRESS, settings.CHAT_LOGIN_WAIT_SECONDS = 1, wait
    claiming, _ = held_claim
    alice, token, bobs = await connected(), await token_for("alice"), await token_for("bob")
    first = asyncio.ensure_future(alice.request("login", token=token))
    assert await asyncio.to_thread(claiming.wait, 5)
    return alice, first, bobs


async def test_logins_that_come_while_others_are_claimed_are_claimed_together(people, monkeypatch):
    """A restart's crowd logs in at once: the claims that queue while the
    writer commits a batch go to the database together, and each login
    gets its own answer."""
    import threading

    tokens = {name: await token_for(name) for name in ("alice", "bob", "carol")}
    batches, release = [], threading.Event()

    def hold_the_first(requests):
        batches.append(sorted(r.user.username for r in requests))
        if len(batches) == 1:
            release.wait(10)

    before_claims(monkeypatch, hold_the_first)
    clients = {name: await connected() for name in tokens}
    first = asyncio.ensure_future(clients["alice"].request("login", token=tokens["alice"]))
    for _ in range(500):
        if batches:
            break
        await asyncio.sleep(0.01)
    others = [asyncio.ensure_future(clients[n].request("login", token=tokens[n])) for n in ("bob", "carol")]
    for _ in range(500):
        if len(runtime.writer.queue) == 2:
            break
        await asyncio.sleep(0.01)
    release.set()
    replies = [await first, *[await other for other in others]]
    assert [(r["type"], r["username"]) for r in replies] == [("ok", "alice"), ("ok", "bob"), ("ok", "carol")]
    assert batches == [["alice"], ["bob", "carol"]]
    online = sync_to_async(selectors.online_usernames, thread_sensitive=False)
    assert await online() == ["alice", "bob", "carol"]
    for client in clients.values():
        await client.close()


async def test_a_claim_committed_for_a_socket_gone_meanwhile_is_let_go(people, monkeypatch):
    """A socket that closes while its login's batch commits (after the batch
    looked whether it was gone) leaves no row that nobody holds: the user
    is let go at once, not online to everyone until the row expires."""
    import threading

    from messaging.transport import transport_for

    token, claiming, release = await token_for("alice"), threading.Event(), threading.Event()

    def hold(requests):
        claiming.set()
        release.wait(10)

    before_claims(monkeypatch, hold)
    monkeypatch.setattr(type(transport_for(lambda message: None)), "peer_gone", lambda self: False)
    alice = await connected()
    login = asyncio.ensure_future(alice.request("login", token=token))
    assert await asyncio.to_thread(claiming.wait, 5)
    await alice.comm.send_input({"type": "websocket.disconnect", "code": 1006})
    await asyncio.sleep(0.2)
    release.set()
    await runtime.writer.drain()
    assert not await sync_to_async(Presence.objects.exists, thread_sensitive=False)()
    login.cancel()


async def test_token_lookups_that_come_together_are_one_query(people, monkeypatch):
    """Each login's token is looked up with those that arrive with it, in
    one sessions_check: each gets its own user, or None; a failed lookup
    fails its logins, and the next lookup is made afresh."""
    from accounts import selectors as account_selectors
    from messaging.lookups import SessionLookups

    tokens = {name: await token_for(name) for name in ("alice", "bob")}
    calls, real = [], account_selectors.sessions_check

    def check(*, session_keys):
        calls.append(sorted(session_keys))
        return real(session_keys=session_keys)

    monkeypatch.setattr(account_selectors, "sessions_check", check)
    lookups = SessionLookups()
    keys = [tokens["alice"], tokens["bob"], "no-such-token", tokens["alice"]]
    users = await asyncio.gather(*(lookups.user_for(key) for key in keys))
    assert [user and user.username for user in users] == ["alice", "bob", None, "alice"]
    assert calls == [sorted({tokens["alice"], tokens["bob"], "no-such-token"})]

    def broken(*, session_keys):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(account_selectors, "sessions_check", broken)
    with pytest.raises(RuntimeError):
        await lookups.user_for(tokens["bob"])
    monkeypatch.setattr(account_selectors, "sessions_check", check)
    assert (await lookups.user_for(tokens["bob"])).username == "bob"


async def test_a_cancelled_lookup_fails_the_logins_taken_and_those_queued(people, monkeypatch):
    """A shutdown cancels the lookup under way: the logins it had taken
    and those queued behind it for the next lookup fail at once, none
    waits for a lookup nobody will start; so do the logins of a lookup
    cancelled before it started."""
    import threading

    from accounts import selectors as account_selectors
    from messaging.lookups import SessionLookups

    entered, release, left = threading.Event(), threading.Event(), threading.Event()
    real = account_selectors.sessions_check

    def held(*, session_keys):
        try:
            entered.set()
            release.wait(5)
            return real(session_keys=session_keys)
        finally:
            left.set()

    monkeypatch.setattr(account_selectors, "sessions_check", held)
    lookups = SessionLookups()
    taken = asyncio.ensure_future(lookups.user_for("first"))
    await sync_to_async(entered.wait, thread_sensitive=False)(5)
    queued = asyncio.ensure_future(lookups.user_for("second"))
    await asyncio.sleep(0)
    assert lookups.task is not None
    lookups.task.cancel()
    done, _ = await asyncio.wait([taken, queued], timeout=2)
    release.set()
    await sync_to_async(left.wait, thread_sensitive=False)(5)  # the thread is done with the database
    assert done == {taken, queued}
    for login in (taken, queued):
        with pytest.raises(RuntimeError, match="cancelled"):
            login.result()
    assert not lookups.waiting

    unstarted = asyncio.ensure_future(lookups.user_for("third"))
    await asyncio.sleep(0)  # user_for has made the task, which has not run yet
    lookups.task.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        await asyncio.wait_for(unstarted, 2)
    assert not lookups.waiting


async def test_a_login_past_the_logins_in_progress_is_told_to_come_back(people, settings, held_claim):
    """At most CHAT_LOGINS_IN_PROGRESS token logins at once; one that
    would wait longer than CHAT_LOGIN_WAIT_SECONDS is refused at once,
    `unavailable` with a `retry_after`, and nothing of it is done: no
    session, no presence. Once the first has ended, it logs in."""
    from django.contrib.sessions.models import Session

    from accounts.models import LoginAttempt

    alice, first, token = await alice_held_at_her_claim(settings, held_claim, wait=0)
    _, release = held_claim
    bob = await connected()
    # Counted beside the database thread, which the first login's claim holds.
    sessions = await sync_to_async(Session.objects.count, thread_sensitive=False)()
    attempts = await sync_to_async(LoginAttempt.objects.count, thread_sensitive=False)()
    refused = await bob.error("login", "unavailable", token=token)
    assert isinstance(refused["retry_after"], int) and refused["retry_after"] >= 1
    assert await sync_to_async(Session.objects.count, thread_sensitive=False)() == sessions
    assert await sync_to_async(LoginAttempt.objects.count, thread_sensitive=False)() == attempts
    bob_online = Presence.objects.filter(user__username="bob").exists
    assert not await sync_to_async(bob_online, thread_sensitive=False)()
    assert (await bob.ok("whoami"))["username"] is None
    release.set()
    assert (await first)["type"] == "ok"
    assert (await bob.ok("login", token=token))["username"] == "bob"
    await alice.close()
    await bob.close()


async def test_a_password_login_never_waits_for_a_turn(people, settings, held_claim):
    """Only logins that check no password (a token, a session: how clients
    come back after a restart) take turns: a password login keeps the
    contract's answers, and its cost is bounded by the hashing pool."""
    alice, first, _ = await alice_held_at_her_claim(settings, held_claim, wait=0)
    _, release = held_claim
    carol = await connected()
    second = asyncio.ensure_future(carol.request("login", username="carol", password="correct-horse-42"))
    await asyncio.sleep(0.3)
    assert not second.done()  # at its claim, held like the first: not refused
    release.set()
    assert (await first)["type"] == "ok" and (await second)["type"] == "ok"
    await alice.close()
    await carol.close()


async def test_a_login_waits_its_turn_within_the_wait(people, settings, held_claim):
    """Within CHAT_LOGIN_WAIT_SECONDS a login waits for a slot, in order,
    and is served when one is free: refused only past the wait."""
    alice, first, token = await alice_held_at_her_claim(settings, held_claim, wait=5)
    _, release = held_claim
    bob = await connected()
    second = asyncio.ensure_future(bob.request("login", token=token))
    await asyncio.sleep(0.3)
    assert not second.done()
    release.set()
    assert (await first)["type"] == "ok" and (await second)["type"] == "ok"
    await alice.close()
    await bob.close()


async def test_the_logins_refused_are_given_times_one_after_another(settings):
    """The refused are booked at the pace logins end, each a time of its
    own: a crowd comes back spread, not as a herd in the same second."""
    from messaging.runtime import LoginGate

    settings.CHAT_LOGINS_IN_PROGRESS, settings.CHAT_LOGIN_WAIT_SECONDS = 1, 1  # promised: 1 a second
    gate = LoginGate()
    told = []
    async with gate.slot():
        waiting = asyncio.ensure_future(gate.slot().__aenter__())  # one waits: its turn comes within 1 s
        await asyncio.sleep(0)
        for _ in range(4):
            with pytest.raises(ServiceError) as refused:
                await gate.slot().__aenter__()
            told.append(refused.value.extra["retry_after"])
    await waiting
    assert told == [2, 3, 4, 5]
    assert gate.in_progress == 1 and not gate.waiting


async def test_a_page_past_the_logins_in_progress_is_closed_to_come_back(people, settings, monkeypatch):
    """The page's login by its cookie takes its turn the same way; refused,
    it is told `unavailable` and closed with 1013 (try again later), and
    the page reconnects by itself."""
    from django.test import Client

    from .helpers import PASSWORD, ProtocolClient

    http = Client()
    await sync_to_async(http.login)(username="bob", password=PASSWORD)
    cookie = f"sessionid={http.cookies['sessionid'].value}".encode()
    settings.CHAT_LOGINS_IN_PROGRESS, settings.CHAT_LOGIN_WAIT_SECONDS = 1, 0
    # The first login waits in its subscription, not in the database thread
    # (which the page's handshake needs, to read its session).
    joining, release = asyncio.Event(), asyncio.Event()
    real_subscribe = events.subscribe

    async def slow_subscribe(*args, **kwargs):
        joining.set()
        await release.wait()
        await real_subscribe(*args, **kwargs)

    monkeypatch.setattr(events, "subscribe", slow_subscribe)
    alice = await connected()
    first = asyncio.ensure_future(alice.request("login", token=await token_for("alice")))
    await asyncio.wait_for(joining.wait(), 5)
    page = await ProtocolClient(headers=[(b"cookie", cookie)]).connect()
    error = await page.event("error")
    assert error["code"] == "unavailable" and error["retry_after"] >= 1
    assert await page.closed_with() == 1013
    release.set()
    assert (await first)["type"] == "ok"
    await alice.close()


async def test_a_read_hops_to_the_pool_with_the_callers_context(monkeypatch):
    """`read` (the ops' selectors) is a plain executor hop, cheaper than
    asgiref's: it still runs off the event loop's thread, sees the
    caller's context, closes stale database connections around the call,
    and raises what the selector raises."""
    import contextvars
    import threading

    from messaging import lookups

    who = contextvars.ContextVar("who")
    who.set("the caller")
    closed = []
    monkeypatch.setattr(lookups, "close_old_connections", lambda: closed.append(threading.get_ident()))

    def selector(*, n):
        return threading.get_ident(), who.get(), n

    thread, seen, n = await lookups.read(selector, n=3)
    assert thread != threading.get_ident() and seen == "the caller" and n == 3
    assert closed == [thread, thread]

    def failing():
        raise ServiceError("unknown_user", "No such user.")

    with pytest.raises(ServiceError):
        await lookups.read(failing)


async def test_a_connection_told_to_come_back_is_not_closed_for_waiting(people, settings, held_claim):
    """An anonymous connection is closed after CHAT_LOGIN_DEADLINE_SECONDS;
    one told to log in again in `retry_after` seconds is kept that long,
    and the deadline's length after it: a crowd told to come back in a
    minute would otherwise be closed for doing as told."""
    alice, first, token = await alice_held_at_her_claim(settings, held_claim, wait=0)
    _, release = held_claim
    settings.CHAT_LOGIN_DEADLINE_SECONDS = 1  # bob's
    bob = await connected()
    opened = asyncio.get_running_loop().time()
    refused = await bob.error("login", "unavailable", token=token)
    told = asyncio.get_running_loop().time()
    assert refused["retry_after"] == 1
    await asyncio.sleep(opened + 1.5 - asyncio.get_running_loop().time())  # past the first deadline
    assert not bob.closed.is_set()
    assert await bob.closed_with(timeout=3) == 1008  # then closed, at retry_after + deadline
    assert asyncio.get_running_loop().time() - told >= 1.9
    release.set()
    assert (await first)["type"] == "ok"
    await alice.close()
