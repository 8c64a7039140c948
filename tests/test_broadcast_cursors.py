"""Broadcasts write rows only for users with presence; the others catch up
at login (messaging/services/mailbox.py, issue 23). One test per guarantee
of the contract that this must keep."""

from __future__ import annotations

import importlib
import threading

import pytest
from django.apps import apps
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from messaging import selectors, services
from messaging.models import BroadcastCursor, Delivery, Message
from messaging.services.mailbox import broadcasts_fence

from .helpers import make_user
from .test_attachments import png, upload

pytestmark = pytest.mark.django_db


def login(user, channel="c"):
    return services.presence_claim(user=user, channel_name=f"{channel}-{user.username}")


def logout(user, channel="c"):
    return services.presence_release(user=user, channel_name=f"{channel}-{user.username}")


def waiting_bodies(user):
    """What the user's client is pushed after login, in order."""
    return [event["body"] for event in services.delivery_flush_page(user=user)]


def test_a_broadcast_writes_rows_for_users_with_presence_only():
    alice, bob = make_user("alice"), make_user("bob")
    offline = [make_user(f"u{i}") for i in range(20)]
    login(bob)
    done = services.message_broadcast(sender=alice, body="all")
    assert (done.live, done.stored) == (1, 20)
    assert list(Delivery.objects.values_list("recipient__username", flat=True)) == ["bob"]
    login(offline[3])
    assert waiting_bodies(offline[3]) == ["all"]


def test_an_offline_user_gets_everything_waiting_in_order_at_login():
    alice, carol, bob = make_user("alice"), make_user("carol"), make_user("bob")
    services.message_broadcast(sender=alice, body="b1")
    services.message_send(sender=carol, to_username="bob", body="p1")
    services.message_broadcast(sender=carol, body="b2")
    services.message_send(sender=alice, to_username="bob", body="p2")
    assert selectors.pending_count(user=bob) == 4
    login(bob)
    assert selectors.pending_count(user=bob) == 4
    events = services.delivery_flush_page(user=bob)
    assert [e["body"] for e in events] == ["b1", "p1", "b2", "p2"]
    assert all(e["stored"] for e in events)
    assert [m["body"] for m in selectors.message_history(user=bob, peer=None)] == ["b1", "b2"]


def test_acked_broadcasts_are_not_pushed_again_at_the_next_login():
    alice, bob = make_user("alice"), make_user("bob")
    b1 = services.message_broadcast(sender=alice, body="b1").message
    login(bob)
    services.delivery_ack(user=bob, ids=[b1.pk])
    logout(bob)
    services.message_broadcast(sender=alice, body="b2")
    login(bob)
    assert waiting_bodies(bob) == ["b2"]
    assert Delivery.objects.filter(recipient=bob).count() == 2


def test_users_who_join_later_do_not_get_earlier_broadcasts():
    alice = make_user("alice")
    services.message_broadcast(sender=alice, body="before")
    late = make_user("late")
    assert selectors.pending_count(user=late) == 0
    login(late)
    assert waiting_bodies(late) == []
    assert selectors.message_history(user=late, peer=None) == []


def test_a_batch_catch_up_counts_the_rows_it_wrote():
    """Bob missed two broadcasts; dave blocks their sender: nothing for him,
    yet his cursor moves too."""
    from messaging.services.mailbox import mailboxes_catch_up

    alice, bob, dave = make_user("alice"), make_user("bob"), make_user("dave")
    services.block_create(blocker=dave, username="alice")
    latest = [services.message_broadcast(sender=alice, body=body).message.pk for body in ("b1", "b2")][-1]
    assert mailboxes_catch_up(users=[bob, dave]) == 2
    assert dict(BroadcastCursor.objects.filter(user__in=[bob, dave]).values_list("user_id", "up_to")) == {
        bob.pk: latest,
        dave.pk: latest,
    }
    assert mailboxes_catch_up(users=[bob, dave]) == 0


def test_a_block_drops_what_waits_and_an_unblock_does_not_bring_it_back():
    alice, bob = make_user("alice"), make_user("bob")
    login(bob)
    services.block_create(blocker=bob, username="alice")
    logout(bob)
    services.message_broadcast(sender=alice, body="while blocked")
    assert selectors.pending_count(user=bob) == 0
    login(bob)
    assert waiting_bodies(bob) == []
    services.block_delete(blocker=bob, username="alice")
    logout(bob)
    services.message_broadcast(sender=alice, body="after")
    login(bob)
    assert waiting_bodies(bob) == ["after"]


def test_a_pending_broadcast_dropped_by_a_block_stays_dropped_after_a_takeover():
    alice, bob = make_user("alice"), make_user("bob")
    login(bob)
    services.message_broadcast(sender=alice, body="dropped")
    services.block_create(blocker=bob, username="alice")
    services.block_delete(blocker=bob, username="alice")
    services.presence_claim(user=bob, channel_name="elsewhere-bob", takeover=True)
    logout(bob, "elsewhere")
    login(bob)
    assert waiting_bodies(bob) == []


def test_edits_and_deletes_reach_what_waits():
    alice, bob = make_user("alice"), make_user("bob")
    edited = services.message_broadcast(sender=alice, body="typo").message
    gone = services.message_broadcast(sender=alice, body="oops").message
    services.message_edit(user=alice, message_id=edited.pk, body="fixed")
    services.message_delete(user=alice, message_id=gone.pk)
    assert selectors.pending_count(user=bob) == 1
    login(bob)
    [event] = services.delivery_flush_page(user=bob)
    assert (event["id"], event["body"], event["edited_at"] is not None) == (edited.pk, "fixed", True)


@pytest.mark.usefixtures("attachment_store")
def test_what_waits_is_downloadable_and_exported_before_the_login():
    """The HTTP views serve a user who has no socket: what waits for them
    is theirs already."""
    alice, bob = make_user("alice"), make_user("bob")
    pic = upload(alice, png(), "pic.png")
    message = services.message_broadcast(sender=alice, body="look", attachments=[pic.pk]).message
    assert selectors.attachment_for_download(user=bob, attachment_id=pic.pk).pk == pic.pk
    received = selectors.user_data(user=bob)["messages_received"]
    assert [m.pk for m in received] == [message.pk]
    client = Client()
    client.force_login(bob)
    assert client.get(f"/files/{pic.pk}/").status_code == 200


def test_the_migration_puts_every_existing_user_at_the_latest_broadcast():
    """Mailboxes from before held every broadcast: nothing is written twice."""
    alice, bob = make_user("alice"), make_user("bob")
    services.message_broadcast(sender=alice, body="old")
    latest = services.message_broadcast(sender=alice, body="older").message
    BroadcastCursor.objects.all().delete()
    migration = importlib.import_module("messaging.migrations.0008_broadcast_cursors")
    migration.cursors_at_latest(apps, None)
    assert dict(BroadcastCursor.objects.values_list("user__username", "up_to")) == {
        "alice": latest.pk,
        "bob": latest.pk,
    }
    assert selectors.pending_count(user=bob) == 0


@pytest.mark.django_db(transaction=True)
def test_a_login_waits_for_a_broadcast_in_flight():
    """A broadcast that took its id but has not committed must not be
    skipped by a login that reads a later one (PostgreSQL commits out of id
    order): the login waits on the fence until it commits."""
    alice, bob = make_user("alice"), make_user("bob")
    started, finish = threading.Event(), threading.Event()

    def in_flight() -> None:
        try:
            with transaction.atomic():
                broadcasts_fence(exclusive=True)
                Message.objects.create(kind="broadcast", sender=alice, body="in flight", sent_at=timezone.now())
                started.set()
                finish.wait(10)
        finally:
            connection.close()

    def claim() -> None:
        try:
            login(bob)
        finally:
            connection.close()

    broadcast = threading.Thread(target=in_flight)
    broadcast.start()
    assert started.wait(10)
    claiming = threading.Thread(target=claim)
    claiming.start()
    claiming.join(0.5)
    waited = claiming.is_alive()
    finish.set()
    broadcast.join(10)
    claiming.join(10)
    assert waited, "the login did not wait for the broadcast in flight"
    assert waiting_bodies(bob) == ["in flight"]
