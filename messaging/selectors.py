"""Messaging reads: who is online, who was around, blocks, history, conversations.

A user only ever sees messages sent by them or delivered to them (a
Delivery row): blocking drops pending rows, and with them the message.
Deleted messages are never shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connection
from django.db.models import (
    BigIntegerField,
    BooleanField,
    Count,
    Exists,
    F,
    Func,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User as UserModel
from accounts.paging import estimated_rows
from core.errors import ServiceError

from .models import (
    FTS_TABLE,
    Attachment,
    Block,
    BroadcastCursor,
    Delivery,
    Message,
    Presence,
    Reaction,
    ReadMark,
    Room,
    RoomMember,
)
from .wire import (
    Extras,
    MessageObject,
    Reactions,
    ReplyTo,
    RoomMemberObject,
    RoomObject,
    attachment_object,
    message_object,
    reply_object,
    timestamp,
)

User = get_user_model()


# --- Users and presence -------------------------------------------------------------


def online_cutoff(now: datetime | None = None) -> datetime:
    """Presence rows with an older heartbeat belong to dead processes."""
    return (now or timezone.now()) - timedelta(seconds=settings.CHAT_PRESENCE_TIMEOUT_SECONDS)


def live_presence(now: datetime | None = None) -> QuerySet[Presence]:
    return Presence.objects.filter(heartbeat_at__gte=online_cutoff(now))


def user_by_name(username: str) -> UserModel:
    """The active user called `username`, or ServiceError unknown_user."""
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise ServiceError("unknown_user", f"There is no user {username!r}.")
    return user


def online_usernames() -> list[str]:
    return sorted(live_presence().values_list("user__username", flat=True))


def recent_users() -> list[dict[str, Any]]:
    """Everyone online now or seen in the last hour, sorted by name."""
    now = timezone.now()
    online = set(live_presence(now).values_list("user_id", flat=True))
    since = now - timedelta(seconds=settings.CHAT_RECENT_SECONDS)
    users = User.objects.filter(Q(pk__in=online) | Q(last_seen__gte=since)).only("username", "last_login", "last_seen")
    return [
        {
            "username": u.username,
            "online": u.pk in online,
            "last_login": timestamp(u.last_login),
            "last_seen": timestamp(now if u.pk in online else u.last_seen),
        }
        for u in sorted(users, key=lambda u: u.username)
    ]


def blocked_usernames(*, user: UserModel) -> list[str]:
    return sorted(Block.objects.filter(blocker=user).values_list("blocked__username", flat=True))


def pending_total() -> int:
    """Deliveries not acked yet, everyone's (through the pending index)."""
    return Delivery.objects.filter(acked_at__isnull=True).count()


def pending_count(*, user: UserModel, online: bool = False) -> int:
    """What waits for `user`: their pending rows and, while they are
    offline, the broadcasts their next login will add (BroadcastCursor).
    `online`: the caller knows they hold presence (the login that just
    claimed it), so that is not looked up."""
    rows = pending_rows(user_ids=[user.pk]).get(user.pk, 0)
    if online or Presence.objects.filter(user=user).exists():
        return rows
    waiting = broadcasts_waiting(user=user, after=broadcast_cursor(user_id=user.pk))
    return rows + waiting.filter(deleted_at__isnull=True).count()


def pending_rows(*, user_ids: Sequence[int]) -> dict[int, int]:
    """How many of their rows wait for each of these users (those with none
    are left out): pending_count's rows, for a batch of logins in one
    query."""
    waiting = (
        Delivery.objects.filter(recipient_id__in=user_ids, acked_at__isnull=True, message__deleted_at__isnull=True)
        .values("recipient_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {row["recipient_id"]: row["n"] for row in waiting}


def latest_broadcast_id() -> int:
    """The id of the latest broadcast (0: none yet), through its index."""
    latest = Message.objects.filter(kind=Message.Kind.BROADCAST).order_by("-id").values_list("id", flat=True).first()
    return latest or 0


def broadcast_cursor(*, user_id: int) -> int:
    """How far the broadcasts are in the user's mailbox (0: none yet)."""
    return broadcast_cursors(user_ids=[user_id]).get(user_id, 0)


def broadcast_cursors(*, user_ids: Sequence[int]) -> dict[int, int]:
    """broadcast_cursor of each of these users who has one."""
    return dict(BroadcastCursor.objects.filter(user_id__in=user_ids).values_list("user_id", "up_to"))


def broadcasts_waiting(*, user: UserModel, after: int) -> QuerySet[Message]:
    """The broadcasts after id `after` that belong in `user`'s mailbox but
    have no row there yet: sent since they joined, not by them, and not by
    someone they block (a block drops what is pending: the same rule as
    block_create's, for what has no row yet)."""
    return (
        Message.objects.filter(kind=Message.Kind.BROADCAST, pk__gt=after, sent_at__gte=user.date_joined)
        .exclude(sender_id=user.pk)
        .exclude(sender_id__in=Block.objects.filter(blocker_id=user.pk).values("blocked_id"))
        .order_by()
    )


def pending_recipients(*, message_ids: list[int]) -> dict[int, int]:
    """How many recipients each of these messages still waits for (those
    waiting for none are left out): for a page of the admin's list."""
    waiting = (
        Delivery.objects.filter(message_id__in=message_ids, acked_at__isnull=True)
        .values("message_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {row["message_id"]: row["n"] for row in waiting}


def room_message_counts(*, room_ids: list[int]) -> dict[int, int]:
    """How many messages each of these rooms holds, deleted ones left out
    (rooms with none are left out): all of a room's, less its deleted, each
    counted from an index alone (messaging_msg_room and messaging_msg_deleted
    hold the room), never from the rows."""
    total = Message.objects.filter(room_id__in=room_ids)
    # The room as an expression, so that the deleted ones are read from
    # their own index (a scan of the few deleted), not found by reading
    # every message of each room (SQLite's choice otherwise: seconds).
    deleted = Message.objects.alias(in_room=F("room_id") + 0).filter(deleted_at__isnull=False, in_room__in=room_ids)
    counts = {r["room_id"]: r["n"] for r in total.values("room_id").annotate(n=Count("pk")).order_by()}
    for row in deleted.values("room_id").annotate(n=Count("pk")).order_by():
        counts[row["room_id"]] -= row["n"]
    return counts


# --- Conversations ------------------------------------------------------------------


def _room_ids_of(user: UserModel | int) -> QuerySet[RoomMember, Any]:
    return RoomMember.objects.filter(user=user).values("room_id")


def _received_by(user: UserModel, *, offline: bool = False) -> Q:
    """Delivered to `user`: a Delivery row. With `offline` (HTTP views,
    where the user may have no socket), the broadcasts waiting for their
    next login count too."""
    received = Q(Exists(Delivery.objects.filter(message=OuterRef("pk"), recipient=user)))
    if offline and not Presence.objects.filter(user=user).exists():
        waiting = broadcasts_waiting(user=user, after=broadcast_cursor(user_id=user.pk))
        received |= Q(pk__in=waiting.values("pk"))
    return received


def _visible_to(user: UserModel, *, offline: bool = False) -> Q:
    """What `user` sees in history: sent by them or delivered to them, and
    of a room only while they are a member."""
    return (Q(sender=user) | _received_by(user, offline=offline)) & (
        Q(room__isnull=True) | Q(room__in=_room_ids_of(user))
    )


def room_of(*, user: UserModel, room_id: int) -> Room:
    """The room `room_id` if `user` is a member, else ServiceError unknown_room:
    nobody learns of a room they are not in."""
    room = Room.objects.filter(pk=room_id, members__user=user).first()
    if room is None:
        raise ServiceError("unknown_room", "You are in no room with that id.")
    return room


def visible_message(*, user: UserModel, message_id: int) -> Message:
    """A message `user` could see in history, or ServiceError unknown_message."""
    message = (
        Message.objects.filter(_visible_to(user), pk=message_id, deleted_at__isnull=True)
        .select_related("sender", "recipient")
        .first()
    )
    if message is None:
        raise ServiceError("unknown_message", "There is no message with that id that you can see.")
    return message


def visible_replies(*, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], Message]:
    """Of the (user id, message id) pairs, those where the user could see the
    message in history, with the message (for replies: a few queries for a
    whole batch of sends)."""
    if not wanted:
        return {}
    user_ids, message_ids = {u for u, _ in wanted}, {m for _, m in wanted}
    messages = Message.objects.filter(pk__in=message_ids, deleted_at__isnull=True).select_related("sender").in_bulk()
    received = set(
        Delivery.objects.filter(message__in=message_ids, recipient__in=user_ids).values_list(
            "recipient_id", "message_id"
        )
    )
    rooms = {m.room_id for m in messages.values() if m.room_id is not None}
    members = set(RoomMember.objects.filter(room__in=rooms, user__in=user_ids).values_list("user_id", "room_id"))
    found = {}
    for user_id, message_id in wanted:
        m = messages.get(message_id)
        if m is None or (m.room_id is not None and (user_id, m.room_id) not in members):
            continue
        if m.sender_id == user_id or (user_id, message_id) in received:
            found[(user_id, message_id)] = m
    return found


def message_extras(*, messages: list[tuple[int, int | None]]) -> Extras:
    """The replied-to messages and the reactions of a page of (id,
    reply_to id) pairs, in two queries whatever its size (none for an
    empty page: most logins find nothing waiting)."""
    if not messages:
        return Extras({}, {})
    reply_ids = {r for _, r in messages if r is not None}
    replies: dict[int, ReplyTo] = {}
    for id_, sender, body in Message.objects.filter(pk__in=reply_ids).values_list("id", "sender__username", "body"):
        replies[id_] = reply_object(id_, sender=sender, body=body)
    reactions: dict[int, Reactions] = {}
    # Taken-back rows too: an emoji keeps the place of its first reaction.
    rows = Reaction.objects.filter(message__in=[m for m, _ in messages]).order_by("id")
    for message_id, emoji, name, active in rows.values_list("message_id", "emoji", "user__username", "active"):
        names = reactions.setdefault(message_id, {}).setdefault(emoji, [])
        if active:
            names.append(name)
    for message_id, by_emoji in reactions.items():
        reactions[message_id] = {emoji: sorted(names) for emoji, names in by_emoji.items() if names}
    return Extras(replies, reactions)


def message_objects(messages: list[Message], *, viewer_id: int | None = None) -> list[MessageObject]:
    """Message objects of a page, its replies, reactions and attachments
    loaded at once."""
    extras = message_extras(messages=[(m.id, m.reply_to_id) for m in messages])
    return attachments_fill([message_object(m, viewer_id=viewer_id, extras=extras) for m in messages])


def conversation_messages(*, user: UserModel, peer: UserModel | None, room_id: int | None = None) -> QuerySet[Message]:
    """The messages of one conversation that `user` may see (peer None:
    broadcasts; a room id: that room, unknown_room unless a member)."""
    if room_id is not None:
        room_of(user=user, room_id=room_id)
        messages = Message.objects.filter(
            Q(sender=user) | Q(Exists(Delivery.objects.filter(message=OuterRef("pk"), recipient=user))),
            room_id=room_id,
        )
    elif peer is None:
        messages = Message.objects.filter(_visible_to(user), kind=Message.Kind.BROADCAST)
    else:
        messages = Message.objects.filter(
            Q(sender=user, recipient=peer)
            | Q(sender=peer, recipient=user) & Exists(Delivery.objects.filter(message=OuterRef("pk"), recipient=user)),
            kind=Message.Kind.PRIVATE,
        )
    return messages.filter(deleted_at__isnull=True)


def conversation_last_id(*, user: UserModel, peer: UserModel | None, room_id: int | None = None) -> int:
    """The id of the newest message of the conversation that `user` may
    see (0: there is none). A read mark goes no further: it marks what
    exists, and a receipt never claims more."""
    messages = conversation_messages(user=user, peer=peer, room_id=room_id)
    last = messages.order_by("-id").values_list("id", flat=True).first()
    return last or 0


def blocks_between(*, pairs: set[tuple[int, int]]) -> set[frozenset[int]]:
    """Those of the pairs of users where either one blocks the other."""
    ids = {i for pair in pairs for i in pair}
    if not ids:
        return set()
    rows = Block.objects.filter(blocker__in=ids, blocked__in=ids).values_list("blocker_id", "blocked_id")
    wanted = {frozenset(pair) for pair in pairs}
    return {frozenset(row) for row in rows} & wanted


def message_audience(*, message: Message, among: set[int] | None = None) -> set[int]:
    """Who may be told that `message` changed (among `among`, if given):
    its recipients who still have it, a Delivery row (a block drops the
    pending ones), and do not block its sender (a block also hides what
    they had already read)."""
    rows = Delivery.objects.filter(message=message).filter(
        ~Exists(Block.objects.filter(blocker=OuterRef("recipient"), blocked=message.sender_id))
    )
    if among is not None:
        rows = rows.filter(recipient__in=among)
    return set(rows.values_list("recipient_id", flat=True))


def blockers_of(*, user_id: int) -> set[int]:
    """Whoever blocks the user."""
    return set(Block.objects.filter(blocked=user_id).values_list("blocker_id", flat=True))


def with_receipts(messages: QuerySet[Message], *, user: UserModel) -> QuerySet[Message]:
    """Annotate whether each private message `user` sent was delivered (its
    recipient acked it) and how far its recipient has read their
    conversation with `user` (wire.message_object turns these into
    `delivered` and `read`). Like the live receipt, the mark is not shown
    across a block, either way."""
    acked = Delivery.objects.filter(message=OuterRef("pk"), recipient=OuterRef("recipient"), acked_at__isnull=False)
    either_blocks = Block.objects.filter(
        Q(blocker=OuterRef("user"), blocked=OuterRef("peer")) | Q(blocker=OuterRef("peer"), blocked=OuterRef("user"))
    )
    mark = ReadMark.objects.filter(~Exists(either_blocks), user=OuterRef("recipient"), peer=user).values("up_to")[:1]
    return messages.annotate(receipt_delivered=Exists(acked), receipt_read_up_to=Coalesce(Subquery(mark), Value(0)))


def message_history(
    *, user: UserModel, peer: UserModel | None, room_id: int | None = None, before: int | None = None, limit: int = 50
) -> list[MessageObject]:
    """Up to `limit` messages before id `before`, oldest first."""
    messages = conversation_messages(user=user, peer=peer, room_id=room_id)
    if before is not None:
        messages = messages.filter(id__lt=before)
    page = list(with_receipts(messages, user=user).select_related("sender", "recipient").order_by("-id")[:limit])
    return message_objects(page[::-1], viewer_id=user.pk)


# "Every conversation" for `message_search`, as opposed to None, the broadcasts.
EVERY_CONVERSATION = object()
_WORD = re.compile(r"\w+")
# Neither index has a token for a symbol (an emoji, "¯\\_(ツ)_/¯"): a query of
# symbols alone is looked for in this many of the user's newest messages
# (received, and as many sent), a bounded scan however big the table.
SYMBOL_SCAN = 5000


def message_search(
    *,
    user: UserModel,
    query: str,
    peer: Any = EVERY_CONVERSATION,
    room_id: int | None = None,
    before: int | None = None,
    limit: int = 20,
) -> list[MessageObject]:
    """Messages `user` could see in history whose body has every word of
    `query` (the last one also as a prefix), newest first, found through the
    database's full-text index (SQLite FTS5, PostgreSQL GIN). A room id
    searches that room; no peer and no room, every conversation and room."""
    if room_id is not None:
        room_of(user=user, room_id=room_id)
        peer = None
    words = _WORD.findall(query.lower())
    if not words:
        return _symbol_search(user=user, symbols=query.split(), peer=peer, room_id=room_id, before=before, limit=limit)
    if room_id is None and peer is EVERY_CONVERSATION and connection.vendor == "postgresql":
        messages = Message.objects.filter(
            id__in=_postgres_search_ids(user=user, words=words, before=before, limit=limit)
        )
    else:
        if peer is EVERY_CONVERSATION:
            messages = Message.objects.filter(_visible_to(user), deleted_at__isnull=True)
        else:
            messages = conversation_messages(user=user, peer=peer, room_id=room_id)
        messages = _matching(messages, words)
        if before is not None:
            messages = messages.filter(id__lt=before)
    page = with_receipts(messages, user=user).select_related("sender", "recipient").order_by("-id")[:limit]
    return message_objects(list(page), viewer_id=user.pk)


def _symbol_search(
    *, user: UserModel, symbols: list[str], peer: Any, room_id: int | None, before: int | None, limit: int
) -> list[MessageObject]:
    """Messages among the user's SYMBOL_SCAN newest (before `before`) whose
    body holds every one of `symbols`, newest first."""
    if not symbols:
        return []
    below = Q() if before is None else Q(id__lt=before)
    if peer is EVERY_CONVERSATION and room_id is None:
        received = Delivery.objects.filter(recipient=user).order_by("-message_id").values("message_id")
        if before is not None:
            received = received.filter(message_id__lt=before)
        sent = Message.objects.filter(below, sender=user).order_by("-id").values("id")
        # Within those, what the user may see (a room's, only as a member).
        scope = (Q(id__in=received[:SYMBOL_SCAN]) | Q(id__in=sent[:SYMBOL_SCAN])) & _visible_to(user)
    else:
        recent = conversation_messages(user=user, peer=peer, room_id=room_id).filter(below)
        scope = Q(id__in=recent.order_by("-id").values("id")[:SYMBOL_SCAN])
    messages = Message.objects.filter(scope, deleted_at__isnull=True)
    for symbol in symbols:
        messages = messages.filter(body__contains=symbol)
    page = with_receipts(messages, user=user).select_related("sender", "recipient").order_by("-id")[:limit]
    return message_objects(list(page), viewer_id=user.pk)


class _AnyOf(Func):
    """PostgreSQL's `column = ANY(array)`: one parameter for ten thousand
    values, where `IN` spells out ten thousand."""

    arity = 2
    arg_joiner = " = ANY("
    template = "%(expressions)s)"
    output_field = BooleanField()


# A search whose words PostgreSQL's planner expects in at most this many
# messages reads them from the GIN index first (messages_with_words).
FEW_MATCHES = 20_000


def messages_with_words(messages: QuerySet[Message], text: str, *, newest: int) -> QuerySet[Message]:
    """Those of `messages` whose body has every word of `text` (the last
    also as a prefix), through the full-text index as `message_search`,
    for a list (the admin's) that shows the `newest` of them at most;
    none when `text` has no word to look for (symbols alone).

    SQLite: FTS5 lists a word's messages newest first and stops at
    `newest`; the whole list of a word in two million messages takes ten
    seconds. With other conditions on `messages` (from:, a filter) it
    cannot tell how far to read, and reads the whole list.

    PostgreSQL: newest first, the planner walks the messages backwards
    testing each body (a tsvector computed per row) until it has a page:
    quick for a common word, seconds for one in 0.1% of ten million. When
    it expects at most FEW_MATCHES, the `newest` of them come from the GIN
    index first (a tenth of a second for ten thousand; newest first from at
    most FEW_MATCHES, the planner does not walk), and the list is those.
    """
    words = _WORD.findall(text.lower())
    if not words:
        return messages.none()
    if connection.vendor == "sqlite" and not messages.query.where:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s ORDER BY rowid DESC LIMIT %s",
                [_fts5(words), newest],
            )
            return messages.filter(pk__in=[row[0] for row in cursor.fetchall()])
    matching = _matching(messages, words)
    expected = estimated_rows(matching.order_by().values("pk"))
    if expected is not None and expected <= FEW_MATCHES:
        # Fetched, then given as one array: as a subquery the planner still
        # merged it with a backward walk of the whole table.
        ids = list(matching.order_by("-pk").values_list("pk", flat=True)[:newest])
        return messages.filter(_AnyOf(F("pk"), Value(ids, output_field=ArrayField(BigIntegerField()))))
    return matching


def _matching(messages: QuerySet[Message], words: list[str]) -> QuerySet[Message]:
    if connection.vendor == "postgresql":
        # The same expression as the GIN index (migration 0003), or the
        # planner cannot use it.
        terms = " & ".join([*words[:-1], words[-1] + ":*"])
        return messages.alias(search_body=SearchVector("body", config="simple")).filter(
            search_body=SearchQuery(terms, config="simple", search_type="raw")
        )
    return messages.filter(id__in=RawSQL(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s", [_fts5(words)]))


def _fts5(words: list[str]) -> str:
    """An FTS5 query for every word, the last also as a prefix."""
    return " ".join(f'"{w}"' for w in words[:-1]) + f' "{words[-1]}"*'


def _postgres_search_ids(*, user: UserModel, words: list[str], before: int | None, limit: int) -> list[int]:
    """The newest `limit` ids of matching messages `user` may see, on PostgreSQL.

    Written as a join on the user's own ids (deliveries to them, messages
    from them) ordered by that id, so the planner can walk them newest
    first and stop at `limit` for a common word, or start from the GIN
    index for a rare one. The ORM's `sender = me OR EXISTS (delivery)` form
    made it scan the whole table backwards for words of middling frequency:
    seconds at a million messages (docs/performance.md).
    """
    message, delivery, member = Message._meta.db_table, Delivery._meta.db_table, RoomMember._meta.db_table
    terms = " & ".join([*words[:-1], words[-1] + ":*"])
    sql = (
        f"SELECT m.id FROM (SELECT message_id AS id FROM {delivery} WHERE recipient_id = %s"
        f" UNION ALL SELECT id FROM {message} WHERE sender_id = %s) mine"
        f" JOIN {message} m ON m.id = mine.id"
        " WHERE m.deleted_at IS NULL AND mine.id < %s"
        # Of a room only while a member.
        f" AND (m.room_id IS NULL OR m.room_id IN (SELECT room_id FROM {member} WHERE user_id = %s))"
        # The expression of the GIN index (migration 0003), or it is not used.
        " AND to_tsvector('simple'::regconfig, COALESCE(m.body, ''::text)) @@ to_tsquery('simple'::regconfig, %s)"
        " ORDER BY mine.id DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [user.pk, user.pk, before if before is not None else 2**63 - 1, user.pk, terms, limit])
        return [row[0] for row in cursor.fetchall()]


def typing_recipient(*, sender: UserModel, username: str) -> int | None:
    """Who a `typing` frame is for: the user's id, or None when they block
    the sender (they are not told). ServiceError when there is no such user."""
    if username == sender.username:
        raise ServiceError("invalid", "You cannot tell yourself you are typing.")
    row = (
        User.objects.filter(username=username, is_active=True)
        .annotate(blocks_sender=Exists(Block.objects.filter(blocker=OuterRef("pk"), blocked=sender)))
        .values_list("pk", "blocks_sender")
        .first()
    )
    if row is None:
        raise ServiceError("unknown_user", f"There is no user {username!r}.")
    return None if row[1] else row[0]


def conversation_list(*, user: UserModel) -> list[dict[str, Any]]:
    """One entry per private peer and one for broadcasts, latest first, with
    how many messages to the user are unread and where their read mark is."""
    last: dict[int | None, int] = {}  # peer id (None: broadcasts) -> last message id
    alive = Q(deleted_at__isnull=True)
    # Rooms are listed by `rooms`, not here.
    for row in Message.objects.filter(alive, sender=user, room=None).values("recipient_id").annotate(m=Max("id")):
        last[row["recipient_id"]] = row["m"]
    received = Delivery.objects.filter(recipient=user, message__deleted_at__isnull=True, message__room=None)
    for row in received.values("message__kind", "message__sender_id").annotate(m=Max("message_id")):
        peer = row["message__sender_id"] if row["message__kind"] == Message.Kind.PRIVATE else None
        last[peer] = max(last.get(peer, 0), row["m"])

    mark = ReadMark.objects.filter(user=user, peer=OuterRef("message__sender")).values("up_to")[:1]
    unread: dict[int | None, int] = dict(
        received.filter(message__kind=Message.Kind.PRIVATE)
        .annotate(mark=Coalesce(Subquery(mark), Value(0)))
        .filter(message_id__gt=F("mark"))
        .values("message__sender_id")
        .annotate(n=Count("id"))
        .values_list("message__sender_id", "n")
    )
    marks: dict[int | None, int] = dict(ReadMark.objects.filter(user=user, room=None).values_list("peer_id", "up_to"))
    unread[None] = received.filter(message__kind=Message.Kind.BROADCAST, message_id__gt=marks.get(None, 0)).count()

    messages = (
        with_receipts(Message.objects.all(), user=user)
        .select_related("sender", "recipient")
        .in_bulk(list(last.values()))
    )
    names = dict(User.objects.filter(pk__in=[p for p in last if p is not None]).values_list("pk", "username"))
    extras = message_extras(messages=[(m.id, m.reply_to_id) for m in messages.values()])
    entries = [
        {
            "with": names.get(peer) if peer is not None else None,
            "last": message_object(messages[mid], viewer_id=user.pk, extras=extras),
            "unread": unread.get(peer, 0),
            "read_up_to": marks.get(peer, 0),
        }
        for peer, mid in sorted(last.items(), key=lambda item: -item[1])
    ]
    attachments_fill([entry["last"] for entry in entries])
    return entries


def user_data(*, user: UserModel) -> dict[str, QuerySet[Any]]:
    """What "download my data" holds besides the account itself: the
    messages the user sent, those that reached them, and their blocks, each
    in id order with what formatting them needs loaded (callers stream them
    with iterator(): a user may have a million messages)."""
    live = Message.objects.filter(deleted_at__isnull=True).select_related("sender", "recipient").order_by("id")
    return {
        "messages_sent": live.filter(sender=user),
        "messages_received": live.filter(_received_by(user, offline=True)).exclude(sender=user),
        "blocks": Block.objects.filter(blocker=user).select_related("blocked").order_by("id"),
    }


# --- Attachments --------------------------------------------------------------------


def attachments_fill(objects: list[Any]) -> list[Any]:
    """Fill in the `attachments` of message objects or events, for a whole
    page in one query (never one per message). Returns `objects`."""
    if not objects:
        return objects
    by_message: dict[int, list[Any]] = {}
    for attachment in Attachment.objects.filter(message__in=[o["id"] for o in objects]).order_by("position", "id"):
        assert attachment.message_id is not None
        by_message.setdefault(attachment.message_id, []).append(attachment_object(attachment))
    for obj in objects:
        obj["attachments"] = by_message.get(obj["id"], [])
    return objects


def attachment_for_download(*, user: UserModel | None, attachment_id: int) -> Attachment:
    """The attachment, if `user` may download it: while unsent, only its
    uploader; once sent, whoever can see its message in `history` (the
    same rule: sender, or a Delivery row, and not deleted). Anything else,
    whether it exists or not, is unknown: ServiceError not_found."""
    attachment = Attachment.objects.filter(pk=attachment_id).first() if user is not None else None
    if attachment is not None and user is not None:
        if attachment.message_id is None:
            if attachment.uploader_id == user.pk:
                return attachment
        elif Message.objects.filter(
            _visible_to(user, offline=True), pk=attachment.message_id, deleted_at__isnull=True
        ).exists():
            return attachment
    raise ServiceError("not_found", "There is no such file.")


# --- Rooms ----------------------------------------------------------------------------


def room_objects(memberships: QuerySet[RoomMember]) -> dict[tuple[int, int], RoomObject]:
    """Room objects keyed (room id, user id), each as that member sees it,
    for memberships of one user (`rooms`) or of one room (its events).

    One query for all of them, each figure a subquery through an index:
    `last` walks the room's messages newest first to the first one the
    member can see, `unread` counts the room's messages after the member's
    mark (as many as are unread), not every delivery of the member."""
    delivered = Exists(Delivery.objects.filter(message=OuterRef("pk"), recipient=OuterRef(OuterRef("user"))))
    in_room = Message.objects.filter(room=OuterRef("room"), deleted_at__isnull=True).order_by()
    counted = in_room.filter(delivered, id__gt=OuterRef("mark")).values("room").annotate(n=Count("id")).values("n")
    members = RoomMember.objects.filter(room=OuterRef("room")).order_by().values("room").annotate(n=Count("id"))
    rows = list(
        memberships.select_related("room").annotate(
            member_count=Subquery(members.values("n")),
            mark=Coalesce(
                Subquery(ReadMark.objects.filter(user=OuterRef("user"), room=OuterRef("room")).values("up_to")[:1]),
                Value(0),
            ),
            last_id=Subquery(
                in_room.filter(Q(sender=OuterRef("user")) | Q(delivered)).order_by("-id").values("id")[:1]
            ),
            unread=Coalesce(Subquery(counted), Value(0)),
        )
    )
    page = list(
        Message.objects.filter(pk__in={m.last_id for m in rows if m.last_id}).select_related("sender", "recipient")
    )
    objects = dict(zip([m.id for m in page], message_objects(page), strict=True))
    return {
        (m.room_id, m.user_id): {
            "id": m.room_id,
            "name": m.room.name,
            "member_count": m.member_count,
            "admin": m.admin,
            "created_at": timestamp(m.room.created_at) or "",
            "last": objects.get(m.last_id),
            "unread": m.unread,
        }
        for m in rows
    }


def room_list(*, user: UserModel) -> list[RoomObject]:
    """Every room of `user`, latest message first, rooms without one last
    (newest room first among those)."""
    memberships = RoomMember.objects.filter(user=user)
    # Building room_objects' query (its subqueries resolved and compiled) is
    # most of a `rooms` request: after a restart every client asks, most in
    # no room at all, and one plain query answers those.
    if not memberships.exists():
        return []
    rooms = list(room_objects(memberships).values())
    rooms.sort(key=lambda r: (r["last"]["id"] if r["last"] else 0, r["id"]), reverse=True)
    return rooms


def room_member_list(*, user: UserModel, room_id: int) -> list[RoomMemberObject]:
    """The members of a room `user` is in, sorted by name."""
    room_of(user=user, room_id=room_id)
    online = set(live_presence().filter(user__room_memberships__room=room_id).values_list("user_id", flat=True))
    rows = RoomMember.objects.filter(room=room_id).values_list("user_id", "user__username", "admin")
    return [
        {"username": name, "admin": admin, "online": user_id in online}
        for user_id, name, admin in sorted(rows, key=lambda row: row[1])
    ]


def room_online_member_ids(room_id: int, *, not_blocking: int | None = None) -> set[int]:
    """The members of a room who are online; with `not_blocking`, only those
    who do not block that user, and not that user."""
    online = live_presence().filter(user__room_memberships__room=room_id)
    if not_blocking is not None:
        online = online.exclude(user=not_blocking).exclude(
            Exists(Block.objects.filter(blocker=OuterRef("user"), blocked=not_blocking))
        )
    return set(online.values_list("user_id", flat=True))


def room_typing_recipients(*, sender: UserModel, room_id: int) -> set[int]:
    """Who hears that `sender` types in a room: members online who do not
    block them. unknown_room unless the sender is a member."""
    room_of(user=sender, room_id=room_id)
    return room_online_member_ids(room_id, not_blocking=sender.pk)


def message_viewers_online(message: Message) -> set[int]:
    """The users online who can see `message` in history: its sender and
    those it was delivered to (of a room, only its members)."""
    viewers = live_presence().filter(
        Q(user=message.sender_id) | Q(Exists(Delivery.objects.filter(message=message, recipient=OuterRef("user"))))
    )
    if message.room_id is not None:
        viewers = viewers.filter(user__room_memberships__room=message.room_id)
    return set(viewers.values_list("user_id", flat=True))
