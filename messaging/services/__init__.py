"""Messaging writes, by subject. Every function commits first and pushes
after (``events`` defers pushes to ``on_commit``); errors are ServiceError
with a protocol error code. Callers import from here."""

from .accounts import account_delete
from .attachments import (
    attachment_check,
    attachment_delete,
    attachment_store,
    attachment_upload,
    attachments_of_message_delete,
    attachments_unsent_prune,
)
from .batch import BatchRequest, requests_apply
from .blocks import block_create, block_delete
from .deliveries import AckRequest, deliveries_ack, delivery_ack, delivery_flush_page, delivery_redeliver
from .edits import message_delete, message_edit
from .maintenance import records_prune
from .messages import (
    Broadcasted,
    BroadcastRequest,
    RoomSendRequest,
    SendRequest,
    Sent,
    message_broadcast,
    message_room_send,
    message_send,
    messages_broadcast,
    messages_room_send,
    messages_send,
)
from .presence import (
    HOST,
    PID,
    presence_claim,
    presence_clear_dead_processes,
    presence_disconnect,
    presence_expire,
    presence_login,
    presence_release,
    presence_release_process,
    presence_sessions_check,
    presence_tick,
    user_deactivate,
)
from .reactions import message_react
from .reads import ReadRequest, conversations_read
from .rooms import (
    MembersAdded,
    RoomCreated,
    room_admin_set,
    room_create,
    room_delete,
    room_leave,
    room_member_expel,
    room_member_remove,
    room_members_add,
    room_rename,
    rooms_seed,
)

__all__ = [
    "HOST",
    "PID",
    "AckRequest",
    "BatchRequest",
    "BroadcastRequest",
    "Broadcasted",
    "MembersAdded",
    "ReadRequest",
    "RoomCreated",
    "RoomSendRequest",
    "SendRequest",
    "Sent",
    "account_delete",
    "attachment_check",
    "attachment_delete",
    "attachment_store",
    "attachment_upload",
    "attachments_of_message_delete",
    "attachments_unsent_prune",
    "block_create",
    "block_delete",
    "conversations_read",
    "deliveries_ack",
    "delivery_ack",
    "delivery_flush_page",
    "delivery_redeliver",
    "message_broadcast",
    "message_delete",
    "message_edit",
    "message_react",
    "message_room_send",
    "message_send",
    "messages_broadcast",
    "messages_room_send",
    "messages_send",
    "presence_claim",
    "presence_clear_dead_processes",
    "presence_disconnect",
    "presence_expire",
    "presence_login",
    "presence_release",
    "presence_release_process",
    "presence_sessions_check",
    "presence_tick",
    "records_prune",
    "requests_apply",
    "room_admin_set",
    "room_create",
    "room_delete",
    "room_leave",
    "room_member_expel",
    "room_member_remove",
    "room_members_add",
    "room_rename",
    "rooms_seed",
    "user_deactivate",
]
