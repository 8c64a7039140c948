"""A user's own account, as far as messaging is concerned: deleting it.

The export of a user's data is a read (selectors.user_data_*)."""

from __future__ import annotations

from django.db import transaction

from accounts.models import User as UserModel
from accounts.services import account_anonymise

from ..models import Attachment, Block, ClientRequest, Delivery, ReadMark, RoomMember
from .presence import presence_disconnect
from .rooms import room_leave


def account_delete(*, user: UserModel) -> None:
    """Delete an account the way its owner asks to (a soft delete).

    Removed: the login (no password, inactive, every session and resume
    token ended, the live socket closed), the email address, the user's
    blocks, their pending deliveries (messages waiting for them), read marks,
    remembered client ids and uploads never sent; they leave every room, as
    by `room_leave` (an admin is handed on, an emptied room goes). Kept:
    messages already exchanged, because
    they are the other side's copy of the conversation too; they now show
    as from or to deleted-<id>. The old name is held from new sign-ups for
    CHAT_DELETED_NAME_DAYS, so nobody takes it over to pose as this person.
    """
    presence_disconnect(user=user, reason="Your account was deleted.", action="stop")
    with transaction.atomic():
        for room_id in RoomMember.objects.filter(user=user).values_list("room_id", flat=True):
            room_leave(user=user, room_id=room_id)
        Block.objects.filter(blocker=user).delete()
        Delivery.objects.filter(recipient=user, acked_at__isnull=True).delete()
        ReadMark.objects.filter(user=user).delete()
        ClientRequest.objects.filter(sender=user).delete()
        Attachment.objects.filter(uploader=user, message__isnull=True).delete()
        account_anonymise(user=user)
