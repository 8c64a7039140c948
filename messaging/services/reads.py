"""Read marks: how far a user has read each conversation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from accounts.models import User as UserModel
from core.errors import ServiceError

from .. import events, selectors, wire
from ..models import ReadMark


@dataclass(frozen=True)
class ReadRequest:
    user: UserModel
    peer: UserModel | None  # None: the broadcasts, or the room
    up_to: int
    room_id: int | None = None  # a room (unknown_room unless the user is a member)


def conversations_read(*, requests: Sequence[ReadRequest]) -> list[bool | ServiceError]:
    """Move read marks forward (never back), no further than the last
    message of the conversation; each result says whether the mark moved.

    The peer of a private conversation gets a read receipt only if neither
    of the two blocks the other: a receipt is a message from the reader, so
    it must not reach someone they block, nor someone who blocks them. A
    conversation with no message has nothing to read: no mark, no receipt.
    A room's mark sends no receipt: receipts are for private messages.
    """
    results: list[bool | ServiceError] = []
    with transaction.atomic():
        blocked = selectors.blocks_between(pairs={(r.user.pk, r.peer.pk) for r in requests if r.peer is not None})
        for r in requests:
            try:
                last = selectors.conversation_last_id(user=r.user, peer=r.peer, room_id=r.room_id)
            except ServiceError as e:  # unknown_room
                results.append(e)
                continue
            up_to = min(r.up_to, last)
            if up_to <= 0:
                results.append(False)
                continue
            mark, created = ReadMark.objects.get_or_create(
                user=r.user, peer=r.peer, room_id=r.room_id, defaults={"up_to": up_to}
            )
            moved = created or ReadMark.objects.filter(pk=mark.pk, up_to__lt=up_to).update(up_to=up_to) > 0
            if moved and r.peer is not None and frozenset((r.user.pk, r.peer.pk)) not in blocked:
                events.push_frames(r.peer.pk, [wire.receipt_read(up_to, by=r.user.username)])
            results.append(moved)
    return results
