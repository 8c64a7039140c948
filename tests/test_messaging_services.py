"""Messaging services against the database."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.errors import ServiceError
from messaging import events, selectors, services, wire
from messaging.models import Delivery, Message, Presence

from .helpers import make_user
from .test_accounts import run_parallel


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
    assert e.value.code == "blocked"
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_inactive_user_is_unknown(alice):
    make_user("gone", is_active=False)
    with pytest.raises(ServiceError) as e:
        services.message_send(sender=alice, to_username="gone", body="hi")
    assert e.value.code == "unknown_user"


@pytest.mark.django_db
def test_broadcast_reaches_all_but_sender_and_blockers(alice, bob):
    carol, dave = make_user("carol"), make_user("dave")
    services.block_create(blocker=carol, username="alice")
    online(bob)
    done = services.message_broadcast(sender=alice, body="all")
    assert (done.live, done.stored) == (1, 1)
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
def test_presence_claim_release_and_takeover(alice):
    assert online(alice, "one") is None
    with pytest.raises(ServiceError) as e:
        online(alice, "two")
    assert e.value.code == "already_online"
    assert services.presence_claim(user=alice, channel_name="two", takeover=True) == "one-alice"
    assert not services.presence_release(user=alice, channel_name="one-alice")  # not its row any more
    assert selectors.online_usernames() == ["alice"]
    assert services.presence_release(user=alice, channel_name="two")
    assert selectors.online_usernames() == []
    alice.refresh_from_db()
    assert alice.last_seen and alice.last_login


@pytest.mark.django_db
def test_stale_presence_is_not_online_and_can_be_replaced(alice, settings):
    online(alice, "old")
    Presence.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=settings.CHAT_PRESENCE_TIMEOUT_SECONDS + 1))
    assert selectors.online_usernames() == []
    online(alice, "new")  # no takeover needed
    assert selectors.online_usernames() == ["alice"]


@pytest.mark.django_db
def test_tick_ends_connections_that_lost_their_row(alice, bob, capture_pushes):
    online(alice, "a")
    with capture_pushes() as pushes:
        assert services.presence_tick(channel_names=["a-alice", "gone"]) == ["gone"]
    assert [(p.target, p.event["type"], p.event["frame"]["type"]) for p in pushes] == [
        ("gone", events.END, "session_ended")
    ]


@pytest.mark.django_db
def test_server_start_clears_rows_of_dead_processes_on_this_host(alice, bob):
    now = timezone.now()
    Presence.objects.create(
        user=alice, channel_name="x", host=services.HOST, pid=2**22 + 12345, connected_at=now, heartbeat_at=now
    )
    Presence.objects.create(user=bob, channel_name="y", host="other-host", pid=1, connected_at=now, heartbeat_at=now)
    assert services.presence_clear_dead_processes() == ["alice"]
    assert selectors.online_usernames() == ["bob"]


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
