"""Editing and deleting one's own messages (protocol 1.1).

Recipients who are online are told at once; one for whom the message is
still pending gets it as it is when it is delivered (the edited body), or
not at all once it is deleted. A deleted message keeps its row, without
its body, so ids and deliveries stay as they were; no reply shows it again.
Nobody who no longer has the message, or who blocks its sender, is told.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import User as UserModel
from core.errors import ServiceError

from .. import events, wire
from ..models import Edit, Message
from ..selectors import blockers_of, live_presence, message_audience, room_online_member_ids
from .attachments import attachments_of_message_delete
from .messages import RateLimits, clean_body


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
    """Push `frame` to the online users who still have `message` and do not
    block its sender: an edit must not reach a screen the message was
    blocked from, nor show a message a block removed."""
    if message.kind == Message.Kind.PRIVATE:
        assert message.recipient_id is not None
        if message_audience(message=message, among={message.recipient_id}):
            events.push_frames(message.recipient_id, [frame])
        return
    if message.kind == Message.Kind.ROOM:
        assert message.room_id is not None
        # Of the members online (not those who left since), those who have it.
        members = room_online_member_ids(message.room_id)
        events.push_to_users([frame], user_ids=message_audience(message=message, among=members))
        return
    online = set(live_presence().values_list("user_id", flat=True))
    audience = message_audience(message=message, among=online)
    # Every blocker, not only those online now: one who connects meanwhile
    # is not in `online`, so not excluded by it.
    blockers = blockers_of(user_id=message.sender_id)
    events.push_to_everyone([frame], exclude_user_ids=(online - audience) | blockers | {message.sender_id})


def message_edit(*, user: UserModel, message_id: int, body: str) -> Message:
    """Change the body of a message `user` sent. An edit counts against the
    sender's rate limit like a message: each one is pushed to every
    recipient, so unlimited edits would be an unlimited flood."""
    body = clean_body(body)
    with transaction.atomic():
        message = _own_message(user=user, message_id=message_id)
        now = timezone.now()
        RateLimits({user.pk}, now).take(user.pk)
        message.body, message.edited_at = body, now
        message.save(update_fields=["body", "edited_at"])
        Edit.objects.create(sender=user, message=message, edited_at=now)
        _tell_recipients(message, wire.message_edited(message))
    return message


def message_delete(*, user: UserModel, message_id: int) -> None:
    """Delete a message `user` sent, for everyone."""
    with transaction.atomic():
        message = _own_message(user=user, message_id=message_id)
        message.body, message.deleted_at = "", timezone.now()
        message.save(update_fields=["body", "deleted_at"])
        # Its files go with it: nobody can see them any more.
        attachments_of_message_delete(message_ids=[message.pk])
        _tell_recipients(message, wire.message_deleted(message.pk))
