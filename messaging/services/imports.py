"""Bringing over messages accepted by the old server."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import transaction

from accounts.models import User as UserModel

from ..models import Delivery, Message


def message_import(
    *,
    sender: UserModel,
    recipients: Sequence[UserModel],
    body: str,
    sent_at: datetime,
    kind: str = Message.Kind.PRIVATE,
) -> tuple[Message, bool, int]:
    """Bring over a message accepted elsewhere, pending for `recipients`.

    Idempotent: the same (kind, sender, body, sent_at) is one message, and a
    recipient gets one delivery of it. Returns (message, created, new deliveries).
    Nothing is pushed: imports run while the chat is being set up.
    """
    recipient = recipients[0] if kind == Message.Kind.PRIVATE else None
    with transaction.atomic():
        fields = {"kind": kind, "sender": sender, "recipient": recipient, "body": body, "sent_at": sent_at}
        message = Message.objects.filter(**fields).order_by("id").first()
        created = message is None
        if message is None:
            message = Message.objects.create(**fields)
        have = set(Delivery.objects.filter(message=message).values_list("recipient_id", flat=True))
        new = [Delivery(message=message, recipient=r) for r in recipients if r.pk not in have]
        Delivery.objects.bulk_create(new)
    return message, created, len(new)
