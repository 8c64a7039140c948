"""How messages look on the wire (protocol v1 "message object")."""


def timestamp(value):
    """ISO 8601 in UTC, e.g. 2026-11-25T15:04:05.123456+00:00; None stays None."""
    return value.isoformat(timespec="microseconds") if value is not None else None


def message_object(message):
    """A message as `history` and `conversations` return it.

    Needs `sender` and `recipient` loaded (select_related) to avoid a query each.
    """
    return {
        "id": message.id,
        "kind": message.kind,
        "from": message.sender.username,
        "to": message.recipient.username if message.recipient_id else None,
        "body": message.body,
        "sent_at": timestamp(message.sent_at),
    }
