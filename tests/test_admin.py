"""The Django admin: pages render for staff only, actions call the services."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import LoginAttempt
from messaging import services
from messaging.models import Block, Delivery, Message, Presence, Reaction, ReadMark, Room, RoomMember

from .helpers import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    admin = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    return client


@pytest.fixture
def people():
    alice, bob = make_user("alice"), make_user("bob")
    services.message_send(sender=alice, to_username="bob", body="<b>hello</b>")
    services.message_broadcast(sender=bob, body="to everyone")
    services.block_create(blocker=bob, username="alice")
    return alice, bob


def lock(username, ip="10.0.0.1"):
    LoginAttempt.objects.create(
        username=username, ip=ip, result="failure", locked_until=timezone.now() + timedelta(seconds=60)
    )


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/accounts/user/",
        "/admin/accounts/user/?online=yes",
        "/admin/accounts/user/?locked=yes",
        "/admin/accounts/user/?q=ali",
        "/admin/accounts/loginattempt/",
        "/admin/accounts/loginattempt/?active_lock=yes",
        "/admin/messaging/message/",
        "/admin/messaging/message/?q=hello",
        "/admin/messaging/block/",
        "/admin/messaging/block/add/",
        "/admin/messaging/room/",
        "/admin/messaging/room/?q=team",
        "/admin/messaging/room/?q=bob",
        "/admin/messaging/room/?size=2-10",
        "/admin/messaging/room/?o=3",
    ],
)
def test_pages_render_for_staff(staff, people, url):
    assert staff.get(url).status_code == 200


def test_non_staff_are_sent_to_the_login(client, people):
    client.force_login(people[0])
    response = client.get("/admin/accounts/user/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_user_list_shows_online_and_locked(staff, people):
    alice, bob = people
    services.presence_claim(user=alice, channel_name="c-alice")
    lock("bob")
    page = staff.get("/admin/accounts/user/?online=yes").content.decode()
    assert ">alice<" in page and ">bob<" not in page
    page = staff.get("/admin/accounts/user/?locked=yes").content.decode()
    assert ">bob<" in page and ">alice<" not in page


def test_user_page_shows_blocks_both_ways_and_pending(staff, people):
    alice, bob = people
    page = staff.get(f"/admin/accounts/user/{alice.pk}/change/").content.decode()
    assert "Who blocks this user" in page and "Whom this user blocks" in page
    assert "Pending messages" in page
    page = staff.get(f"/admin/accounts/user/{bob.pk}/change/").content.decode()
    assert "alice" in page


def test_unlock_action(staff, people):
    lock("alice")
    staff.post("/admin/accounts/user/", {"action": "unlock", "_selected_action": [people[0].pk]})
    assert not LoginAttempt.objects.filter(username="alice").exists()


def test_disconnect_and_deactivate_actions(staff, people):
    alice, bob = people
    services.presence_claim(user=alice, channel_name="c-alice")
    staff.post("/admin/accounts/user/", {"action": "disconnect", "_selected_action": [alice.pk]})
    assert not Presence.objects.exists()
    services.presence_claim(user=bob, channel_name="c-bob")
    staff.post("/admin/accounts/user/", {"action": "deactivate", "_selected_action": [bob.pk]})
    bob.refresh_from_db()
    assert bob.is_active is False and not Presence.objects.exists()


def test_deleting_attempts_unlocks(staff):
    lock("alice")
    ids = list(LoginAttempt.objects.values_list("pk", flat=True))
    staff.post("/admin/accounts/loginattempt/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
    assert not LoginAttempt.objects.exists()


def test_messages_newest_first_deleted_marked_and_filtered_quote_finds_nothing(staff, people):
    """Issue 24.8: oldest first, a deleted body shown as "-" with no filter,
    and a search for `"` listed everything."""
    _, bob = people
    gone = services.message_send(sender=bob, to_username="alice", body="regret this")
    services.message_delete(user=bob, message_id=gone.message.pk)
    page = staff.get("/admin/messaging/message/").content.decode()
    assert page.index("deleted by bob") < page.index("to everyone") < page.index("&lt;b&gt;hello")
    deleted = staff.get("/admin/messaging/message/?deleted=yes").content.decode()
    assert "deleted by bob" in deleted and "to everyone" not in deleted
    assert "deleted by bob" not in staff.get("/admin/messaging/message/?deleted=no").content.decode()
    quote = staff.get('/admin/messaging/message/?q="').content.decode()
    assert "to everyone" not in quote and "0 messages" in quote
    assert "to everyone" in staff.get('/admin/messaging/message/?q="everyone"').content.decode()


def test_messages_are_read_only(staff, people):
    message_id = Message.objects.first().pk
    assert staff.get(f"/admin/messaging/message/{message_id}/change/").status_code == 200
    assert staff.post(f"/admin/messaging/message/{message_id}/change/", {"body": "edited"}).status_code == 403
    assert staff.get("/admin/messaging/message/add/").status_code == 403
    page = staff.get("/admin/messaging/message/").content.decode()
    assert "everyone" in page and "&lt;b&gt;hello&lt;/b&gt;" in page


def test_adding_a_block_in_admin_drops_pending_like_a_user_block(staff, people):
    alice, bob = people
    carol = make_user("carol")
    services.message_send(sender=alice, to_username="carol", body="pending for carol")
    response = staff.post("/admin/messaging/block/add/", {"blocker": carol.pk, "blocked": alice.pk})
    assert response.status_code == 302
    assert Block.objects.filter(blocker=carol, blocked=alice).exists()
    assert not Delivery.objects.filter(recipient=carol, message__sender=alice).exists()
    # Already blocked and self-blocks are form errors, not crashes.
    assert staff.post("/admin/messaging/block/add/", {"blocker": carol.pk, "blocked": alice.pk}).status_code == 200
    assert staff.post("/admin/messaging/block/add/", {"blocker": carol.pk, "blocked": carol.pk}).status_code == 200


def test_removing_a_block_in_admin(staff, people):
    block = Block.objects.get()
    staff.post("/admin/messaging/block/", {"action": "remove_selected", "_selected_action": [block.pk]})
    assert not Block.objects.exists()
    block = services.block_create(blocker=people[1], username="alice")
    staff.post(f"/admin/messaging/block/{block.pk}/delete/", {"post": "yes"})
    assert not Block.objects.exists()


@pytest.fixture
def team():
    """A room of alice (admin), bob and carol with a reply, a reaction and a
    read mark: everything a room's deletion must take with it."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    room = services.room_create(user=alice, name="team", usernames=["bob", "carol"]).room
    first = services.message_room_send(sender=alice, room_id=room["id"], body="first in team").message
    services.message_room_send(sender=bob, room_id=room["id"], body="an answer", reply_to=first.id)
    services.message_react(user=carol, message_id=first.id, emoji="👍")
    services.conversations_read(
        requests=[services.ReadRequest(user=bob, peer=None, room_id=room["id"], up_to=first.id)]
    )
    services.message_send(sender=alice, to_username="bob", body="private, stays")
    return Room.objects.get(pk=room["id"]), (alice, bob, carol)


def test_rooms_are_listed_with_members_admins_and_messages(staff, team):
    room, _ = team
    page = staff.get("/admin/messaging/room/").content.decode()
    assert ">team<" in page and ">3<" in page and ">alice<" in page and ">2<" in page
    assert ">team<" in staff.get("/admin/messaging/room/?q=carol").content.decode()
    assert ">team<" not in staff.get("/admin/messaging/room/?q=nobody").content.decode()
    assert ">team<" not in staff.get("/admin/messaging/room/?size=101%2B").content.decode()
    page = staff.get(f"/admin/messaging/room/{room.pk}/change/").content.decode()
    assert "Members" in page and "carol" in page
    page = staff.get("/admin/messaging/message/?q=team").content.decode()
    assert "#team (room " in page and "first in team" in page


def test_removing_a_member_in_admin_runs_the_service(staff, team):
    room, (alice, bob, carol) = team
    members = list(RoomMember.objects.filter(room=room).order_by("user__username"))
    form = {
        "members-TOTAL_FORMS": len(members), "members-INITIAL_FORMS": len(members),
        "members-MIN_NUM_FORMS": 0, "members-MAX_NUM_FORMS": 1000,
    }  # fmt: skip
    for i, m in enumerate(members):
        form[f"members-{i}-id"] = m.pk
        form[f"members-{i}-room"] = room.pk
    form["members-0-DELETE"] = "on"  # alice, the only admin
    response = staff.post(f"/admin/messaging/room/{room.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    left = RoomMember.objects.filter(room=room)
    assert set(left.values_list("user__username", flat=True)) == {"bob", "carol"}
    assert left.get(admin=True).user == bob  # the heir: the earliest to join
    services.message_room_send(sender=bob, room_id=room.pk, body="alice is gone")
    assert not Delivery.objects.filter(recipient=alice, message__body="alice is gone").exists()


def test_deleting_a_room_in_admin_takes_its_messages_not_others(staff, team, django_assert_max_num_queries):
    room, _ = team
    page = staff.get(f"/admin/messaging/room/{room.pk}/delete/").content.decode()
    assert "first in team" not in page  # counts, not the history
    alice, bob, _ = team[1]
    more = Message.objects.bulk_create(
        Message(kind="room", sender=alice, room=room, body="more", sent_at=timezone.now()) for _ in range(300)
    )  # a longer history costs no more queries
    Delivery.objects.bulk_create(Delivery(message=m, recipient=bob) for m in more)
    with django_assert_max_num_queries(40) as queries:
        assert staff.post(f"/admin/messaging/room/{room.pk}/delete/", {"post": "yes"}).status_code == 302
    loaded = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and '"body"' in q["sql"]]
    assert loaded == []  # no message row came into Python
    assert not Room.objects.exists() and not RoomMember.objects.exists() and not Reaction.objects.exists()
    assert not ReadMark.objects.filter(room__isnull=False).exists()
    assert list(Message.objects.values_list("body", flat=True)) == ["private, stays"]
    assert Delivery.objects.filter(message__body="private, stays").exists()


def test_deleting_rooms_with_the_action(staff, team):
    room, (alice, _, _) = team
    other = services.room_create(user=alice, name="other").room
    staff.post("/admin/messaging/room/", {"action": "delete_rooms", "_selected_action": [room.pk, other["id"]]})
    assert not Room.objects.exists() and Message.objects.count() == 1
