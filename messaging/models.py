from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.selectors import TOKEN_MAX

# SQLite's full-text index of message bodies (FTS5, kept in step by
# triggers; migration 0003). PostgreSQL uses a GIN index on the table itself.
FTS_TABLE = "messaging_message_fts"


class Room(models.Model):
    """A group conversation of named members (protocol 1.2). It exists while
    it has members: the last one leaving deletes it, with its messages."""

    name = models.CharField(max_length=100)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"room #{self.pk} {self.name}"


class RoomMember(models.Model):
    """`user` is in `room`; `joined_at` picks the next admin when the last leaves."""

    # Indexed by the unique (room, user) and by (user, room) below.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="members", db_index=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_memberships", db_index=False
    )
    admin = models.BooleanField(default=False)
    joined_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="messaging_roommember_unique"),
        ]
        indexes = [
            # The rooms of a user (`rooms`, every visibility check).
            models.Index(fields=["user", "room"], name="messaging_roommember_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in room #{self.room_id}"


class Message(models.Model):
    """What a user said, once. Who it reaches is in Delivery."""

    class Kind(models.TextChoices):
        PRIVATE = "private"
        BROADCAST = "broadcast"
        ROOM = "room"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sent_messages")
    # Null for a broadcast and a room message.
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # Set for a room message only. The two are indexed only where set (Meta):
    # most messages have neither, and every insert would pay for them.
    room = models.ForeignKey(
        Room, on_delete=models.CASCADE, null=True, blank=True, related_name="messages", db_index=False
    )
    # A message of the same conversation this one answers; a deleted one
    # keeps its row, so this only goes null if the row itself goes.
    reply_to = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    body = models.TextField()
    sent_at = models.DateTimeField(db_index=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    # A deleted message keeps its row (ids stay unique and deliveries keep
    # their order) but loses its body, and no reply shows it again.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["sender", "sent_at"], name="messaging_msg_sender_time"),
            models.Index(fields=["sender", "recipient", "id"], name="messaging_msg_pair"),
            # A room's history, newest first; a sender's latest per room.
            models.Index(fields=["room", "id"], name="messaging_msg_room", condition=Q(room__isnull=False)),
            models.Index(
                fields=["sender", "room", "id"], name="messaging_msg_sender_room", condition=Q(room__isnull=False)
            ),
            # The broadcasts after a user's cursor (BroadcastCursor), and the latest one.
            models.Index(fields=["id"], name="messaging_msg_broadcast", condition=Q(kind="broadcast")),
            # What answers a message, when it goes (SET_NULL).
            models.Index(fields=["reply_to"], name="messaging_msg_reply_to", condition=Q(reply_to__isnull=False)),
            # The admin's filters, newest first, at ten million messages:
            # room messages (broadcasts: messaging_msg_broadcast above), and
            # deleted messages.
            models.Index(fields=["id"], name="messaging_msg_in_rooms", condition=Q(kind="room")),
            # With the room: a room's live messages are all its messages
            # less these, each counted from an index alone (the admin).
            models.Index(fields=["id", "room"], name="messaging_msg_deleted", condition=Q(deleted_at__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="private", recipient__isnull=False, room__isnull=True)
                | Q(kind="broadcast", recipient__isnull=True, room__isnull=True)
                | Q(kind="room", recipient__isnull=True, room__isnull=False),
                name="messaging_msg_kind_recipient",
            ),
        ]

    def __str__(self) -> str:
        to = self.recipient or (f"room #{self.room_id}" if self.room_id else "everyone")
        return f"#{self.pk} {self.sender} → {to}"


class Reaction(models.Model):
    """`user` reacted to `message` with `emoji`; the first row of an emoji
    (lowest id) sets its place among the message's reactions. A reaction
    taken back is kept, inactive, so the emoji keeps that place (the
    contract orders emojis by their first reaction)."""

    # Indexed by the unique (message, user, emoji).
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["message", "user", "emoji"], name="messaging_reaction_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.emoji} #{self.message_id}"


class Delivery(models.Model):
    """A message in one recipient's mailbox; pending until the client acks it.

    Blocking drops pending rows, so a row is also what lets the recipient see
    the message in history. A broadcast's rows of offline users are written
    only when they log in (BroadcastCursor).
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="deliveries")
    # Last time it was pushed to a live connection (null: never, it waited).
    pushed_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["recipient", "message"], name="messaging_delivery_unique"),
        ]
        indexes = [
            models.Index(
                fields=["recipient", "message"],
                condition=Q(acked_at__isnull=True),
                name="messaging_delivery_pending",
            ),
            models.Index(fields=["message"], name="messaging_delivery_message"),
        ]

    def __str__(self) -> str:
        state = "acked" if self.acked_at else "pending"
        return f"#{self.message_id} to {self.recipient}: {state}"


class BroadcastCursor(models.Model):
    """How far the broadcasts are in `user`'s mailbox.

    A broadcast writes a Delivery row only for the users with a presence
    row (online, or not yet expired); a user offline gets theirs at their
    next login, when every broadcast after `up_to` is written into their
    mailbox at once (services.deliveries). So a broadcast costs the writer
    what its online audience costs, not a row per registered user (Zulip's
    soft deactivation; Matrix's per-user cursors over one stored event).

    Every broadcast with an id up to `up_to` that the user should have is in
    their mailbox, or was there and dropped (acked, blocked). A user without
    a row has had none yet: their broadcasts start at their `date_joined`.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+")
    up_to = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user} has the broadcasts up to #{self.up_to}"


class Block(models.Model):
    """`blocker` receives nothing more from `blocked`."""

    blocker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocks")
    blocked = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocked_by")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="messaging_block_unique"),
            models.CheckConstraint(condition=~Q(blocker=models.F("blocked")), name="messaging_block_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.blocker} blocks {self.blocked}"


class Presence(models.Model):
    """The one live connection of an online user, shared by every process.

    The primary key on the user is what makes "one connection per user" hold
    across processes: of two concurrent inserts, exactly one succeeds.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    channel_name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    connected_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(db_index=True)
    # The Django session the connection logged in with (its cookie's, or the
    # one behind its resume token): a logout ends the session, a password
    # change invalidates it (the session's auth hash, checked by
    # accounts.selectors), and either ends the connection.
    session_key = models.CharField(max_length=TOKEN_MAX, blank=True, db_index=True)

    class Meta:
        verbose_name_plural = "presence"

    def __str__(self) -> str:
        return f"{self.user} on {self.host}:{self.pid}"


class ReadMark(models.Model):
    """How far `user` has read one conversation: with `peer`, in `room`, or
    (both null) the broadcasts."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="read_marks")
    peer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, null=True, related_name="+")
    up_to = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "peer"], condition=Q(peer__isnull=False), name="messaging_readmark_peer"
            ),
            models.UniqueConstraint(
                fields=["user"], condition=Q(peer__isnull=True, room__isnull=True), name="messaging_readmark_broadcast"
            ),
            models.UniqueConstraint(
                fields=["user", "room"], condition=Q(room__isnull=False), name="messaging_readmark_room"
            ),
        ]

    def __str__(self) -> str:
        where = self.peer or (f"room #{self.room_id}" if self.room_id else "broadcasts")
        return f"{self.user} read {where} up to #{self.up_to}"


class ClientRequest(models.Model):
    """A `send` or `broadcast` that carried a `client_id`, with its answer.

    A resend of the same id by the same sender within a day gets this answer
    again and stores nothing (protocol 1.1, sending exactly once).
    """

    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    client_id = models.CharField(max_length=64)
    # Null only inside the transaction that claims the id and stores the
    # message: a concurrent resend waits on the unique index, then finds both.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, null=True, related_name="+")
    reply = models.JSONField(null=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sender", "client_id"], name="messaging_clientrequest_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.sender} {self.client_id!r} → #{self.message_id}"


class Edit(models.Model):
    """One edit of a message, kept only while it counts against its
    sender's rate limit: an edit is pushed to every recipient like a new
    message, so it costs like one (records_prune forgets old ones)."""

    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    edited_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["sender", "edited_at"], name="messaging_edit_sender_time")]

    def __str__(self) -> str:
        return f"{self.sender} edited #{self.message_id} at {self.edited_at}"


class Attachment(models.Model):
    """A file a user uploaded over HTTP, then sent with one message.

    `message` is null until the upload is sent; unsent uploads are removed
    after a day (`chat_cleanup`). Who may download it is whoever may see
    its message in history, or the uploader while it is unsent. `stored`
    and `thumbnail` are names in the attachments storage, random so that
    nothing a user chose reaches a path.
    """

    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, null=True, blank=True, related_name="attachments")
    name = models.CharField(max_length=255)
    size = models.BigIntegerField()
    content_type = models.CharField(max_length=100)
    stored = models.CharField(max_length=200)
    # Images only: re-encoded without metadata, with a thumbnail.
    width = models.IntegerField(null=True, blank=True)
    height = models.IntegerField(null=True, blank=True)
    thumbnail = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(db_index=True)
    # Its place in the message's list, as the sender gave it (uploads of one
    # message may finish in any order).
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["uploader", "created_at"], name="messaging_attach_uploader"),
            models.Index(fields=["created_at"], condition=Q(message__isnull=True), name="messaging_attach_unsent"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.size} bytes) by {self.uploader}"

    @property
    def is_image(self) -> bool:
        return self.width is not None
