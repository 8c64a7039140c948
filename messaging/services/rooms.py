"""Rooms (protocol 1.2): creating them, who is in them, who runs them.

Every change is committed, then told: each member online, and the user
added or removed, gets a `room` event with the room as they see it (their
own `admin`, `last` and `unread`), computed for all of them in a few
queries. A room id the caller is not in answers unknown_room, as one that
does not exist: nobody learns of a room they are not in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections, router, transaction
from django.utils import timezone

from accounts.models import User as UserModel
from core.errors import ServiceError

from .. import events, wire
from ..models import Block, ClientRequest, Delivery, Edit, Message, Reaction, ReadMark, Room, RoomMember
from ..selectors import room_objects, room_online_member_ids

User = get_user_model()

MAX_NAMES = 100  # usernames in one room_create or room_add


@dataclass(frozen=True)
class RoomCreated:
    room: wire.RoomObject  # as its creator sees it
    refused: list[str]  # names not added: they block the creator


@dataclass(frozen=True)
class MembersAdded:
    added: list[str]
    refused: list[str]


def _clean_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise ServiceError("invalid", "A room name is 1 to 100 characters.")
    return name


def _membership(user: UserModel, room_id: int, *, admin: bool = False) -> RoomMember:
    """The caller's membership, its room locked for the change (unknown_room
    unless a member; forbidden unless an admin, when `admin`)."""
    member = (
        RoomMember.objects.select_for_update(of=("self", "room"))
        .select_related("room")
        .filter(room_id=room_id, user=user)
        .first()
    )
    if member is None:
        raise ServiceError("unknown_room", "You are in no room with that id.")
    if admin and not member.admin:
        raise ServiceError("forbidden", "Only an admin of the room may do that.")
    return member


def _users(usernames: Collection[str]) -> dict[str, UserModel]:
    """The active users by name; one unknown name is unknown_user for all."""
    users = {u.username: u for u in User.objects.filter(username__in=set(usernames), is_active=True)}
    missing = sorted(set(usernames) - set(users))
    if missing:
        raise ServiceError("unknown_user", f"There is no user {missing[0]!r}.")
    return users


def _member(room_id: int, username: str) -> RoomMember:
    """Another user's membership: unknown_user if no such user, invalid if
    not a member."""
    user = _users([username])[username]
    member = RoomMember.objects.filter(room_id=room_id, user=user).select_related("room", "user").first()
    if member is None:
        raise ServiceError("invalid", f"{username} is not a member of this room.")
    return member


def _add(room: Room, creator: UserModel, usernames: Sequence[str]) -> tuple[list[str], list[str]]:
    """Add the named users who exist, are not members and do not block
    `creator` (nobody if one name is unknown or the room would overflow):
    (added, refused), sorted."""
    if len(usernames) > MAX_NAMES:
        raise ServiceError("invalid", f"At most {MAX_NAMES} names at once.")
    users = _users(usernames)
    present = set(RoomMember.objects.filter(room=room, user__in=users.values()).values_list("user_id", flat=True))
    candidates = [u for u in users.values() if u.pk not in present and u.pk != creator.pk]
    blockers = set(Block.objects.filter(blocker__in=candidates, blocked=creator).values_list("blocker_id", flat=True))
    added = [u for u in candidates if u.pk not in blockers]
    if added and RoomMember.objects.filter(room=room).count() + len(added) > settings.CHAT_ROOM_MAX_MEMBERS:
        raise ServiceError("room_full", f"A room holds at most {settings.CHAT_ROOM_MAX_MEMBERS} members.")
    now = timezone.now()
    RoomMember.objects.bulk_create([RoomMember(room=room, user=u, joined_at=now) for u in added])
    refused = sorted(u.username for u in candidates if u.pk in blockers)
    return sorted(u.username for u in added), refused


def _tell(room_id: int, changes: Sequence[tuple[wire.RoomChange, str | None]], *, skip: Collection[int] = ()) -> None:
    """Push each change, in order, to the room's members online (users just
    added among them) but `skip`: one copy of the room object each, as that
    member now sees it."""
    targets = room_online_member_ids(room_id) - set(skip)
    frames: dict[int, list[wire.RoomEvent]] = {}
    for (_, user_id), room in room_objects(RoomMember.objects.filter(room_id=room_id, user__in=targets)).items():
        frames[user_id] = [wire.room_event(change, room, username=username) for change, username in changes]
    events.push_rooms(frames)


def _drop_pending(room_id: int, user_id: int) -> None:
    """A member who is removed or leaves gets nothing more of the room: what
    was pending stops being pending (no push, at login or again). The rows
    stay, marked done, because they are also what lets the member see those
    messages in history should they be added again: they went to them
    while they were a member (protocol 1.2)."""
    Delivery.objects.filter(recipient_id=user_id, message__room_id=room_id, acked_at__isnull=True).update(
        acked_at=timezone.now()
    )


def _as_it_was(member: RoomMember) -> wire.RoomObject:
    return room_objects(RoomMember.objects.filter(pk=member.pk))[(member.room_id, member.user_id)]


def room_create(*, user: UserModel, name: str, usernames: Sequence[str] = ()) -> RoomCreated:
    """A new room with `user` as its first admin and the named users who do
    not block them; each of those online hears it was created."""
    name = _clean_name(name)
    with transaction.atomic():
        now = timezone.now()
        room = Room.objects.create(name=name, created_at=now)
        creator = RoomMember.objects.create(room=room, user=user, admin=True, joined_at=now)
        added, refused = _add(room, user, usernames)
        _tell(room.pk, [("created", None)], skip=[user.pk])
        return RoomCreated(room=_as_it_was(creator), refused=refused)


def room_members_add(*, user: UserModel, room_id: int, usernames: Sequence[str]) -> MembersAdded:
    """An admin adds users (as `room_create` does): each member online and
    each user added hears of every one added."""
    if not usernames:
        raise ServiceError("invalid", "Name at least one user.")
    with transaction.atomic():
        member = _membership(user, room_id, admin=True)
        added, refused = _add(member.room, user, usernames)
        if added:
            _tell(room_id, [("added", name) for name in added])
    return MembersAdded(added=added, refused=refused)


def room_member_remove(*, user: UserModel, room_id: int, username: str) -> None:
    """An admin removes another member (an admin too): what of the room was
    pending for them is dropped; they get the room as it was."""
    with transaction.atomic():
        _membership(user, room_id, admin=True)
        if username == user.username:
            raise ServiceError("invalid", "Leave the room instead of removing yourself.")
        _remove(_member(room_id, username))


def room_member_expel(*, room_id: int, username: str) -> None:
    """An operator (the admin site) removes a member of any room: as an
    admin's removal, and as a leave for what follows (an heir if they were
    the last admin, the room gone with its last member)."""
    with transaction.atomic():
        if not Room.objects.select_for_update().filter(pk=room_id).exists():
            raise ServiceError("unknown_room", "There is no room with that id.")
        _remove(_member(room_id, username))


def _remove(removed: RoomMember) -> None:
    before = _as_it_was(removed)
    _depart(removed, ("removed", removed.user.username))
    events.push_rooms({removed.user_id: [wire.room_event("removed", before, username=removed.user.username)]})


def _depart(member: RoomMember, change: tuple[wire.RoomChange, str | None]) -> None:
    """`member` is out: nothing more of the room for them. The last admin
    gone makes the member who joined earliest admin; the last member gone
    deletes the room. The others online hear `change`."""
    room_id = member.room_id
    member.delete()
    _drop_pending(room_id, member.user_id)
    rest = RoomMember.objects.filter(room_id=room_id)
    if not rest.exists():
        _delete(room_id)
        return
    changes: list[tuple[wire.RoomChange, str | None]] = [change]
    if member.admin and not rest.filter(admin=True).exists():
        heir = rest.select_related("user").order_by("joined_at", "id").first()
        assert heir is not None
        heir.admin = True
        heir.save(update_fields=["admin"])
        changes.append(("admin", heir.user.username))
    _tell(room_id, changes)


def room_leave(*, user: UserModel, room_id: int) -> None:
    """Leave a room. The last admin leaving makes the member who joined
    earliest admin; the last member leaving deletes the room."""
    with transaction.atomic():
        _depart(_membership(user, room_id), ("left", user.username))


def room_delete(*, room_id: int) -> int:
    """An operator (the admin site) deletes a room, its members and every
    message of it; each member online gets `removed` with the room as it
    was. How many messages went."""
    with transaction.atomic():
        if not Room.objects.select_for_update().filter(pk=room_id).exists():
            raise ServiceError("unknown_room", "There is no room with that id.")
        told = room_objects(RoomMember.objects.filter(room_id=room_id, user__in=room_online_member_ids(room_id)))
        members = dict(RoomMember.objects.filter(room_id=room_id).values_list("user_id", "user__username"))
        deleted = _delete(room_id)
        events.push_rooms(
            {
                user_id: [wire.room_event("removed", room, username=members[user_id])]
                for (_, user_id), room in told.items()
            }
        )
    return deleted


def _delete(room_id: int) -> int:
    """Delete a room and all of it in a few statements, none of which loads
    its history into Python (Django's cascade would fetch every message to
    delete its deliveries, reactions and edits first)."""
    of_room = Message.objects.filter(room_id=room_id).values("pk")
    for rows in (Delivery, Reaction, Edit, ClientRequest):
        rows.objects.filter(message__in=of_room).delete()  # no dependents: one DELETE each
    # A reply is of the same conversation; anything else pointing in lets go.
    Message.objects.filter(reply_to__in=of_room).exclude(room_id=room_id).update(reply_to=None)
    db = router.db_for_write(Message)
    with connections[db].cursor() as cursor:
        cursor.execute(f"DELETE FROM {Message._meta.db_table} WHERE room_id = %s", [room_id])
        deleted: int = cursor.rowcount
    ReadMark.objects.filter(room_id=room_id).delete()
    RoomMember.objects.filter(room_id=room_id).delete()
    Room.objects.filter(pk=room_id).delete()
    return deleted


def room_rename(*, user: UserModel, room_id: int, name: str) -> None:
    name = _clean_name(name)
    with transaction.atomic():
        room = _membership(user, room_id, admin=True).room
        room.name = name
        room.save(update_fields=["name"])
        _tell(room_id, [("renamed", None)])


def room_admin_set(*, user: UserModel, room_id: int, username: str, admin: bool) -> None:
    """An admin makes a member admin or not; the room never ends up without one."""
    with transaction.atomic():
        _membership(user, room_id, admin=True)
        target = _member(room_id, username)
        if target.admin == admin:
            return
        if not admin and not RoomMember.objects.filter(room_id=room_id, admin=True).exclude(pk=target.pk).exists():
            raise ServiceError("invalid", "A room keeps at least one admin.")
        target.admin = admin
        target.save(update_fields=["admin"])
        _tell(room_id, [("admin", username)])


SEED_BATCH = 5000  # memberships per bulk insert


def rooms_seed(
    *, rooms: Sequence[tuple[str, Sequence[UserModel]]], progress: Callable[[int], object] = lambda n: None
) -> int:
    """Demo and load-test rooms (chat_seed), each (name, members) with the
    first member its admin, in bulk and untold: nobody is online to hear.
    A room whose name exists already is left as it is; how many were made."""
    existing = set(Room.objects.filter(name__in=[name for name, _ in rooms]).values_list("name", flat=True))
    todo = [(name, members) for name, members in rooms if name not in existing]
    progress(len(rooms) - len(todo))
    limit = settings.CHAT_ROOM_MAX_MEMBERS
    if any(len(members) > limit for _, members in todo):
        raise ServiceError("room_full", f"A room holds at most {limit} members.")
    now = timezone.now()
    per = max(1, SEED_BATCH // max((len(m) for _, m in todo), default=1))  # rooms per transaction
    for start in range(0, len(todo), per):
        batch = todo[start : start + per]
        with transaction.atomic():
            made = Room.objects.bulk_create([Room(name=name, created_at=now) for name, _ in batch])
            RoomMember.objects.bulk_create(
                [
                    RoomMember(room=room, user=user, admin=i == 0, joined_at=now)
                    for room, (_, members) in zip(made, batch, strict=True)
                    for i, user in enumerate(members)
                ],
                batch_size=SEED_BATCH,
            )
        progress(len(batch))
    return len(todo)
