"""Protocol 1.2 against the database: rooms, room messages, replies, reactions."""

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.errors import ServiceError
from messaging import events, selectors, services
from messaging.models import Delivery, Message, Reaction, ReadMark, Room, RoomMember

from .conftest import need
from .helpers import PASSWORD, amake_user, connected, make_user
from .servers import Peer, Server, signup


@pytest.fixture
def users(db):
    return {name: make_user(name) for name in ("alice", "bob", "carol", "dave")}


def online(*users):
    for user in users:
        services.presence_claim(user=user, channel_name=f"c-{user.username}")


def frames_for(pushes, user):
    """The frames the pushes carried to `user`'s connection, in order."""
    got = []
    for push in pushes:
        event = push.event
        if push.target == events.user_group(user.pk) or (
            push.target == events.HUB_GROUP
            and event["type"] == events.HUB_FRAMES
            and user.pk in event.get("include", [user.pk])
            and user.pk not in event.get("exclude", [])
        ):
            got.extend(event["frames"])
    return got


def code_of(call, **kwargs):
    with pytest.raises(ServiceError) as e:
        call(**kwargs)
    return e.value.code


def words_of(call, **kwargs):
    with pytest.raises(ServiceError) as e:
        call(**kwargs)
    return e.value.code, e.value.message


def read(user, room_id, up_to):
    return services.conversations_read(
        requests=[services.ReadRequest(user=user, peer=None, up_to=up_to, room_id=room_id)]
    )[0]


def room_with(users, *names, name="team"):
    return services.room_create(user=users["alice"], name=name, usernames=list(names)).room["id"]


# --- Rooms and members ------------------------------------------------------------------


def test_create_adds_who_exists_and_does_not_block_the_creator(users, capture_pushes):
    services.block_create(blocker=users["dave"], username="alice")
    online(users["alice"], users["bob"], users["dave"])
    with capture_pushes() as pushes:
        created = services.room_create(
            user=users["alice"], name="  team  ", usernames=["bob", "carol", "dave", "alice"]
        )
    room = created.room
    assert created.refused == ["dave"]
    assert (room["name"], room["member_count"], room["admin"], room["last"], room["unread"]) == (
        "team",
        3,
        True,
        None,
        0,
    )
    assert set(RoomMember.objects.values_list("user__username", "admin")) == {
        ("alice", True),
        ("bob", False),
        ("carol", False),
    }
    [event] = frames_for(pushes, users["bob"])
    assert event["type"] == "room" and event["change"] == "created" and event["username"] is None
    assert event["room"]["id"] == room["id"] and event["room"]["admin"] is False
    assert frames_for(pushes, users["alice"]) == [] and frames_for(pushes, users["dave"]) == []


@pytest.mark.parametrize(
    ("name", "usernames", "code"),
    [
        ("   ", [], "invalid"),
        ("x" * 101, [], "invalid"),
        ("ok", ["nobody"], "unknown_user"),
        ("ok", ["u"] * 101, "invalid"),
        ("ok", ["u"] * 100, "unknown_user"),  # 100 names may be asked for
    ],
)
def test_create_refusals_create_nothing(users, name, usernames, code):
    assert code_of(services.room_create, user=users["alice"], name=name, usernames=usernames) == code
    assert not Room.objects.exists()


def test_room_refusals_say_why(users, settings):
    create = services.room_create
    assert words_of(create, user=users["alice"], name=" ", usernames=[]) == (
        "invalid",
        "A room name is 1 to 100 characters.",
    )
    assert words_of(create, user=users["alice"], name="ok", usernames=["u"] * 101) == (
        "invalid",
        "At most 100 names at once.",
    )
    assert words_of(create, user=users["alice"], name="ok", usernames=["bob", "nobody"]) == (
        "unknown_user",
        "There is no user 'nobody'.",
    )
    settings.CHAT_ROOM_MAX_MEMBERS = 2
    assert words_of(create, user=users["alice"], name="ok", usernames=["bob", "carol"]) == (
        "room_full",
        "A room holds at most 2 members.",
    )


def test_add_refuses_an_inactive_user_and_only_who_blocks_the_adder(users):
    """Carol blocks dave, not alice: she is added; an inactive account is
    no user to add."""
    services.block_create(blocker=users["carol"], username="dave")
    users["dave"].is_active = False
    users["dave"].save(update_fields=["is_active"])
    assert code_of(services.room_create, user=users["alice"], name="team", usernames=["dave"]) == "unknown_user"
    created = services.room_create(user=users["alice"], name="team", usernames=["carol"])
    assert created.refused == [] and created.room["member_count"] == 2


def test_a_member_already_in_is_not_added_again(users):
    """Memberships' ids are not their users' ids (another room's come first)."""
    room_with(users, "bob", "carol", "dave", name="first")
    room = room_with(users, "carol")
    done = services.room_members_add(user=users["alice"], room_id=room, usernames=["carol", "dave"])
    assert (done.added, done.refused) == (["dave"], [])
    assert RoomMember.objects.filter(room=room).count() == 3


def test_add_needs_an_admin_and_room_space(users, settings):
    room = room_with(users, "bob")
    add = services.room_members_add
    assert words_of(add, user=users["bob"], room_id=room, usernames=["carol"]) == (
        "forbidden",
        "Only an admin of the room may do that.",
    )
    assert words_of(add, user=users["carol"], room_id=room, usernames=["dave"]) == (
        "unknown_room",
        "You are in no room with that id.",
    )
    assert words_of(add, user=users["alice"], room_id=room, usernames=[]) == ("invalid", "Name at least one user.")
    assert code_of(services.room_members_add, user=users["alice"], room_id=room + 99, usernames=["dave"]) == (
        "unknown_room"
    )
    assert code_of(services.room_members_add, user=users["alice"], room_id=room, usernames=["dave", "x"]) == (
        "unknown_user"
    )
    settings.CHAT_ROOM_MAX_MEMBERS = 3
    assert code_of(services.room_members_add, user=users["alice"], room_id=room, usernames=["carol", "dave"]) == (
        "room_full"
    )
    assert RoomMember.objects.filter(room=room).count() == 2
    done = services.room_members_add(user=users["alice"], room_id=room, usernames=["bob", "carol"])
    assert (done.added, done.refused) == (["carol"], [])


def test_add_tells_members_online_and_the_added(users, capture_pushes):
    room = room_with(users, "bob")
    online(users["bob"], users["carol"])
    with capture_pushes() as pushes:
        services.room_members_add(user=users["alice"], room_id=room, usernames=["carol"])
    for name in ("bob", "carol"):
        [event] = frames_for(pushes, users[name])
        assert (event["change"], event["username"], event["room"]["member_count"]) == ("added", "carol", 3)


def test_remove_drops_what_was_pending_and_hides_the_room(users, capture_pushes):
    room = room_with(users, "bob", "carol")
    acked = services.message_room_send(sender=users["alice"], room_id=room, body="acked").message
    services.deliveries_ack(requests=[services.AckRequest(user=users["bob"], ids=[acked.id])])
    acked_at = Delivery.objects.get(recipient=users["bob"], message=acked).acked_at
    services.message_room_send(sender=users["alice"], room_id=room, body="before")
    # Bob's from elsewhere stays pending: a private message, another room's.
    services.message_send(sender=users["alice"], to_username="bob", body="private")
    elsewhere = room_with(users, "bob", name="elsewhere")
    services.message_room_send(sender=users["alice"], room_id=elsewhere, body="elsewhere")
    with pytest.raises(ServiceError) as e:
        services.room_member_remove(user=users["alice"], room_id=room, username="alice")
    assert (e.value.code, e.value.message) == ("invalid", "Leave the room instead of removing yourself.")
    room_with(users, "dave", name="other")
    assert words_of(services.room_member_remove, user=users["alice"], room_id=room, username="dave") == (
        "invalid",
        "dave is not a member of this room.",
    )
    assert RoomMember.objects.filter(user=users["dave"]).count() == 1  # still in the other room
    assert code_of(services.room_member_remove, user=users["bob"], room_id=room, username="carol") == "forbidden"
    online(users["bob"], users["carol"])
    with capture_pushes() as pushes:
        services.room_member_remove(user=users["alice"], room_id=room, username="bob")
    [event] = frames_for(pushes, users["bob"])
    assert (event["change"], event["username"], event["room"]["member_count"]) == ("removed", "bob", 3)
    assert frames_for(pushes, users["carol"])[0]["room"]["member_count"] == 2
    assert sorted(
        Delivery.objects.filter(recipient=users["bob"], acked_at__isnull=True).values_list("message__body", flat=True)
    ) == ["elsewhere", "private"]
    assert Delivery.objects.get(recipient=users["bob"], message=acked).acked_at == acked_at  # acked then, not now
    assert Delivery.objects.filter(recipient=users["carol"], acked_at__isnull=True).exists()  # still hers to read
    assert code_of(selectors.message_history, user=users["bob"], peer=None, room_id=room) == "unknown_room"
    assert [r["id"] for r in selectors.room_list(user=users["bob"])] == [elsewhere]


def test_an_operator_expels_a_member_as_an_admin_removes_one(users, capture_pushes):
    """The last admin expelled: the others hear who was removed, then who
    is admin now; the expelled one gets the room as it was."""
    room = room_with(users, "bob", "carol")
    online(users["bob"])
    with capture_pushes() as pushes:
        services.room_member_expel(room_id=room, username="alice")
    assert [(f["change"], f["username"]) for f in frames_for(pushes, users["bob"])] == [
        ("removed", "alice"),
        ("admin", "bob"),
    ]
    [event] = frames_for(pushes, users["alice"])
    assert (event["change"], event["username"], event["room"]["member_count"]) == ("removed", "alice", 3)
    assert set(RoomMember.objects.values_list("user__username", flat=True)) == {"bob", "carol"}
    assert code_of(services.room_member_expel, room_id=room, username="dave") == "invalid"
    with pytest.raises(ServiceError) as e:
        services.room_member_expel(room_id=room + 99, username="bob")
    assert (e.value.code, e.value.message) == ("unknown_room", "There is no room with that id.")


def test_an_operator_deletes_a_room_whole_and_its_members_online_get_it_as_it_was(users, capture_pushes):
    room, other = room_with(users, "bob", "carol"), room_with(users, "bob", name="other")
    services.message_room_send(sender=users["alice"], room_id=room, body="gone")
    kept = services.message_room_send(sender=users["alice"], room_id=other, body="kept").message
    read(users["bob"], room, kept.id)
    read(users["bob"], other, kept.id)
    ReadMark.objects.create(user=users["bob"], peer=users["alice"], up_to=kept.id)  # a private conversation's
    online(users["bob"])
    with capture_pushes() as pushes:
        assert services.room_delete(room_id=room) == 1
    [event] = frames_for(pushes, users["bob"])
    assert (event["change"], event["username"], event["room"]["id"], event["room"]["member_count"]) == (
        "removed",
        "bob",
        room,
        3,
    )
    assert frames_for(pushes, users["carol"]) == []  # offline: the room is gone from her list
    assert list(Room.objects.values_list("pk", flat=True)) == [other]
    assert list(Message.objects.values_list("body", flat=True)) == ["kept"]
    assert set(RoomMember.objects.values_list("user__username", flat=True)) == {"alice", "bob"}
    assert sorted(ReadMark.objects.values_list("room_id", "peer_id"), key=str) == sorted(
        [(other, None), (None, users["alice"].pk)], key=str
    )
    with pytest.raises(ServiceError) as e:
        services.room_delete(room_id=room)
    assert (e.value.code, e.value.message) == ("unknown_room", "There is no room with that id.")


def test_a_member_added_again_sees_what_went_to_them_before(users):
    """What was dropped from pending at removal had gone to them while they
    were a member: back in the room, they see it in history (and not what
    came while they were out)."""
    room = room_with(users, "bob", "carol")
    first = services.message_room_send(sender=users["alice"], room_id=room, body="while bob was in").message.id
    services.room_member_remove(user=users["alice"], room_id=room, username="bob")
    services.message_room_send(sender=users["alice"], room_id=room, body="while bob was out")
    services.room_members_add(user=users["alice"], room_id=room, usernames=["bob"])
    seen = [m["id"] for m in selectors.message_history(user=users["bob"], peer=None, room_id=room)]
    assert seen == [first]
    assert selectors.pending_count(user=users["bob"]) == 0


def test_last_admin_leaving_promotes_the_earliest_member_and_the_last_one_deletes(users, capture_pushes):
    room = room_with(users, "bob")
    services.room_members_add(user=users["alice"], room_id=room, usernames=["carol"])
    online(users["bob"], users["carol"])
    with capture_pushes() as pushes:
        services.room_leave(user=users["alice"], room_id=room)
    assert [(f["change"], f["username"]) for f in frames_for(pushes, users["carol"])] == [
        ("left", "alice"),
        ("admin", "bob"),
    ]
    assert frames_for(pushes, users["bob"])[-1]["room"]["admin"] is True
    assert frames_for(pushes, users["alice"]) == []
    # Neither a member nor an admin with another admin left names an heir.
    services.room_members_add(user=users["bob"], room_id=room, usernames=["dave"])
    services.room_admin_set(user=users["bob"], room_id=room, username="carol", admin=True)
    with capture_pushes() as pushes:
        services.room_leave(user=users["dave"], room_id=room)
        services.room_leave(user=users["carol"], room_id=room)
    assert [(f["change"], f["username"]) for f in frames_for(pushes, users["bob"])] == [
        ("left", "dave"),
        ("left", "carol"),
    ]
    services.room_members_add(user=users["bob"], room_id=room, usernames=["carol"])
    assert code_of(services.room_leave, user=users["alice"], room_id=room) == "unknown_room"
    services.room_leave(user=users["bob"], room_id=room)
    services.message_room_send(sender=users["carol"], room_id=room, body="alone")
    services.room_leave(user=users["carol"], room_id=room)
    assert not Room.objects.exists() and not Message.objects.exists()


def test_a_deleted_account_leaves_its_rooms(users):
    room = room_with(users, "bob")
    alone = room_with(users, name="alone")
    services.account_delete(user=users["alice"])
    assert list(RoomMember.objects.values_list("room_id", "user__username", "admin")) == [(room, "bob", True)]
    assert not Room.objects.filter(pk=alone).exists()


def test_admin_changes_and_rename(users, capture_pushes):
    room = room_with(users, "bob")
    call = services.room_admin_set
    services.room_create(user=users["bob"], name="bob's")  # an admin elsewhere is not one here
    assert words_of(call, user=users["alice"], room_id=room, username="alice", admin=False) == (
        "invalid",
        "A room keeps at least one admin.",
    )
    assert code_of(call, user=users["alice"], room_id=room, username="carol", admin=True) == "invalid"
    assert code_of(call, user=users["alice"], room_id=room, username="nobody", admin=True) == "unknown_user"
    assert code_of(call, user=users["bob"], room_id=room, username="bob", admin=True) == "forbidden"
    online(users["bob"])
    with capture_pushes() as pushes:
        call(user=users["alice"], room_id=room, username="bob", admin=True)
        call(user=users["bob"], room_id=room, username="alice", admin=False)  # an admin demotes another
        services.room_rename(user=users["bob"], room_id=room, name="x" * 100)
    assert [(f["change"], f["username"], f["room"]["admin"]) for f in frames_for(pushes, users["bob"])] == [
        ("admin", "bob", True),
        ("admin", "alice", True),
        ("renamed", None, True),
    ]
    assert code_of(services.room_rename, user=users["alice"], room_id=room, name="new") == "forbidden"
    room_with(users, "bob", name="later")  # bob's other room, after this one
    with capture_pushes() as pushes:
        services.room_rename(user=users["bob"], room_id=room, name="again")
    [event] = frames_for(pushes, users["bob"])
    assert (event["room"]["id"], event["room"]["name"]) == (room, "again")
    assert code_of(services.room_rename, user=users["bob"], room_id=room, name="x" * 101) == "invalid"
    services.room_rename(user=users["bob"], room_id=room, name=" new ")
    assert [r["name"] for r in selectors.room_list(user=users["alice"]) if r["id"] == room] == ["new"]


def test_room_members_are_sorted_with_admin_and_online(users):
    room = room_with(users, "carol", "bob")
    online(users["bob"])
    assert selectors.room_member_list(user=users["carol"], room_id=room) == [
        {"username": "alice", "admin": True, "online": False},
        {"username": "bob", "admin": False, "online": True},
        {"username": "carol", "admin": False, "online": False},
    ]
    assert code_of(selectors.room_member_list, user=users["dave"], room_id=room) == "unknown_room"


# --- Room messages --------------------------------------------------------------------


def test_room_message_goes_to_members_but_sender_and_blockers(users, capture_pushes):
    room = room_with(users, "bob", "carol", "dave")
    services.block_create(blocker=users["dave"], username="alice")
    online(users["bob"])
    with capture_pushes() as pushes:
        done = services.message_room_send(sender=users["alice"], room_id=room, body=" hi ")
    assert (done.live, done.stored) == (1, 1)
    assert set(Delivery.objects.values_list("recipient__username", flat=True)) == {"bob", "carol"}
    assert Delivery.objects.get(recipient=users["bob"]).pushed_at is not None
    [push] = [p for p in pushes if p.event["type"] == events.HUB_FRAMES]
    assert push.event["include"] == [users["bob"].pk]
    [event] = push.event["frames"]
    assert (event["kind"], event["to"], event["room"], event["body"], event["stored"]) == (
        "room",
        None,
        room,
        "hi",
        False,
    )
    assert (event["reply_to"], event["reactions"]) == (None, {})
    [pending] = services.delivery_flush_page(user=users["carol"])
    assert (pending["room"], pending["kind"], pending["stored"]) == (room, "room", True)


def test_room_send_refusals(users, settings):
    room = room_with(users, "bob")
    with pytest.raises(ServiceError) as e:
        services.message_room_send(sender=users["carol"], room_id=room, body="x")
    assert (e.value.code, e.value.message) == ("unknown_room", "You are in no room with that id.")
    assert code_of(services.message_room_send, sender=users["bob"], room_id=room, body="  ") == "invalid"
    settings.CHAT_RATE_LIMIT_COUNT = 1
    services.message_room_send(sender=users["bob"], room_id=room, body="one")
    assert code_of(services.message_room_send, sender=users["bob"], room_id=room, body="two") == "rate_limited"


def test_a_room_message_is_pushed_with_its_reply_to_the_members_online_only(users, capture_pushes):
    room = room_with(users, "bob", "carol")
    online(users["bob"], users["dave"])
    services.message_send(sender=users["alice"], to_username="dave", body="pushed to dave")
    question = services.message_room_send(sender=users["alice"], room_id=room, body="q").message
    with capture_pushes() as pushes:
        services.message_room_send(sender=users["alice"], room_id=room, body="a", reply_to=question.id)
    [push] = pushes
    assert push.event["include"] == [users["bob"].pk]
    [frame] = push.event["frames"]
    assert (frame["body"], frame["reply_to"]) == ("a", {"id": question.id, "from": "alice", "excerpt": "q"})


def test_room_send_is_exactly_once_per_client_id(users):
    room = room_with(users, "bob")
    first = services.message_room_send(sender=users["alice"], room_id=room, body="x", client_id="c1")
    again = services.message_room_send(sender=users["alice"], room_id=room, body="x", client_id="c1")
    assert again.message.id == first.message.id and (again.live, again.stored) == (0, 1)
    assert Message.objects.count() == 1


def test_members_see_what_went_to_them_while_members(users):
    room = room_with(users, "bob")
    services.message_room_send(sender=users["alice"], room_id=room, body="early")
    services.room_members_add(user=users["alice"], room_id=room, usernames=["carol"])
    services.message_room_send(sender=users["carol"], room_id=room, body="late")
    history = {
        n: [m["body"] for m in selectors.message_history(user=users[n], peer=None, room_id=room)]
        for n in ("alice", "bob", "carol")
    }
    assert history["alice"] == ["early", "late"] and history["bob"] == ["early", "late"]
    assert history["carol"] == ["late"]
    assert code_of(selectors.message_history, user=users["dave"], peer=None, room_id=room) == "unknown_room"
    # Rooms are not conversations, nor broadcasts.
    assert selectors.conversation_list(user=users["bob"]) == []
    assert selectors.message_history(user=users["bob"], peer=None) == []


def test_rooms_list_last_unread_and_order(users):
    first = room_with(users, "bob", name="first")
    second = room_with(users, "bob", name="second")
    empty = room_with(users, "bob", name="empty")
    services.message_room_send(sender=users["alice"], room_id=second, body="a")
    services.message_room_send(sender=users["alice"], room_id=first, body="b")
    last = services.message_room_send(sender=users["alice"], room_id=first, body="c").message
    rooms = selectors.room_list(user=users["bob"])
    assert [r["id"] for r in rooms] == [first, second, empty]
    assert [(r["last"] or {}).get("body") for r in rooms] == ["c", "a", None]
    assert [r["unread"] for r in rooms] == [2, 1, 0]
    read(users["bob"], first, last.id - 1)
    assert selectors.room_list(user=users["bob"])[0]["unread"] == 1
    assert selectors.room_list(user=users["alice"])[0]["unread"] == 0  # her own
    assert read(users["carol"], first, 1).code == "unknown_room"
    # A room the reader is not in does not end the batch.
    batch = [
        services.ReadRequest(user=users["carol"], peer=None, up_to=last.id, room_id=first),
        services.ReadRequest(user=users["bob"], peer=None, up_to=last.id, room_id=first),
    ]
    refused, moved = services.conversations_read(requests=batch)
    assert (refused.code, moved) == ("unknown_room", True)
    assert selectors.room_list(user=users["bob"])[0]["unread"] == 0
    # A room mark is not the broadcast mark.
    services.message_broadcast(sender=users["alice"], body="all")
    online(users["bob"])
    [broadcasts] = selectors.conversation_list(user=users["bob"])
    assert broadcasts["unread"] == 1


def test_search_covers_rooms_while_a_member(users):
    room = room_with(users, "bob")
    services.message_room_send(sender=users["alice"], room_id=room, body="lunch upstairs")
    services.message_send(sender=users["alice"], to_username="bob", body="lunch later")
    everywhere = selectors.message_search(user=users["bob"], query="lunch")
    assert [m["body"] for m in everywhere] == ["lunch later", "lunch upstairs"]
    in_room = selectors.message_search(user=users["bob"], query="lun", room_id=room)
    assert [m["room"] for m in in_room] == [room]
    services.room_leave(user=users["bob"], room_id=room)
    assert [m["body"] for m in selectors.message_search(user=users["bob"], query="lunch")] == ["lunch later"]
    assert code_of(selectors.message_search, user=users["bob"], query="lunch", room_id=room) == "unknown_room"


def test_symbol_search_covers_rooms_while_a_member(users):
    """Issue 24.6's bounded scan for 🎉 keeps the room rule of word search."""
    room = room_with(users, "bob")
    services.message_room_send(sender=users["alice"], room_id=room, body="🎉 upstairs")
    services.message_send(sender=users["alice"], to_username="bob", body="🎉 later")
    bodies = lambda **kw: [m["body"] for m in selectors.message_search(user=users["bob"], query="🎉", **kw)]  # noqa: E731
    assert bodies() == ["🎉 later", "🎉 upstairs"]
    assert bodies(room_id=room) == ["🎉 upstairs"]
    services.room_leave(user=users["bob"], room_id=room)
    assert bodies() == ["🎉 later"]
    assert code_of(selectors.message_search, user=users["bob"], query="🎉", room_id=room) == "unknown_room"


def test_room_edit_and_delete_reach_members_online_who_have_it(users, capture_pushes):
    """Not dave, added since; not erin, who had it and left the room."""
    erin = make_user("erin")
    room = room_with(users, "bob", "carol", "erin")
    message = services.message_room_send(sender=users["alice"], room_id=room, body="typo").message
    services.room_members_add(user=users["alice"], room_id=room, usernames=["dave"])
    services.room_leave(user=erin, room_id=room)
    online(users["bob"], users["dave"], erin)
    with capture_pushes() as pushes:
        services.message_edit(user=users["alice"], message_id=message.id, body="fixed")
    assert [f["type"] for f in frames_for(pushes, users["bob"])] == ["message_edited"]
    assert frames_for(pushes, users["dave"]) == [] and frames_for(pushes, erin) == []
    [pending] = services.delivery_flush_page(user=users["carol"])
    assert pending["body"] == "fixed"
    services.message_delete(user=users["alice"], message_id=message.id)
    assert services.delivery_flush_page(user=users["carol"]) == []


def test_typing_in_a_room_reaches_members_online_who_do_not_block(users):
    room = room_with(users, "bob", "carol", "dave")
    services.block_create(blocker=users["carol"], username="alice")
    online(users["alice"], users["bob"], users["carol"])
    assert selectors.room_typing_recipients(sender=users["alice"], room_id=room) == {users["bob"].pk}
    services.room_leave(user=users["bob"], room_id=room)
    assert selectors.room_typing_recipients(sender=users["alice"], room_id=room) == set()
    assert code_of(selectors.room_typing_recipients, sender=users["bob"], room_id=room) == "unknown_room"


# --- Replies --------------------------------------------------------------------------


def test_replies_stay_in_their_conversation(users):
    room = room_with(users, "bob")
    in_room = services.message_room_send(sender=users["bob"], room_id=room, body="q" * 150).message
    private = services.message_send(sender=users["carol"], to_username="alice", body="psst").message
    broadcast = services.message_broadcast(sender=users["dave"], body="all").message
    reply = services.message_room_send(sender=users["alice"], room_id=room, body="a", reply_to=in_room.id)
    assert reply.message.reply_to_id == in_room.id
    for call, kwargs in [
        (services.message_room_send, {"room_id": room, "reply_to": private.id}),
        (services.message_send, {"to_username": "bob", "reply_to": private.id}),
        (services.message_send, {"to_username": "carol", "reply_to": in_room.id}),
        (services.message_broadcast, {"reply_to": in_room.id}),
        (services.message_send, {"to_username": "carol", "reply_to": 10**9}),
    ]:
        assert code_of(call, sender=users["alice"], body="x", **kwargs) == "unknown_message"
    services.room_members_add(user=users["alice"], room_id=room, usernames=["dave"])
    # Dave joined after it: he cannot see it, so he cannot reply to it.
    assert code_of(services.message_room_send, sender=users["dave"], room_id=room, body="x", reply_to=in_room.id) == (
        "unknown_message"
    )
    services.message_send(sender=users["alice"], to_username="carol", body="ok", reply_to=private.id)
    online(users["alice"])  # her login brings the broadcast she missed
    services.message_broadcast(sender=users["alice"], body="ok", reply_to=broadcast.id)
    # Carol cannot see the room: she cannot reply to it from anywhere.
    assert code_of(services.message_broadcast, sender=users["carol"], body="x", reply_to=in_room.id) == (
        "unknown_message"
    )
    assert Message.objects.count() == 6


def test_reply_shows_the_excerpt_as_it_is_now(users, capture_pushes):
    original = services.message_send(sender=users["bob"], to_username="alice", body="é" * 120).message
    online(users["bob"])
    with capture_pushes() as pushes:
        services.message_send(sender=users["alice"], to_username="bob", body="yes", reply_to=original.id)
    [event] = frames_for(pushes, users["bob"])
    assert event["reply_to"] == {"id": original.id, "from": "bob", "excerpt": "é" * 100}
    services.message_edit(user=users["bob"], message_id=original.id, body="short")
    history = selectors.message_history(user=users["alice"], peer=users["bob"])
    assert history[-1]["reply_to"]["excerpt"] == "short" and history[0]["reply_to"] is None
    services.message_delete(user=users["bob"], message_id=original.id)
    assert selectors.message_history(user=users["alice"], peer=users["bob"])[-1]["reply_to"] == {
        "id": original.id,
        "from": "bob",
        "excerpt": "",
    }


def test_what_waited_carries_replies_and_reactions(users):
    room = room_with(users, "bob")
    first = services.message_room_send(sender=users["alice"], room_id=room, body="first").message
    services.message_react(user=users["alice"], message_id=first.id, emoji="👍", on=True)
    services.message_room_send(sender=users["alice"], room_id=room, body="second", reply_to=first.id)
    waited = services.delivery_flush_page(user=users["bob"])
    assert [(m["body"], m["reactions"], m["reply_to"]) for m in waited] == [
        ("first", {"👍": ["alice"]}, None),
        ("second", {}, {"id": first.id, "from": "alice", "excerpt": "first"}),
    ]


# --- Reactions ------------------------------------------------------------------------


def test_reactions_are_idempotent_ordered_and_told_to_viewers(users, capture_pushes):
    room = room_with(users, "bob", "carol")
    message = services.message_room_send(sender=users["alice"], room_id=room, body="hi").message
    online(users["alice"], users["bob"], users["dave"])
    react = services.message_react
    with capture_pushes() as pushes:
        assert react(user=users["carol"], message_id=message.id, emoji="👍", on=True) is True
        assert react(user=users["bob"], message_id=message.id, emoji="🎉", on=True) is True
        assert react(user=users["alice"], message_id=message.id, emoji="👍", on=True) is True
        assert react(user=users["alice"], message_id=message.id, emoji="👍", on=True) is False
        assert react(user=users["bob"], message_id=message.id, emoji="x", on=False) is False
    assert [(f["emoji"], f["by"], f["on"]) for f in frames_for(pushes, users["bob"])] == [
        ("👍", "carol", True),
        ("🎉", "bob", True),
        ("👍", "alice", True),
    ]
    assert len(frames_for(pushes, users["alice"])) == 3 and frames_for(pushes, users["dave"]) == []
    [obj] = selectors.message_history(user=users["bob"], peer=None, room_id=room)
    assert list(obj["reactions"].items()) == [("👍", ["alice", "carol"]), ("🎉", ["bob"])]
    react(user=users["bob"], message_id=message.id, emoji="🎉", on=False)
    assert selectors.message_history(user=users["bob"], peer=None, room_id=room)[0]["reactions"] == {
        "👍": ["alice", "carol"]
    }
    # An emoji keeps the place of its first reaction, whoever takes theirs back.
    assert react(user=users["bob"], message_id=message.id, emoji="🎉", on=True) is True
    assert react(user=users["carol"], message_id=message.id, emoji="👍", on=False) is True
    [obj] = selectors.message_history(user=users["bob"], peer=None, room_id=room)
    assert list(obj["reactions"].items()) == [("👍", ["alice"]), ("🎉", ["bob"])]
    assert react(user=users["alice"], message_id=message.id, emoji="👍", on=False) is True
    assert react(user=users["alice"], message_id=message.id, emoji="👍", on=True) is True
    [obj] = selectors.message_history(user=users["bob"], peer=None, room_id=room)
    assert list(obj["reactions"].items()) == [("👍", ["alice"]), ("🎉", ["bob"])]


@pytest.mark.parametrize("emoji", ["", "a b", "x" * 33, "\t"])
def test_reaction_emoji_must_be_short_without_space(users, emoji):
    message = services.message_send(sender=users["alice"], to_username="bob", body="hi").message
    with pytest.raises(ServiceError) as e:
        services.message_react(user=users["bob"], message_id=message.id, emoji=emoji, on=True)
    assert (e.value.code, e.value.message) == ("invalid", "An emoji is 1 to 32 characters without white space.")
    assert not Reaction.objects.exists()


def test_a_reaction_is_on_by_default_of_its_message_only_and_up_to_32_characters(users, capture_pushes):
    """The same emoji of the same user on a second message is a new reaction,
    told with that message's id."""
    first = services.message_send(sender=users["alice"], to_username="bob", body="one").message
    second = services.message_send(sender=users["alice"], to_username="bob", body="two").message
    emoji = "x" * 32
    online(users["alice"])
    assert services.message_react(user=users["bob"], message_id=first.id, emoji=emoji) is True
    with capture_pushes() as pushes:
        assert services.message_react(user=users["bob"], message_id=second.id, emoji=emoji) is True
    assert frames_for(pushes, users["alice"]) == [
        {"type": "reaction", "id": second.id, "emoji": emoji, "by": "bob", "on": True}
    ]
    assert sorted(Reaction.objects.values_list("message_id", "active")) == [(first.id, True), (second.id, True)]


def test_reactions_only_on_what_one_can_see(users):
    private = services.message_send(sender=users["alice"], to_username="bob", body="hi").message
    assert code_of(services.message_react, user=users["carol"], message_id=private.id, emoji="x", on=True) == (
        "unknown_message"
    )
    services.message_delete(user=users["alice"], message_id=private.id)
    assert code_of(services.message_react, user=users["bob"], message_id=private.id, emoji="x", on=True) == (
        "unknown_message"
    )


def test_history_costs_the_same_queries_for_a_longer_page(users):
    room = room_with(users, "bob")

    def page_queries():
        with CaptureQueriesContext(connection) as queries:
            selectors.message_history(user=users["bob"], peer=None, room_id=room)
            services.delivery_flush_page(user=users["bob"])
        return len(queries)

    def add(n):
        for _ in range(n):
            first = services.message_room_send(sender=users["alice"], room_id=room, body="x", rate_limit=False)
            services.message_room_send(
                sender=users["alice"], room_id=room, body="y", reply_to=first.message.id, rate_limit=False
            )
            services.message_react(user=users["bob"], message_id=first.message.id, emoji="👍", on=True)

    add(1)
    few = page_queries()
    add(5)
    assert page_queries() == few


def test_the_hub_hands_frames_for_some_users_to_those_only():
    """A room message is one layer message per process, with the members to
    hand it to."""
    from messaging.hub import Hub

    got = {}

    class Conn:
        presence_batched, logged_in, flushing = False, True, False

        def __init__(self, user_id):
            self.channel_name, self.user_id = f"c{user_id}", user_id

        def deliver(self, texts, message_ids=None):
            got.setdefault(self.user_id, []).extend(texts)

    hub = Hub()
    for user_id in (1, 2, 3):
        hub.connections[f"c{user_id}"] = Conn(user_id)
    hub.dispatch({"type": events.HUB_FRAMES, "frames": [{"type": "x"}], "include": [1, 3]})
    assert sorted(got) == [1, 3]
    hub.dispatch({"type": events.HUB_FRAMES, "frames": [{"type": "y"}], "exclude": [1]})
    assert sorted(got) == [1, 2, 3] and len(got[1]) == 1


# --- Over the socket ------------------------------------------------------------------


@pytest.fixture
async def people(transactional_db):
    for name in ("alice", "bob", "carol", "dave"):
        await amake_user(name)


async def test_a_room_over_the_socket(people):
    a, b = await connected("alice"), await connected("bob")
    created = await a.ok("room_create", name=" team ", members=["bob", "carol"])
    room = created["room"]["id"]
    assert (created["room"]["name"], created["room"]["member_count"], created["refused"]) == ("team", 3, [])
    event = await b.event("room")
    assert (event["change"], event["room"]["id"], event["room"]["admin"], event["username"]) == (
        "created",
        room,
        False,
        None,
    )
    sent = await a.ok("send", room=room, body="hello room")
    assert (sent["live"], sent["stored"]) == (1, 1)
    message = await b.event("message", id=sent["id"])
    assert (message["kind"], message["to"], message["room"], message["reply_to"], message["reactions"]) == (
        "room",
        None,
        room,
        None,
        {},
    )
    assert (await a.ok("send", room=room, body="no reply", reply_to=None))["stored"] == 1
    answer = await b.ok("send", room=room, body="hi", reply_to=sent["id"])
    reply_event = await a.event("message", id=answer["id"])
    assert reply_event["reply_to"] == {"id": sent["id"], "from": "alice", "excerpt": "hello room"}
    await b.ok("react", id=sent["id"], emoji="👍")
    for client in (a, b):
        assert await client.event("reaction", id=sent["id"], emoji="👍", by="bob", on=True)
    await b.ok("typing", room=room)
    assert await a.event("typing", **{"from": "bob", "room": room, "typing": True})
    history = (await b.ok("history", room=room))["messages"]
    assert [(m["body"], m["reactions"]) for m in history] == [
        ("hello room", {"👍": ["bob"]}),
        ("no reply", {}),
        ("hi", {}),
    ]
    assert [m["id"] for m in (await b.ok("search", query="hello", room=room))["messages"]] == [sent["id"]]
    assert [m["id"] for m in (await b.ok("search", query="hello"))["messages"]] == [sent["id"]]
    [listed] = (await b.ok("rooms"))["rooms"]
    assert (listed["id"], listed["last"]["id"], listed["unread"]) == (room, answer["id"], 2)
    await b.ok("read", room=room, up_to=sent["id"])
    assert (await b.ok("rooms"))["rooms"][0]["unread"] == 1
    await b.ok("read", room=room, up_to=answer["id"])
    assert (await b.ok("rooms"))["rooms"][0]["unread"] == 0
    assert (await b.ok("room_members", room=room))["members"] == [
        {"username": "alice", "admin": True, "online": True},
        {"username": "bob", "admin": False, "online": True},
        {"username": "carol", "admin": False, "online": False},
    ]
    added = await a.ok("room_add", room=room, usernames=["dave", "bob"])
    assert (added["added"], added["refused"]) == (["dave"], [])
    assert (await b.event("room", change="added"))["username"] == "dave"
    await a.ok("room_admin", room=room, username="bob", admin=True)
    await a.ok("room_rename", room=room, name="crew")
    assert (await b.event("room", change="renamed"))["room"]["name"] == "crew"
    await b.ok("room_remove", room=room, username="dave")
    await a.ok("room_leave", room=room)
    assert (await b.event("room", change="left"))["username"] == "alice"
    await a.error("history", "unknown_room", room=room)
    await a.close()
    await b.close()


async def test_room_fields_are_checked_and_nothing_changes(people):
    a, b = await connected("alice"), await connected("bob")
    room = (await a.ok("room_create", name="team", members=["bob"]))["room"]["id"]
    message = (await a.ok("send", room=room, body="x"))["id"]
    private = (await a.ok("send", to="carol", body="p"))["id"]
    for op, fields, code in [
        ("room_create", {"name": "   "}, "invalid"),
        ("room_create", {"name": "x" * 101}, "invalid"),
        ("room_create", {"name": 5}, "invalid"),
        ("room_create", {"name": "n", "members": "bob"}, "invalid"),
        ("room_create", {"name": "n", "members": [f"u{i}" for i in range(101)]}, "invalid"),
        ("room_create", {"name": "n", "members": ["nobody"]}, "unknown_user"),
        ("room_create", {"name": "n", "members": [1]}, "invalid"),
        ("room_members", {"room": room + 1}, "unknown_room"),
        ("room_members", {"room": "1"}, "unknown_room"),
        ("room_add", {"room": room, "usernames": []}, "invalid"),
        ("room_add", {"room": room, "usernames": [f"u{i}" for i in range(101)]}, "invalid"),
        ("room_add", {"room": room, "usernames": ["nobody"]}, "unknown_user"),
        ("room_add", {"room": -1, "usernames": ["carol"]}, "unknown_room"),
        ("room_remove", {"room": room, "username": "alice"}, "invalid"),
        ("room_remove", {"room": room, "username": "carol"}, "invalid"),
        ("room_rename", {"room": room, "name": ""}, "invalid"),
        ("room_rename", {"room": room, "name": None}, "invalid"),
        ("room_admin", {"room": room, "username": "alice", "admin": False}, "invalid"),
        ("room_admin", {"room": room, "username": "bob", "admin": "yes"}, "invalid"),
        ("room_leave", {"room": True}, "unknown_room"),
        ("send", {"room": room, "to": "bob", "body": "x"}, "invalid"),
        ("send", {"room": room + 1, "body": "x"}, "unknown_room"),
        ("send", {"room": room, "body": "x", "reply_to": private}, "unknown_message"),
        ("send", {"room": room, "body": "x", "reply_to": "1"}, "invalid"),
        ("broadcast", {"body": "x", "reply_to": message}, "unknown_message"),
        ("history", {"room": room + 1}, "unknown_room"),
        ("history", {"room": room, "with": "bob"}, "invalid"),
        ("read", {"room": room + 1, "up_to": 1}, "unknown_room"),
        ("search", {"room": room + 1, "query": "x"}, "unknown_room"),
        ("typing", {"room": room + 1}, "unknown_room"),
        ("react", {"id": message, "emoji": "a b"}, "invalid"),
        ("react", {"id": message, "emoji": "x" * 33}, "invalid"),
        ("react", {"id": message, "emoji": "x", "on": 1}, "invalid"),
        ("react", {"id": message + 100, "emoji": "x"}, "unknown_message"),
    ]:
        await a.error(op, code, **fields)
    await b.error("room_rename", "forbidden", room=room, name="mine")
    assert (await a.ok("whoami"))["username"] == "alice"  # the connection stayed open
    assert await sync_to_async(lambda: (Room.objects.count(), Message.objects.count(), Reaction.objects.count()))() == (
        1,
        2,
        0,
    )
    assert [r["name"] for r in (await a.ok("rooms"))["rooms"]] == ["team"]
    await a.close()
    await b.close()


@pytest.mark.scaleout
@pytest.mark.django_db(transaction=True)
async def test_rooms_across_two_processes():
    need(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    need(bool(django_settings.REDIS_URL), "Redis (REDIS_URL)")
    one, two = Server().start(), Server().start()
    try:
        await signup(one.url, "alice", "bob")
        async with Peer(one.url) as a, Peer(two.url) as b:
            await a.ok("login", username="alice", password=PASSWORD)
            await b.ok("login", username="bob", password=PASSWORD)
            room = (await a.ok("room_create", name="team", members=["bob"]))["room"]["id"]
            assert (await b.event("room", change="created"))["room"]["id"] == room
            sent = await a.ok("send", room=room, body="across")
            assert sent["live"] == 1
            assert (await b.event("message", id=sent["id"]))["room"] == room
            await b.ok("react", id=sent["id"], emoji="🎉")
            assert await a.event("reaction", id=sent["id"], by="bob", on=True)
    finally:
        one.stop()
        two.stop()
