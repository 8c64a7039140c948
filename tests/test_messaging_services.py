"""Messaging services against the database."""

import os
import subprocess
import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from core.errors import ServiceError
from core.protocol import CLOSE_REPLACED
from messaging import events, selectors, services, wire
from messaging.models import Block, ClientRequest, Delivery, Edit, Message, Presence, ReadMark

from .helpers import PASSWORD, make_user
from .test_accounts import run_parallel

User = get_user_model()


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


def online(user, channel="c"):
    return services.presence_claim(user=user, channel_name=f"{channel}-{user.username}")


@pytest.mark.django_db(transaction=True)
def test_message_is_committed_before_anyone_is_told(alice, bob, monkeypatch):
    """The push goes out on commit, and sees the message already stored."""
    seen = []
    monkeypatch.setattr(events, "_emit", lambda push: seen.append(Message.objects.filter(body="hi").exists()))
    services.message_send(sender=alice, to_username="bob", body="hi")
    assert seen == [True]


@pytest.mark.django_db
def test_send_stores_one_pending_delivery(alice, bob):
    sent = services.message_send(sender=alice, to_username="bob", body=" hi ")
    assert sent.live is False and sent.message.body == "hi"
    assert list(Delivery.objects.values_list("recipient__username", "acked_at")) == [("bob", None)]
    online(bob)
    assert services.message_send(sender=alice, to_username="bob", body="again").live is True


@pytest.mark.django_db
def test_blocked_send_stores_nothing(alice, bob):
    services.block_create(blocker=bob, username="alice")
    with pytest.raises(ServiceError) as e:
        services.message_send(sender=alice, to_username="bob", body="hi")
    assert (e.value.code, e.value.message) == ("blocked", "bob does not accept your messages.")
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_inactive_user_is_unknown(alice):
    make_user("gone", is_active=False)
    with pytest.raises(ServiceError) as e:
        services.message_send(sender=alice, to_username="gone", body="hi")
    assert (e.value.code, e.value.message) == ("unknown_user", "There is no user 'gone'.")


@pytest.mark.django_db
def test_a_private_message_is_pushed_and_marked_pushed_to_a_recipient_online_only(alice, bob, capture_pushes):
    services.message_send(sender=alice, to_username="bob", body="offline")
    online(bob)
    with capture_pushes() as pushes:
        services.message_send(sender=alice, to_username="bob", body="online")
    pushed = {d.message.body: d.pushed_at is not None for d in Delivery.objects.select_related("message")}
    assert pushed == {"offline": False, "online": True}
    [push] = pushes
    assert push.target == events.user_group(bob.pk)
    [frame] = push.event["frames"]
    assert (frame["body"], frame["stored"]) == ("online", False)


@pytest.mark.django_db
def test_broadcast_reaches_all_but_sender_and_blockers(alice, bob):
    carol, dave = make_user("carol"), make_user("dave")
    services.block_create(blocker=carol, username="alice")
    online(bob)
    done = services.message_broadcast(sender=alice, body="all")
    assert (done.live, done.stored) == (1, 1)
    # dave was offline: his row is written when he logs in (mailbox).
    assert set(Delivery.objects.filter(message=done.message).values_list("recipient__username", flat=True)) == {"bob"}
    online(carol)
    online(dave)
    assert set(Delivery.objects.filter(message=done.message).values_list("recipient__username", flat=True)) == {
        "bob",
        "dave",
    }
    assert selectors.message_history(user=carol, peer=None) == []
    assert [m["body"] for m in selectors.message_history(user=dave, peer=None)] == ["all"]


@pytest.mark.django_db
def test_a_flushed_page_is_the_message_events_of_what_waited(alice, bob):
    private = services.message_send(sender=alice, to_username="bob", body="hi").message
    services.message_edit(user=alice, message_id=private.id, body="hi!")
    everyone = services.message_broadcast(sender=alice, body="all").message
    expected = [
        wire.message_event(Message.objects.select_related("sender", "recipient").get(pk=m.pk), stored=True)
        for m in (private, everyone)
    ]
    online(bob)  # his login writes the broadcast into his mailbox
    assert services.delivery_flush_page(user=bob) == expected
    assert expected[0]["edited_at"] is not None and expected[1]["to"] is None


@pytest.mark.django_db
def test_flush_ack_and_redeliver(alice, bob, settings):
    settings.CHAT_REDELIVER_SECONDS = 30
    m1 = services.message_send(sender=alice, to_username="bob", body="1").message
    m2 = services.message_send(sender=alice, to_username="bob", body="2").message
    assert [m["id"] for m in services.delivery_flush_page(user=bob)] == [m1.id, m2.id]
    assert [m["id"] for m in services.delivery_flush_page(user=bob, after=m1.id)] == [m2.id]
    services.delivery_ack(user=bob, ids=[m1.id])
    assert [m["id"] for m in services.delivery_flush_page(user=bob)] == [m2.id]
    services.presence_claim(user=bob, channel_name="chan-bob")
    assert services.delivery_redeliver(channel_names=["chan-bob"]) == 0  # pushed just now
    Delivery.objects.update(pushed_at=timezone.now() - timedelta(seconds=31))
    assert services.delivery_redeliver(channel_names=["chan-bob"]) == 1
    assert services.delivery_redeliver(channel_names=["chan-bob"]) == 0


@pytest.mark.django_db
def test_presence_claim_release_and_takeover(alice, capture_pushes):
    with capture_pushes() as pushes:
        assert online(alice, "one") is None
    assert [p.event for p in pushes] == [{"type": events.HUB_PRESENCE, "username": "alice", "online": True}]
    with pytest.raises(ServiceError) as e:
        online(alice, "two")
    assert (e.value.code, e.value.message) == (
        "already_online",
        "You are already connected elsewhere; log in with takeover to move here.",
    )
    with capture_pushes() as pushes:
        assert services.presence_claim(user=alice, channel_name="two", takeover=True) == "one-alice"
    assert [(p.target, p.event["type"]) for p in pushes] == [("one-alice", events.END)]  # online all along
    assert not services.presence_release(user=alice, channel_name="one-alice")  # not its row any more
    assert selectors.online_usernames() == ["alice"]
    with capture_pushes() as pushes:
        assert services.presence_release(user=alice, channel_name="two")
    assert [p.event for p in pushes] == [{"type": events.HUB_PRESENCE, "username": "alice", "online": False}]
    assert selectors.online_usernames() == []
    alice.refresh_from_db()
    assert alice.last_seen and alice.last_login


@pytest.mark.django_db
def test_a_login_claims_presence_and_counts_what_waits(alice, bob):
    services.message_send(sender=bob, to_username="alice", body="while you were out")
    assert services.presence_login(user=alice, channel_name="one") == (None, 1)
    with pytest.raises(ServiceError) as e:
        services.presence_login(user=alice, channel_name="two")
    assert e.value.code == "already_online"
    assert services.presence_login(user=alice, channel_name="two", takeover=True) == ("one", 1)
    services.presence_release(user=alice, channel_name="two")
    services.presence_login(user=alice, channel_name="three", session_key="s-alice")
    # Its session is what the session check looks at.
    assert list(Presence.objects.values_list("channel_name", "session_key")) == [("three", "s-alice")]


@pytest.mark.django_db
def test_logins_claimed_together_each_get_their_own_answer(capture_pushes):
    """The writer's batch of logins (a restart's crowd): those without a row
    are claimed together, each with its own count and its mailbox caught up;
    a closed socket, a user already online, the same user twice each get
    the answer they would get alone; everyone is told once who came."""
    from messaging.services import ClaimRequest

    alice, bob, carol, dave = (make_user(name) for name in ("alice", "bob", "carol", "dave"))
    services.message_send(sender=bob, to_username="alice", body="while you were out")
    services.message_broadcast(sender=dave, body="to everyone offline")
    services.presence_login(user=carol, channel_name="carol-1")
    with capture_pushes() as pushes:
        results = services.presence_logins(
            requests=[
                ClaimRequest(user=alice, channel_name="alice-1"),
                ClaimRequest(user=bob, channel_name="bob-1", gone=lambda: True),
                ClaimRequest(user=carol, channel_name="carol-2"),
                ClaimRequest(user=dave, channel_name="dave-1", session_key="s"),
                ClaimRequest(user=dave, channel_name="dave-2", takeover=True),
            ]
        )
    assert results[0] == (None, 2)  # her message, and the broadcast caught up
    assert isinstance(results[1], ServiceError)
    assert (results[1].code, results[1].message) == ("unavailable", "The connection closed before the login.")
    assert isinstance(results[2], ServiceError) and results[2].code == "already_online"
    assert results[3] == (None, 0)  # his own broadcast is not his to read
    assert results[4] == ("dave-1", 0)
    rows = Presence.objects.values_list("user__username", "channel_name", "session_key")
    assert sorted(rows) == [("alice", "alice-1", ""), ("carol", "carol-1", ""), ("dave", "dave-2", "")]
    assert [(p.target, p.event) for p in pushes] == [
        (events.HUB_GROUP, {"type": events.HUB_PRESENCE, "usernames": ["alice", "dave"], "online": True}),
        ("dave-1", {"type": events.END, "frame": {"type": "session_replaced"}, "code": CLOSE_REPLACED}),
    ]
    alice.refresh_from_db()
    assert alice.last_login is not None
    assert selectors.broadcast_cursor(user_id=alice.pk) == selectors.latest_broadcast_id() > 0
    bob.refresh_from_db()
    assert not Presence.objects.filter(user=bob).exists() and bob.last_login is None


@pytest.mark.django_db
def test_logins_claimed_together_that_meet_a_row_claimed_meanwhile_go_one_by_one(capture_pushes, monkeypatch):
    """Another process claimed one of the batch's users between the look and
    the insert: the insert fails for all, and each claim is made alone,
    with the answer it would have had alone."""
    from messaging.services import ClaimRequest, presence

    alice, bob = make_user("alice"), make_user("bob")
    services.message_send(sender=bob, to_username="alice", body="while you were out")
    services.presence_login(user=bob, channel_name="elsewhere")
    monkeypatch.setattr(presence, "_held", lambda user_ids: set())  # looked before bob's claim committed
    with capture_pushes() as pushes:
        results = services.presence_logins(
            requests=[ClaimRequest(user=alice, channel_name="alice-1"), ClaimRequest(user=bob, channel_name="bob-1")]
        )
    assert results[0] == (None, 1)
    assert isinstance(results[1], ServiceError) and results[1].code == "already_online"
    rows = sorted(Presence.objects.values_list("user__username", "channel_name"))
    assert rows == [("alice", "alice-1"), ("bob", "elsewhere")]
    assert [p.event for p in pushes] == [{"type": events.HUB_PRESENCE, "username": "alice", "online": True}]


@pytest.mark.django_db
def test_stale_presence_is_not_online_and_can_be_replaced(alice, settings, capture_pushes):
    online(alice, "old")
    Presence.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=settings.CHAT_PRESENCE_TIMEOUT_SECONDS + 1))
    assert selectors.online_usernames() == []
    with capture_pushes() as pushes:
        assert online(alice, "new") == "old-alice"  # no takeover needed
    assert selectors.online_usernames() == ["alice"]
    # Offline until now: everyone is told she came online.
    assert [(p.target, p.event["type"]) for p in pushes] == [
        ("old-alice", events.END),
        (events.HUB_GROUP, events.HUB_PRESENCE),
    ]
    assert pushes[1].event["online"] is True


@pytest.mark.django_db
def test_tick_ends_connections_that_lost_their_row(alice, bob, capture_pushes):
    online(alice, "a")
    with capture_pushes() as pushes:
        assert services.presence_tick(channel_names=["a-alice", "gone"]) == ["gone"]
    assert [(p.target, p.event["type"], p.event["frame"]) for p in pushes] == [
        (
            "gone",
            events.END,
            {"type": "session_ended", "reason": "Your connection expired; reconnect.", "action": "reconnect"},
        )
    ]


def leak_rows(count, *, at):
    """`count` users with a presence row of this process that no connection
    here holds (their release failed), last heard from `at`."""
    from accounts import services as accounts

    accounts.user_bulk_create(usernames=[f"l{i}" for i in range(count)], password=PASSWORD)
    Presence.objects.bulk_create(
        Presence(
            user=u,
            channel_name=f"leaked-{u.pk}",
            host=services.HOST,
            pid=services.PID,
            connected_at=at,
            heartbeat_at=at,
        )
        for u in User.objects.filter(username__startswith="l")
    )


@pytest.mark.django_db
def test_past_500_leaked_rows_a_tick_refreshes_the_held_rows_by_name(alice):
    """Rows of this process that no connection here holds (their release
    failed) keep their heartbeat and expire; past 500 of them the held
    rows are refreshed by name instead."""
    old = timezone.now() - timedelta(seconds=20)  # past a third of the timeout: due
    leak_rows(501, at=old)
    online(alice, "a")
    Presence.objects.update(heartbeat_at=old)
    assert services.presence_tick(channel_names=["a-alice"], expire=False) == []
    assert list(Presence.objects.filter(heartbeat_at__gt=old).values_list("channel_name", flat=True)) == ["a-alice"]


@pytest.mark.django_db
def test_a_tick_expires_the_rows_whose_heartbeat_stopped(alice, bob, settings, capture_pushes):
    """A dead process elsewhere left alice's row: the next tick anywhere
    takes her offline, last seen at her last heartbeat."""
    online(alice, "a")
    online(bob, "b")
    stale = timezone.now() - timedelta(seconds=settings.CHAT_PRESENCE_TIMEOUT_SECONDS + 1)
    Presence.objects.filter(user=alice).update(heartbeat_at=stale, host="other-host")
    with capture_pushes() as pushes:
        assert services.presence_tick(channel_names=["b-bob"]) == []
    assert selectors.online_usernames() == ["bob"] and Presence.objects.count() == 1
    assert [p.event for p in pushes] == [{"type": events.HUB_PRESENCE, "username": "alice", "online": False}]
    alice.refresh_from_db()
    assert alice.last_seen == stale
    Presence.objects.update(heartbeat_at=stale)
    assert services.presence_expire() == ["bob"]
    assert services.presence_expire() == []


@pytest.mark.django_db
def test_server_start_clears_rows_of_dead_processes_on_this_host(alice, bob):
    now = timezone.now()
    Presence.objects.create(
        user=alice, channel_name="x", host=services.HOST, pid=2**22 + 12345, connected_at=now, heartbeat_at=now
    )
    Presence.objects.create(user=bob, channel_name="y", host="other-host", pid=1, connected_at=now, heartbeat_at=now)
    assert services.presence_clear_dead_processes() == ["alice"]
    assert selectors.online_usernames() == ["bob"]


@pytest.mark.django_db
def test_server_start_spares_live_processes_and_the_connections_it_keeps(alice, bob, capture_pushes, monkeypatch):
    """Rows of this process outside `keep` and of dead processes go (each
    user told, once, and last seen now); rows of live processes stay, and
    asking whether one runs sends it no signal."""
    now = timezone.now()
    users = {name: make_user(name) for name in ("carol", "dave", "erin")}
    live = subprocess.Popen(["sleep", "60"])
    others = 2**22 + 777  # a process of another user: kill() may not signal it
    real_kill = os.kill

    def kill(pid, signal):
        if pid == others:
            raise PermissionError
        return real_kill(pid, signal)

    monkeypatch.setattr(os, "kill", kill)
    rows = [
        (alice, "kept", services.PID),
        (bob, "leaked", services.PID),
        (users["carol"], "live", live.pid),
        (users["dave"], "dead", 2**22 + 12345),
        (users["erin"], "others", others),
    ]
    try:
        for user, channel, pid in rows:
            Presence.objects.create(
                user=user, channel_name=channel, host=services.HOST, pid=pid, connected_at=now, heartbeat_at=now
            )
        with capture_pushes() as pushes:
            assert services.presence_clear_dead_processes(keep=["kept"]) == ["bob", "dave"]
        with pytest.raises(subprocess.TimeoutExpired):
            live.wait(timeout=0.2)  # still running
        assert selectors.online_usernames() == ["alice", "carol", "erin"]
        # Without `keep`, every row of this process is left over from before.
        assert services.presence_clear_dead_processes() == ["alice"]
    finally:
        live.kill()
        live.wait()
    assert [p.event for p in pushes] == [{"type": events.HUB_PRESENCE, "usernames": ["bob", "dave"], "online": False}]
    ended = User.objects.filter(last_seen__gte=now).values_list("username", flat=True)
    assert sorted(ended) == ["alice", "bob", "dave"]


@pytest.mark.django_db
def test_rows_of_a_stopping_process_are_ended_a_chunk_at_a_time_every_one(alice, monkeypatch):
    from django.test.utils import CaptureQueriesContext

    from messaging.services import presence

    monkeypatch.setattr(presence, "_CHUNK", 2)
    users = [alice] + [make_user(f"u{i}") for i in range(4)]
    for user in users:
        online(user)
    now = timezone.now()
    for name, host, pid in (("sibling", services.HOST, services.PID + 1), ("remote", "other-host", services.PID)):
        Presence.objects.create(
            user=make_user(name), channel_name=name, host=host, pid=pid, connected_at=now, heartbeat_at=now
        )
    with CaptureQueriesContext(connection) as queries:
        assert services.presence_release_process() == sorted(u.username for u in users)
    assert selectors.online_usernames() == ["remote", "sibling"]  # other processes' connections
    assert not User.objects.filter(pk__in=[u.pk for u in users], last_seen__isnull=True).exists()
    table = User._meta.db_table
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(f'UPDATE "{table}"')]
    assert len(updates) == 3, updates  # 5 users, 2 a statement


@pytest.mark.django_db
def test_an_administrator_ends_a_connection_and_the_user_goes_offline(alice, capture_pushes):
    online(alice, "a")
    with capture_pushes() as pushes:
        assert services.presence_disconnect(user=alice)
    assert [(p.target, p.event["type"]) for p in pushes] == [
        (events.HUB_GROUP, events.HUB_PRESENCE),
        ("a-alice", events.END),
    ]
    assert pushes[0].event["username"] == "alice" and pushes[0].event["online"] is False
    assert pushes[1].event["frame"] == {
        "type": "session_ended",
        "reason": "An administrator ended your session.",
        "action": "stop",
    }
    assert not Presence.objects.exists()
    alice.refresh_from_db()
    assert alice.last_seen
    assert not services.presence_disconnect(user=alice)  # nothing left to end


@pytest.mark.django_db
def test_a_deactivated_account_cannot_log_in_and_its_connection_ends(alice, capture_pushes):
    from accounts import services as accounts

    online(alice, "a")
    with capture_pushes() as pushes:
        services.user_deactivate(user=alice)
    assert [p.event["frame"] for p in pushes if p.target == "a-alice"] == [
        {"type": "session_ended", "reason": "Your account was deactivated.", "action": "stop"}
    ]
    assert selectors.online_usernames() == []
    with pytest.raises(ServiceError):
        accounts.user_authenticate(username="alice", password=PASSWORD, ip="127.0.0.1")


@pytest.mark.django_db
def test_a_deleted_account_loses_its_own_rows_only_and_its_connection_stops(alice, bob, capture_pushes):
    """account_delete removes alice's blocks, pending deliveries, read marks,
    client ids and unsent uploads, and nobody else's; what she acked and
    what she sent with a message stay; her connection is told to stop.
    (Mutants of account_delete survived: only the account page's test,
    outside the mutation selection, reached it.)"""
    from messaging.models import Attachment, Block

    make_user("carol")
    now = timezone.now()
    for blocker in (alice, bob):
        services.block_create(blocker=blocker, username="carol")
    acked = services.message_send(sender=bob, to_username="alice", body="acked").message
    Delivery.objects.filter(message=acked).update(acked_at=now)
    services.message_send(sender=bob, to_username="alice", body="pending")
    services.message_send(sender=alice, to_username="bob", body="for bob")
    for user, peer in ((alice, bob), (bob, alice)):
        services.conversations_read(requests=[services.ReadRequest(user=user, peer=peer, up_to=10**9)])
    for user in (alice, bob):
        ClientRequest.objects.create(sender=user, client_id="c1", created_at=now)

    def upload(user, message=None):
        return Attachment.objects.create(
            uploader=user, message=message, name="a.txt", size=1, content_type="text/plain", stored="", created_at=now
        ).pk

    sent, _, others = upload(alice, acked), upload(alice), upload(bob)
    online(alice, "a")
    with capture_pushes() as pushes:
        services.account_delete(user=alice)
    assert [p.event["frame"] for p in pushes if p.target == "a-alice"] == [
        {"type": "session_ended", "reason": "Your account was deleted.", "action": "stop"}
    ]
    assert list(Block.objects.values_list("blocker__username", flat=True)) == ["bob"]
    assert sorted(Delivery.objects.values_list("recipient_id", "message__body")) == [
        (alice.pk, "acked"),
        (bob.pk, "for bob"),
    ]
    assert list(ReadMark.objects.values_list("user_id", flat=True)) == [bob.pk]
    assert list(ClientRequest.objects.values_list("sender_id", flat=True)) == [bob.pk]
    assert sorted(Attachment.objects.values_list("pk", flat=True)) == sorted([sent, others])


@pytest.mark.django_db
def test_a_saved_account_or_a_logout_ends_its_connection_on_any_process(alice, bob, capture_pushes):
    """What messaging.receivers call: one user's recheck, and the end of one
    session's connections, look at every process's rows and end only what
    no longer holds, once."""
    from accounts import services as accounts

    tokens = {user.username: accounts.session_create(user=user) for user in (alice, bob)}
    for user in (alice, bob):
        Presence.objects.create(
            user=user,
            channel_name=f"far-{user.username}",
            host="another-host",
            pid=1,
            connected_at=timezone.now(),
            heartbeat_at=timezone.now(),
            session_key=tokens[user.username],
        )
    with capture_pushes() as pushes:
        assert services.presence_user_recheck(user_id=alice.pk) == []  # nothing changed
        assert services.presence_session_logged_out(session_key="") == []
        alice.set_password("another-horse-43")
        User.objects.filter(pk=alice.pk).update(password=alice.password)  # no signal: called below
        assert services.presence_user_recheck(user_id=alice.pk) == ["far-alice"]
        assert services.presence_user_recheck(user_id=alice.pk) == []
        assert services.presence_session_logged_out(session_key=tokens["bob"]) == ["far-bob"]
        assert services.presence_session_logged_out(session_key=tokens["bob"]) == []
    frames = {p.target: p.event["frame"] for p in pushes if p.event["type"] == events.END}
    assert "password" in frames["far-alice"]["reason"] and frames["far-alice"]["action"] == "login"
    assert "logged out" in frames["far-bob"]["reason"] and frames["far-bob"]["action"] == "login"
    assert selectors.online_usernames() == []


@pytest.mark.django_db
def test_the_session_check_ends_each_ended_login_once_and_rechecks_only_what_changed(
    alice, bob, capture_pushes, monkeypatch
):
    """A logout, a password change and a deactivation each end their
    connection, saying which; a login with no session is never ended; an
    unchanged login is not decoded again, and gone connections are forgotten."""
    from accounts import selectors as account_selectors
    from accounts import services as accounts

    carol, dave = make_user("carol"), make_user("dave")
    tokens = {}
    for user in (alice, bob, carol):
        tokens[user.username] = accounts.session_create(user=user)
        services.presence_claim(user=user, channel_name=f"c-{user.username}", session_key=tokens[user.username])
    online(dave)  # logged in with a password on the socket: no session to end
    checked = []
    real_check = account_selectors.sessions_check
    monkeypatch.setattr(account_selectors, "sessions_check", lambda keys: checked.extend(keys) or real_check(keys))
    names, verified = ["c-alice", "c-bob", "c-carol", "c-dave"], {"c-gone": 1}
    assert services.presence_sessions_check(channel_names=names, verified=verified) == []
    assert sorted(verified) == ["c-alice", "c-bob", "c-carol"] and len(checked) == 3
    checked.clear()
    assert services.presence_sessions_check(channel_names=names, verified=verified) == []
    assert checked == []

    started = timezone.now()
    accounts.session_end(session_key=tokens["alice"])
    bob.set_password("another-horse-43")
    bob.save()
    User.objects.filter(pk=carol.pk).update(is_active=False)
    with capture_pushes() as pushes:
        ended = services.presence_sessions_check(channel_names=names, verified=verified)
    assert sorted(ended) == ["c-alice", "c-bob", "c-carol"]
    assert verified == {}
    assert selectors.online_usernames() == ["dave"]
    assert sorted(User.objects.filter(last_seen__gte=started).values_list("username", flat=True)) == [
        "alice",
        "bob",
        "carol",
    ]
    offline = [(p.event["username"], p.event["online"]) for p in pushes if p.event["type"] == events.HUB_PRESENCE]
    assert sorted(offline) == [("alice", False), ("bob", False), ("carol", False)]
    frames = {p.target: p.event["frame"] for p in pushes if p.event["type"] == events.END}
    assert {name: (frame["reason"], frame["action"]) for name, frame in frames.items()} == {
        "c-alice": ("You logged out, or your session expired; log in again.", "login"),
        "c-bob": ("Your password was changed; log in again.", "login"),
        "c-carol": ("Your account was deactivated.", "stop"),
    }


@pytest.mark.django_db(transaction=True)
def test_of_two_simultaneous_logins_exactly_one_wins():
    alice = make_user("alice")
    for round_ in range(5):

        def claim(round_=round_):
            return services.presence_claim(user=alice, channel_name=f"c{threading.get_ident()}-{round_}")

        results = run_parallel(claim, 4)
        assert results.count(None) == 1 and results.count("already_online") == 3, results
        Presence.objects.all().delete()
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_parallel_senders_get_no_database_is_locked():
    users = [make_user(f"u{i}") for i in range(6)]
    target = make_user("target")

    def send():
        me = users[threading.get_ident() % len(users)]
        for i in range(10):
            services.message_send(sender=me, to_username="target", body=f"m{i}")
        return "ok"

    assert run_parallel(send, 6) == ["ok"] * 6
    assert Delivery.objects.filter(recipient=target).count() == 60


@pytest.mark.django_db
def test_conversations_only_show_what_is_mine(alice, bob):
    carol = make_user("carol")
    services.message_send(sender=alice, to_username="bob", body="a->b")
    services.message_send(sender=bob, to_username="carol", body="b->c")
    assert [c["with"] for c in selectors.conversation_list(user=alice)] == ["bob"]
    assert [c["with"] for c in selectors.conversation_list(user=carol)] == ["bob"]
    assert selectors.conversation_list(user=carol)[0]["last"]["body"] == "b->c"


# --- Hostile clients, round two (issue 18): edits and reads through blocks ----------


def read(user, peer, up_to):
    """Whether the mark moved (a batch of one)."""
    return services.conversations_read(requests=[services.ReadRequest(user=user, peer=peer, up_to=up_to)])[0]


def frames_to(pushes, user):
    """The frame types pushed to one user's own group."""
    return [f["type"] for p in pushes if p.target == events.user_group(user.pk) for f in p.event["frames"]]


@pytest.mark.django_db
def test_edits_and_deletes_reach_only_who_has_the_message_and_does_not_block(alice, bob, capture_pushes):
    """Bob blocks alice: an edit or a delete of what she sent him, read or
    still pending (the block dropped it), does not reach him; carol, who
    has hers, is told."""
    carol = make_user("carol")
    for user in (bob, carol):
        online(user)
    read = services.message_send(sender=alice, to_username="bob", body="read").message
    services.deliveries_ack(requests=[services.AckRequest(user=bob, ids=[read.pk])])
    pending = services.message_send(sender=alice, to_username="bob", body="pending").message
    Delivery.objects.filter(message=pending).update(pushed_at=None)
    to_carol = services.message_send(sender=alice, to_username="carol", body="hi carol").message
    services.block_create(blocker=bob, username="alice")
    assert not Delivery.objects.filter(message=pending).exists()
    with capture_pushes() as pushes:
        services.message_edit(user=alice, message_id=read.pk, body="edited")
        services.message_edit(user=alice, message_id=pending.pk, body="edited")
        services.message_delete(user=alice, message_id=read.pk)
        services.message_edit(user=alice, message_id=to_carol.pk, body="hello carol")
        services.message_delete(user=alice, message_id=to_carol.pk)
    assert frames_to(pushes, bob) == []
    assert frames_to(pushes, carol) == ["message_edited", "message_deleted"]


@pytest.mark.django_db
def test_a_broadcast_edit_skips_every_blocker_even_one_who_had_read_it(alice, bob, capture_pushes):
    carol, dave = make_user("carol"), make_user("dave")
    for user in (bob, carol):
        online(user)
    sent = services.message_broadcast(sender=alice, body="all").message
    services.deliveries_ack(requests=[services.AckRequest(user=carol, ids=[sent.pk])])
    services.block_create(blocker=carol, username="alice")
    services.block_create(blocker=dave, username="alice")  # offline: may come online meanwhile
    erin = make_user("erin")  # came after the broadcast: online, without it
    online(erin)
    with capture_pushes() as pushes:
        services.message_edit(user=alice, message_id=sent.pk, body="all, edited")
        services.message_delete(user=alice, message_id=sent.pk)
    assert [p.target for p in pushes] == [events.HUB_GROUP, events.HUB_GROUP]
    for push in pushes:
        assert {carol.pk, dave.pk, alice.pk, erin.pk} <= set(push.event["exclude"])
        assert bob.pk not in push.event["exclude"]
    assert [[(f["type"], f["id"]) for f in p.event["frames"]] for p in pushes] == [
        [("message_edited", sent.pk)],
        [("message_deleted", sent.pk)],
    ]


@pytest.mark.django_db
def test_edits_count_against_the_send_rate_limit(alice, bob, settings):
    """An edit is pushed like a message, so it costs like one: over the
    limit it is rate_limited with retry_after and changes nothing, and
    edits use up what may still be sent."""
    settings.CHAT_RATE_LIMIT_COUNT, settings.CHAT_RATE_LIMIT_SECONDS = 3, 60
    sent = services.message_send(sender=alice, to_username="bob", body="v0").message
    services.message_edit(user=alice, message_id=sent.pk, body="v1")
    services.message_edit(user=alice, message_id=sent.pk, body="v2")
    for edit_then_send in (
        lambda: services.message_edit(user=alice, message_id=sent.pk, body="v3"),
        lambda: services.message_send(sender=alice, to_username="bob", body="more"),
    ):
        with pytest.raises(ServiceError) as e:
            edit_then_send()
        assert e.value.code == "rate_limited" and 1 <= e.value.extra["retry_after"] <= 60
    sent.refresh_from_db()
    assert sent.body == "v2" and Message.objects.count() == 1
    # Once the window has passed, an edit goes through again.
    Message.objects.update(sent_at=timezone.now() - timedelta(seconds=61))
    Edit.objects.update(edited_at=timezone.now() - timedelta(seconds=61))
    assert services.message_edit(user=alice, message_id=sent.pk, body="v3").body == "v3"


@pytest.mark.django_db
def test_a_read_receipt_goes_only_to_a_real_conversation_across_no_block(alice, bob, capture_pushes):
    """`read` with any `with` and any `up_to` reached anyone: now the mark
    stops at the conversation's last message, a conversation with no message
    moves nothing and tells nobody, and no receipt crosses a block, whoever
    blocks whom."""
    carol, dave = make_user("carol"), make_user("dave")
    last = services.message_send(sender=alice, to_username="bob", body="hi").message.pk
    services.message_send(sender=carol, to_username="bob", body="hi")
    services.message_send(sender=dave, to_username="bob", body="hi")
    services.block_create(blocker=bob, username="carol")  # bob blocks the peer
    services.block_create(blocker=dave, username="bob")  # the peer blocks bob
    stranger = make_user("stranger")
    with capture_pushes() as pushes:
        assert read(bob, alice, 10**12) is True
        assert read(bob, stranger, 10**12) is False
        assert read(stranger, alice, last) is False
        read(bob, carol, 10**12)
        read(bob, dave, 10**12)
    receipts = [f for p in pushes for f in p.event["frames"]]
    assert receipts == [wire.receipt_read(last, by="bob")]
    assert [p.target for p in pushes] == [events.user_group(alice.pk)]
    assert ReadMark.objects.get(user=bob, peer=alice).up_to == last
    assert not ReadMark.objects.filter(peer=stranger).exists()
    assert not ReadMark.objects.filter(user=stranger).exists()
    # Nor does the later form of the receipt, `read` in history, cross a block.
    read(bob, dave, 10**12)
    [theirs] = selectors.message_history(user=dave, peer=bob)
    assert theirs["read"] is False
    [alices] = selectors.message_history(user=alice, peer=bob)
    assert alices["read"] is True


@pytest.mark.django_db
def test_a_read_mark_moves_forward_only_and_only_its_own(alice, bob):
    """The mark moves on a later read (an update of the row the first read
    made), an earlier read does not move it back, another user's mark stays
    where it was, and a conversation with nothing to read does not end the
    batch. (Mutants of conversations_read survived without it.)"""
    carol, dave = make_user("carol"), make_user("dave")
    to_carol = services.message_send(sender=bob, to_username="carol", body="c").message
    first = services.message_send(sender=bob, to_username="alice", body="1").message
    second = services.message_send(sender=bob, to_username="alice", body="2").message
    assert read(carol, bob, to_carol.pk) is True
    assert read(alice, bob, first.pk) is True
    assert read(alice, bob, second.pk) is True
    assert ReadMark.objects.get(user=alice, peer=bob).up_to == second.pk
    assert ReadMark.objects.get(user=carol, peer=bob).up_to == to_carol.pk
    assert read(alice, bob, first.pk) is False
    assert ReadMark.objects.get(user=alice, peer=bob).up_to == second.pk
    third = services.message_send(sender=bob, to_username="alice", body="3").message
    batch = [
        services.ReadRequest(user=alice, peer=dave, up_to=third.pk),  # nothing to read
        services.ReadRequest(user=alice, peer=bob, up_to=third.pk),
    ]
    assert services.conversations_read(requests=batch) == [False, True]


@pytest.mark.django_db
def test_block_refusals_say_which(alice, bob):
    """Each refusal of block_create has its own code and words (mutants
    that changed them survived the service tests)."""
    with pytest.raises(ServiceError) as itself:
        services.block_create(blocker=alice, username="alice")
    assert (itself.value.code, itself.value.message) == ("invalid", "You cannot block yourself.")
    services.block_create(blocker=alice, username="bob")
    with pytest.raises(ServiceError) as again:
        services.block_create(blocker=alice, username="bob")
    assert (again.value.code, again.value.message) == ("already_blocked", "You already block bob.")


@pytest.mark.django_db
def test_an_unblock_lifts_that_block_only(alice, bob):
    """Alice unblocks bob: carol's block of bob and alice's of carol stay;
    a second unblock says she does not block him."""
    carol = make_user("carol")
    for blocker, username in ((alice, "bob"), (alice, "carol"), (carol, "bob")):
        services.block_create(blocker=blocker, username=username)
    assert services.block_delete(blocker=alice, username="bob") == bob
    assert sorted(Block.objects.values_list("blocker__username", "blocked__username")) == [
        ("alice", "carol"),
        ("carol", "bob"),
    ]
    with pytest.raises(ServiceError) as again:
        services.block_delete(blocker=alice, username="bob")
    assert (again.value.code, again.value.message) == ("not_blocked", "You do not block bob.")


@pytest.mark.django_db
def test_only_my_live_messages_can_be_edited_and_a_delete_empties_the_body(alice, bob):
    """Someone else's message and my deleted one are both unknown_message;
    a deleted message keeps no body."""
    mine = services.message_send(sender=alice, to_username="bob", body="secret").message
    theirs = services.message_send(sender=bob, to_username="alice", body="hi").message
    unknown = ("unknown_message", "You have no message with that id.")
    with pytest.raises(ServiceError) as not_mine:
        services.message_edit(user=alice, message_id=theirs.pk, body="x")
    assert (not_mine.value.code, not_mine.value.message) == unknown
    services.message_delete(user=alice, message_id=mine.pk)
    mine.refresh_from_db()
    assert mine.body == "" and mine.deleted_at is not None
    with pytest.raises(ServiceError) as deleted:
        services.message_edit(user=alice, message_id=mine.pk, body="back")
    assert (deleted.value.code, deleted.value.message) == unknown


@pytest.mark.django_db
@pytest.mark.parametrize("alike_at_most", [50, 0])  # statements by sets of ids; or row by row
def test_acks_in_one_batch_mark_what_each_user_acked_and_nothing_else(
    alice, bob, capture_pushes, monkeypatch, alike_at_most
):
    """Acks of several users for several messages, applied together: each
    (user, id) acked is marked, nothing else is (not what another user of
    the batch acked), ids not pending are ignored, and a private message
    newly acked sends its sender one delivered receipt."""
    from messaging.services import deliveries

    monkeypatch.setattr(deliveries, "_MAX_ALIKE", alike_at_most)
    carol, dave = make_user("carol"), make_user("dave")
    for user in (bob, carol, dave):
        online(user)
    b1 = services.message_broadcast(sender=alice, body="b1").message
    b2 = services.message_broadcast(sender=alice, body="b2").message
    to_bob = services.message_send(sender=alice, to_username="bob", body="p").message
    to_carol = services.message_send(sender=alice, to_username="carol", body="q").message
    acks = {bob: [b1.pk, to_bob.pk, to_carol.pk, 999_999], carol: [b2.pk], dave: [b1.pk]}
    with capture_pushes() as pushes:
        services.deliveries_ack(requests=[services.AckRequest(user=u, ids=ids) for u, ids in acks.items()])
        services.deliveries_ack(requests=[services.AckRequest(user=bob, ids=[to_bob.pk])])  # again: no receipt
    acked = set(Delivery.objects.filter(acked_at__isnull=False).values_list("recipient__username", "message_id"))
    assert acked == {("bob", b1.pk), ("bob", to_bob.pk), ("carol", b2.pk), ("dave", b1.pk)}
    receipts = [f for p in pushes if p.target == events.user_group(alice.pk) for f in p.event["frames"]]
    assert receipts == [wire.receipt_delivered(to_bob.pk, by="bob")]


@pytest.mark.django_db
def test_the_acks_of_a_broadcast_read_no_delivery_back(alice):
    """A broadcast's acks from many users are an UPDATE, not the rows read
    into Python one by one (each row a step of SQLite between the database
    thread and the event loop): no SELECT of deliveries, a few statements."""
    from django.test.utils import CaptureQueriesContext

    users = [make_user(f"u{i}") for i in range(120)]
    for user in users:
        online(user)
    sent = services.message_broadcast(sender=alice, body="to all").message
    with CaptureQueriesContext(connection) as queries:
        services.deliveries_ack(requests=[services.AckRequest(user=u, ids=[sent.pk]) for u in users])
    table = Delivery._meta.db_table
    statements = [q["sql"] for q in queries.captured_queries if table in q["sql"]]
    assert not [s for s in statements if s.lstrip().upper().startswith("SELECT")], statements
    assert len(statements) == 1, statements
    assert not Delivery.objects.filter(message=sent, acked_at__isnull=True).exists()


# --- Sending: what the mutation run of 2026-12-07 found unchecked -------------------


@pytest.mark.django_db
def test_a_broadcast_is_pushed_live_to_everyone_but_its_sender_and_who_blocks_them(alice, bob, capture_pushes):
    carol = make_user("carol")
    services.block_create(blocker=carol, username="alice")
    with capture_pushes() as pushes:
        services.message_broadcast(sender=alice, body="all")
    [push] = pushes
    assert (push.target, push.event["type"]) == (events.HUB_GROUP, events.HUB_FRAMES)
    assert push.event["exclude"] == sorted([alice.pk, carol.pk])
    [frame] = push.event["frames"]
    assert (frame["body"], frame["stored"]) == ("all", False)


@pytest.mark.django_db
def test_a_broadcast_replies_to_a_broadcast_only(alice, bob):
    question = services.message_broadcast(sender=alice, body="who is in?").message
    answer = services.message_broadcast(sender=alice, body="me", reply_to=question.pk).message
    assert Message.objects.get(pk=answer.pk).reply_to_id == question.pk
    private = services.message_send(sender=alice, to_username="bob", body="psst").message
    for refused in (
        lambda: services.message_broadcast(sender=alice, body="x", reply_to=private.pk),
        lambda: services.message_send(sender=alice, to_username="bob", body="x", reply_to=question.pk),
    ):
        with pytest.raises(ServiceError) as e:
            refused()
        assert (e.value.code, e.value.message) == (
            "unknown_message",
            "You can only reply to a message of this conversation you can see.",
        )


@pytest.mark.django_db
def test_a_broadcast_counts_against_the_send_rate_limit_too(alice, bob, settings):
    settings.CHAT_RATE_LIMIT_COUNT = 1
    services.message_send(sender=alice, to_username="bob", body="one")
    with pytest.raises(ServiceError) as e:
        services.message_broadcast(sender=alice, body="two")
    assert e.value.code == "rate_limited"
    assert Message.objects.count() == 1


@pytest.mark.django_db
def test_a_client_id_used_again_gets_the_first_answer_whatever_the_kind(alice, bob):
    """The replayed answer is the stored one (who was online then), even
    for another kind of request: a private message counts as one, live or
    stored."""
    make_user("carol")
    online(bob)
    first = services.message_send(sender=alice, to_username="bob", body="hi", client_id="p")
    Presence.objects.all().delete()
    again = services.message_send(sender=alice, to_username="bob", body="hi", client_id="p")
    assert (again.message.pk, again.live) == (first.message.pk, True)
    as_broadcast = services.message_broadcast(sender=alice, body="hi", client_id="p")
    assert (as_broadcast.message.pk, as_broadcast.live, as_broadcast.stored) == (first.message.pk, 1, 0)
    online(bob)
    sent = services.message_broadcast(sender=alice, body="all", client_id="b")
    assert (sent.live, sent.stored) == (1, 1)
    Presence.objects.all().delete()
    again = services.message_broadcast(sender=alice, body="all", client_id="b")
    assert (again.message.pk, again.live, again.stored) == (sent.message.pk, 1, 1)
    assert Message.objects.count() == 2


@pytest.mark.django_db
def test_a_broadcasts_counts_are_of_active_users_who_do_not_block_its_sender(alice, bob):
    """stored = the active users but the sender (if active) and the active
    users who block the sender, less those online; never below 0."""
    carol, dave, erin, frank = (make_user(name) for name in ("carol", "dave", "erin", "frank"))
    services.block_create(blocker=carol, username="alice")
    services.block_create(blocker=dave, username="alice")
    services.block_create(blocker=erin, username="bob")  # not alice's
    User.objects.filter(pk=dave.pk).update(is_active=False)
    online(bob)
    done = services.message_broadcast(sender=alice, body="1")
    assert (done.live, done.stored) == (1, 2)  # erin, frank
    User.objects.filter(pk=alice.pk).update(is_active=False)  # while her batch was waiting
    done = services.message_broadcast(sender=alice, body="2")
    assert (done.live, done.stored) == (1, 2)
    online(erin)
    online(frank)
    done = services.message_broadcast(sender=alice, body="3")
    assert (done.live, done.stored) == (3, 0)


@pytest.mark.django_db
def test_operators_messages_are_not_rate_limited(alice, bob, settings):
    settings.CHAT_BROADCAST_RATE_COUNT = settings.CHAT_RATE_LIMIT_COUNT = 1
    for body in ("one", "two"):
        services.message_broadcast(sender=alice, body=body, rate_limit=False)
    for body in ("one", "two"):
        services.message_send(sender=alice, to_username="bob", body=body, rate_limit=False)
    room = services.room_create(user=alice, name="ops").room["id"]
    for body in ("one", "two"):
        services.message_room_send(sender=alice, room_id=room, body=body, rate_limit=False)
    assert Message.objects.count() == 6


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["send", "broadcast"])
def test_a_batch_replays_a_client_id_sent_before_and_sends_the_rest(alice, bob, kind):
    """In one batch: a client_id sent before gets its first answer, one used
    twice gets one message for both, a refused request its error, and the
    requests after each of them still go."""

    def request(body, client_id=None, reply_to=None):
        if kind == "send":
            return services.SendRequest(
                sender=alice, to_username="bob", body=body, client_id=client_id, reply_to=reply_to
            )
        return services.BroadcastRequest(sender=alice, body=body, client_id=client_id, reply_to=reply_to)

    apply = services.messages_send if kind == "send" else services.messages_broadcast
    [before] = apply(requests=[request("old", "c1")])
    results = apply(
        requests=[
            request("old", "c1"),
            request("new", "c2"),
            request("new", "c2"),
            request("bad", reply_to=999_999),
            request("plain"),
        ]
    )
    assert results[0].message.pk == before.message.pk
    assert results[1].message.pk == results[2].message.pk != before.message.pk
    assert results[3].code == "unknown_message"
    assert results[4].message.body == "plain"
    assert Message.objects.count() == 3


@pytest.mark.django_db
def test_the_rate_limit_counts_within_a_batch_and_says_when_to_try_again(alice, bob, settings):
    settings.CHAT_RATE_LIMIT_COUNT, settings.CHAT_RATE_LIMIT_SECONDS = 2, 60
    requests = [services.SendRequest(sender=alice, to_username="bob", body=str(i)) for i in range(3)]
    first, second, third = services.messages_send(requests=requests)
    assert first.message.body == "0" and second.message.body == "1"
    retry = third.extra["retry_after"]
    assert third.code == "rate_limited" and retry in (59, 60)  # the window, less the moment since the first
    assert third.message == f"Too many messages. Try again in {retry} seconds."


@pytest.mark.django_db
def test_a_body_is_trimmed_neither_empty_nor_over_the_limit_nor_to_oneself(alice, bob, settings):
    settings.CHAT_MAX_BODY_CHARS = 5
    sent = services.message_send(sender=alice, to_username="bob", body=" 12345 ").message
    assert sent.body == "12345"
    for refused, words in (
        (lambda: services.message_send(sender=alice, to_username="bob", body=" \n "), "The message is empty."),
        (
            lambda: services.message_send(sender=alice, to_username="bob", body="123456"),
            "The message is longer than 5 characters.",
        ),
        (lambda: services.message_edit(user=alice, message_id=sent.pk, body="  "), "The message is empty."),
        (
            lambda: services.message_send(sender=alice, to_username="alice", body="me"),
            "You cannot send a message to yourself.",
        ),
    ):
        with pytest.raises(ServiceError) as e:
            refused()
        assert (e.value.code, e.value.message) == ("invalid", words)
    assert Message.objects.get().body == "12345"


@pytest.mark.django_db
def test_what_was_sent_or_edited_before_the_window_does_not_count(alice, bob, settings):
    settings.CHAT_RATE_LIMIT_COUNT, settings.CHAT_RATE_LIMIT_SECONDS = 2, 60
    old = services.message_send(sender=alice, to_username="bob", body="old").message
    services.message_edit(user=alice, message_id=old.pk, body="old, edited")
    Message.objects.update(sent_at=timezone.now() - timedelta(seconds=61))
    Edit.objects.update(edited_at=timezone.now() - timedelta(seconds=61))
    for body in ("new", "newer"):
        services.message_send(sender=alice, to_username="bob", body=body)
    assert Message.objects.count() == 3


@pytest.mark.django_db
def test_a_refused_request_leaves_its_client_id_free(alice, bob):
    with pytest.raises(ServiceError):
        services.message_send(sender=alice, to_username="nobody", body="hi", client_id="c")
    assert not ClientRequest.objects.exists()
    sent = services.message_send(sender=alice, to_username="bob", body="hi", client_id="c")
    assert ClientRequest.objects.get().message_id == sent.message.pk


# --- Delivery: what the mutation run of 2026-12-07 found unchecked ------------------


@pytest.mark.django_db
@pytest.mark.parametrize("leaked", [0, 501])
def test_a_redelivery_is_for_the_named_connections_of_this_process_only(alice, settings, capture_pushes, leaked):
    """bob is held here and named; carol's row is here but not named (her
    connection still pushes what waited at login); dave's and erin's rows
    are another process's (another pid, another host). Past 500 rows here
    not named, the named ones are listed instead."""
    settings.CHAT_REDELIVER_SECONDS = 30
    names = ("bob", "carol", "dave", "erin")
    users = {name: make_user(name) for name in names}
    for user in users.values():
        online(user)
        services.message_send(sender=alice, to_username=user.username, body=f"to {user.username}")
    Presence.objects.filter(user=users["dave"]).update(pid=services.PID + 1)
    Presence.objects.filter(user=users["erin"]).update(host="elsewhere")
    leak_rows(leaked, at=timezone.now())
    Delivery.objects.update(pushed_at=timezone.now() - timedelta(seconds=31))
    with capture_pushes() as pushes:
        assert services.delivery_redeliver(channel_names=["c-bob", "c-dave", "c-erin"]) == 1
    assert [(p.target, [f["body"] for f in p.event["frames"]]) for p in pushes] == [
        (events.user_group(users["bob"].pk), ["to bob"])
    ]


@pytest.mark.django_db
def test_a_redelivery_pushes_again_what_is_due_unacked_and_not_deleted(alice, bob, settings, capture_pushes):
    """Due: pushed longer ago than CHAT_REDELIVER_SECONDS, or never pushed
    and sent that long ago (then it is pushed as stored)."""
    settings.CHAT_REDELIVER_SECONDS = 30
    online(bob)
    now, long_ago = timezone.now(), timezone.now() - timedelta(seconds=31)

    def sent(body, *, at, pushed):
        message = services.message_send(sender=alice, to_username="bob", body=body).message
        Message.objects.filter(pk=message.pk).update(sent_at=at)
        Delivery.objects.filter(message=message).update(pushed_at=pushed)
        return message

    sent("due", at=long_ago, pushed=long_ago)
    sent("never pushed", at=long_ago, pushed=None)
    sent("fresh, never pushed", at=now, pushed=None)
    sent("old, pushed just now", at=long_ago, pushed=now)
    services.delivery_ack(user=bob, ids=[sent("acked", at=long_ago, pushed=long_ago).pk])
    services.message_delete(user=alice, message_id=sent("deleted", at=long_ago, pushed=long_ago).pk)
    with capture_pushes() as pushes:
        assert services.delivery_redeliver(channel_names=["c-bob"]) == 2
    [push] = pushes
    assert [(f["body"], f["stored"]) for f in push.event["frames"]] == [("due", False), ("never pushed", True)]
    assert services.delivery_redeliver(channel_names=["c-bob"]) == 0  # pushed just now


@pytest.mark.django_db
def test_a_redelivery_keeps_each_user_within_a_budget_of_bytes_but_one_message_always_goes(
    alice, bob, settings, capture_pushes
):
    """Each message costs its body and 200 bytes of frame: 600 bytes take
    two of bob's 100-byte messages exactly; carol's one long message goes
    alone."""
    settings.CHAT_REDELIVER_SECONDS = 30
    carol = make_user("carol")
    for user in (bob, carol):
        online(user)
    for body in ("a" * 100, "b" * 100, "c" * 100):
        services.message_send(sender=alice, to_username="bob", body=body)
    services.message_send(sender=alice, to_username="carol", body="x" * 1000)
    Delivery.objects.update(pushed_at=timezone.now() - timedelta(seconds=31))
    with capture_pushes() as pushes:
        services.delivery_redeliver(channel_names=["c-bob", "c-carol"], max_bytes_per_user=600)
    bodies = {p.target: [f["body"][0] for f in p.event["frames"]] for p in pushes}
    assert bodies == {events.user_group(bob.pk): ["a", "b"], events.user_group(carol.pk): ["x"]}


@pytest.mark.django_db
def test_a_page_at_login_keeps_within_its_bytes_but_one_message_always_comes(alice, bob):
    """Each message costs its body and 200 bytes of frame; the page read is
    marked pushed, the rest is not."""
    carol = make_user("carol")
    for body in ("a" * 100, "b" * 100, "c" * 100):
        services.message_send(sender=alice, to_username="bob", body=body)
    services.message_send(sender=alice, to_username="carol", body="x" * 1000)

    def page(user, max_bytes):
        return [event["body"][0] for event in services.delivery_flush_page(user=user, max_bytes=max_bytes)]

    assert page(bob, 500) == ["a"]
    assert page(bob, 600) == ["a", "b"]
    pushed = {d.message.body[0]: d.pushed_at is not None for d in Delivery.objects.filter(recipient=bob)}
    assert pushed == {"a": True, "b": True, "c": False}
    assert page(carol, 600) == ["x"]


@pytest.mark.django_db
def test_an_ack_of_one_private_message_tells_its_sender_and_an_empty_ack_is_fine(alice, bob, capture_pushes):
    sent = services.message_send(sender=alice, to_username="bob", body="hi").message
    with capture_pushes() as pushes:
        services.delivery_ack(user=bob, ids=[])
        services.delivery_ack(user=bob, ids=[sent.pk])
    [push] = pushes
    assert (push.target, push.event["frames"]) == (
        events.user_group(alice.pk),
        [wire.receipt_delivered(sent.pk, by="bob")],
    )


@pytest.mark.django_db
def test_acking_again_keeps_the_time_of_the_first_ack(alice, bob):
    online(bob)
    sent = services.message_broadcast(sender=alice, body="all").message
    services.delivery_ack(user=bob, ids=[sent.pk])
    first = timezone.now() - timedelta(hours=1)
    Delivery.objects.update(acked_at=first)
    services.delivery_ack(user=bob, ids=[sent.pk])
    assert Delivery.objects.get().acked_at == first
