"""Read marks: how far a user has read each conversation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from accounts.models import User as UserModel
from core.errors import ServiceError

from .. import events, wire
from ..models import ReadMark


@dataclass(frozen=True)
class ReadRequest:
    user: UserModel
    peer: UserModel | None  # None: the broadcasts
    up_to: int


def conversations_read(*, requests: Sequence[ReadRequest]) -> list[bool | ServiceError]:
    """Move read marks forward (never back); each result says whether the
    mark moved. The peer of a private conversation gets a read receipt."""
    results: list[bool | ServiceError] = []
    with transaction.atomic():
        for r in requests:
            mark, created = ReadMark.objects.get_or_create(user=r.user, peer=r.peer, defaults={"up_to": r.up_to})
            moved = created or ReadMark.objects.filter(pk=mark.pk, up_to__lt=r.up_to).update(up_to=r.up_to) > 0
            if moved and r.peer is not None:
                events.push_frames(r.peer.pk, [wire.receipt_read(r.up_to, by=r.user.username)])
            results.append(moved)
    return results
