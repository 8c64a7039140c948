"""Group commit: many requests, one transaction.

The per-process writer (``messaging.writer``) hands over whatever arrived
while the previous batch was being committed. Requests of a kind go through
that kind's batch service together, so a batch costs a few queries per kind
rather than a few per request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction

from .deliveries import AckRequest, deliveries_ack
from .messages import (
    BroadcastRequest,
    RoomSendRequest,
    SendRequest,
    messages_broadcast,
    messages_room_send,
    messages_send,
)
from .presence import ClaimRequest, presence_logins
from .reads import ReadRequest, conversations_read

BatchRequest = SendRequest | BroadcastRequest | RoomSendRequest | AckRequest | ReadRequest | ClaimRequest

_SERVICES: dict[type, Callable[..., Sequence[Any]]] = {
    SendRequest: messages_send,
    BroadcastRequest: messages_broadcast,
    RoomSendRequest: messages_room_send,
    AckRequest: deliveries_ack,
    ReadRequest: conversations_read,
    # Last: on PostgreSQL a broadcast of the batch has taken the fence
    # exclusively already, and a claim's shared hold of it is then its own
    # (a claim first would hold it shared, then wait for another process's
    # shared holders to upgrade: a deadlock between two batches).
    ClaimRequest: presence_logins,
}


def requests_apply(*, requests: Sequence[BatchRequest]) -> list[Any]:
    """Apply the requests in one transaction; return each one's result (or
    its ServiceError), in order. An exception means nothing was applied."""
    by_kind: dict[type, list[int]] = defaultdict(list)
    for i, request in enumerate(requests):
        by_kind[type(request)].append(i)
    results: list[Any] = [None] * len(requests)
    with transaction.atomic():
        for kind, service in _SERVICES.items():
            indexes = by_kind.get(kind)
            if indexes:
                for i, result in zip(indexes, service(requests=[requests[i] for i in indexes]), strict=True):
                    results[i] = result
    return results
