"""Read marks: how far a user has read each conversation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from accounts.models import User as UserModel
from core.errors import ServiceError

from .. import events, wire
from ..models import ReadMark, RoomMember


@dataclass(frozen=True)
class ReadRequest:
    user: UserModel
    peer: UserModel | None  # None: the broadcasts, or the room
    up_to: int
    room_id: int | None = None  # a room (unknown_room unless the user is a member)


def conversations_read(*, requests: Sequence[ReadRequest]) -> list[bool | ServiceError]:
    """Move read marks forward (never back); each result says whether the
    mark moved. The peer of a private conversation gets a read receipt (a
    room gets none: receipts are for private messages only)."""
    results: list[bool | ServiceError] = []
    with transaction.atomic():
        for r in requests:
            if r.room_id is not None and not RoomMember.objects.filter(room=r.room_id, user=r.user).exists():
                results.append(ServiceError("unknown_room", "You are in no room with that id."))
                continue
            mark, created = ReadMark.objects.get_or_create(
                user=r.user, peer=r.peer, room_id=r.room_id, defaults={"up_to": r.up_to}
            )
            moved = created or ReadMark.objects.filter(pk=mark.pk, up_to__lt=r.up_to).update(up_to=r.up_to) > 0
            if moved and r.peer is not None:
                events.push_frames(r.peer.pk, [wire.receipt_read(r.up_to, by=r.user.username)])
            results.append(moved)
    return results


def conversation_read(*, user: UserModel, peer: UserModel | None, up_to: int, room_id: int | None = None) -> bool:
    """Mark the conversation with `peer` (None: broadcasts), or the room,
    read up to `up_to`."""
    result = conversations_read(requests=[ReadRequest(user=user, peer=peer, up_to=up_to, room_id=room_id)])[0]
    if isinstance(result, ServiceError):
        raise result
    return result
