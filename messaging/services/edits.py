"""Editing and deleting one's own messages (protocol 1.1).

Recipients who are online are told at once; one for whom the message is
still pending gets it as it is when it is delivered (the edited body), or
not at all once it is deleted. A deleted message keeps its row, without
its body, so ids and deliveries stay as they were; no reply shows it again.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import User as UserModel
from core.errors import ServiceError

from .. import events, wire
from ..models import Delivery, Message
from ..selectors import live_presence, message_viewers_online
from .messages import clean_body


def _own_message(*, user: UserModel, message_id: int) -> Message:
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("sender", "recipient")
        .filter(pk=message_id, sender=user, deleted_at__isnull=True)
        .first()
    )
    if message is None:
        raise ServiceError("unknown_message", "You have no message with that id.")
    return message


def _tell_recipients(message: Message, frame: dict[str, Any]) -> None:
    """Push `frame` to the online users who received `message`."""
    if message.kind == Message.Kind.PRIVATE:
        assert message.recipient_id is not None
        events.push_frames(message.recipient_id, [frame])
        return
    if message.kind == Message.Kind.ROOM:
        # Members online who still have it (not those who left since).
        events.push_to_users([frame], user_ids=message_viewers_online(message) - {message.sender_id})
        return
    online = set(live_presence().values_list("user_id", flat=True))
    received = set(
        Delivery.objects.filter(message=message, recipient__in=online).values_list("recipient_id", flat=True)
    )
    events.push_to_everyone([frame], exclude_user_ids=(online - received) | {message.sender_id})


def message_edit(*, user: UserModel, message_id: int, body: str) -> Message:
    """Change the body of a message `user` sent."""
    body = clean_body(body)
    with transaction.atomic():
        message = _own_message(user=user, message_id=message_id)
        message.body, message.edited_at = body, timezone.now()
        message.save(update_fields=["body", "edited_at"])
        _tell_recipients(message, wire.message_edited(message))
    return message


def message_delete(*, user: UserModel, message_id: int) -> None:
    """Delete a message `user` sent, for everyone."""
    with transaction.atomic():
        message = _own_message(user=user, message_id=message_id)
        message.body, message.deleted_at = "", timezone.now()
        message.save(update_fields=["body", "deleted_at"])
        _tell_recipients(message, wire.message_deleted(message.pk))
