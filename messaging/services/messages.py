"""Sending: private messages, broadcasts and room messages, stored before
anyone is told.

The batch functions (`messages_send`, `messages_broadcast`,
`messages_room_send`) are the one
code path: they take many requests, resolve recipients, blocks, presence
and rate limits of all of them in a few queries, and insert in bulk. The
single-request functions (`message_send`, `message_broadcast`) are a batch
of one, for the admin, commands and tests. Errors are per request: a
ServiceError in the result list, never an exception that fails the others.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, Min
from django.utils import timezone

from accounts import selectors as account_selectors
from accounts.models import User as UserModel
from core import metrics
from core.errors import ServiceError

from .. import events, wire
from ..models import Block, ClientRequest, Delivery, Edit, Message, Presence, RoomMember
from ..selectors import live_presence, online_cutoff, visible_replies
from .attachments import AttachmentClaims
from .mailbox import broadcasts_fence

User = get_user_model()
log = logging.getLogger("chat")


@dataclass(frozen=True)
class SendRequest:
    sender: UserModel
    to_username: str
    body: str
    client_id: str | None = None
    rate_limit: bool = True  # False only for operators' tools (seeding)
    reply_to: int | None = None  # a message id of the same conversation
    attachments: tuple[int, ...] = ()  # ids of the sender's unsent uploads


@dataclass(frozen=True)
class BroadcastRequest:
    sender: UserModel
    body: str
    client_id: str | None = None
    rate_limit: bool = True
    reply_to: int | None = None
    attachments: tuple[int, ...] = ()


@dataclass(frozen=True)
class RoomSendRequest:
    sender: UserModel
    room_id: int
    body: str
    client_id: str | None = None
    rate_limit: bool = True
    reply_to: int | None = None
    attachments: tuple[int, ...] = ()


AnySendRequest = SendRequest | BroadcastRequest | RoomSendRequest


@dataclass(frozen=True)
class Sent:
    message: Message
    live: bool  # the recipient was online


@dataclass(frozen=True)
class Broadcasted:
    message: Message
    live: int
    stored: int


Result = TypeVar("Result", Sent, Broadcasted)
Key = tuple[int, str]


def clean_body(body: str, *, may_be_empty: bool = False) -> str:
    """The body trimmed; empty only for a message of attachments alone."""
    body = body.strip()
    if not body and not may_be_empty:
        raise ServiceError("invalid", "The message is empty.")
    if len(body) > settings.CHAT_MAX_BODY_CHARS:
        raise ServiceError("invalid", f"The message is longer than {settings.CHAT_MAX_BODY_CHARS} characters.")
    return body


_rate_limit_logged: dict[int, float] = {}  # sender id -> when last logged (log throttling only)


def _log_rate_limited(sender_id: int, window: float) -> None:
    """One line per sender per window, however fast a client floods."""
    now = time.monotonic()
    if now - _rate_limit_logged.get(sender_id, -window) < window:
        return
    if len(_rate_limit_logged) > 10_000:
        _rate_limit_logged.clear()
    _rate_limit_logged[sender_id] = now
    log.warning("rate limited: user %s sends faster than the limit", sender_id)


class RateLimits:
    """How many messages each sender may still send in this window: every
    message and every edit counts against CHAT_RATE_LIMIT_COUNT (an edit
    is pushed to every recipient like a message), and broadcasts, which
    write a row per user, also against CHAT_BROADCAST_RATE_COUNT."""

    def __init__(self, sender_ids: set[int], now: datetime, *, broadcasts: bool = False):
        if broadcasts:
            self.limit, self.window = settings.CHAT_BROADCAST_RATE_COUNT, settings.CHAT_BROADCAST_RATE_SECONDS
        else:
            self.limit, self.window = settings.CHAT_RATE_LIMIT_COUNT, settings.CHAT_RATE_LIMIT_SECONDS
        self.now = now
        self.state: dict[int, tuple[int, datetime]] = {}
        if self.limit > 0 and sender_ids:
            since = now - timedelta(seconds=self.window)
            recent = Message.objects.filter(sender__in=sender_ids, sent_at__gt=since)
            if broadcasts:
                recent = recent.filter(kind=Message.Kind.BROADCAST)
            self._add(recent.values("sender").annotate(n=Count("id"), oldest=Min("sent_at")))
            if not broadcasts:
                edits = Edit.objects.filter(sender__in=sender_ids, edited_at__gt=since)
                self._add(edits.values("sender").annotate(n=Count("id"), oldest=Min("edited_at")))

    def _add(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            n, oldest = self.state.get(row["sender"], (0, row["oldest"]))
            self.state[row["sender"]] = (n + row["n"], min(oldest, row["oldest"]))

    def take(self, sender_id: int) -> None:
        """Count one more message, or raise rate_limited."""
        if self.limit <= 0:
            return
        n, oldest = self.state.get(sender_id, (0, self.now))
        if n >= self.limit:
            retry_after = max(1, math.ceil((oldest + timedelta(seconds=self.window) - self.now).total_seconds()))
            _log_rate_limited(sender_id, self.window)
            metrics.rate_limited.inc()
            raise ServiceError(
                "rate_limited", f"Too many messages. Try again in {retry_after} seconds.", retry_after=retry_after
            )
        self.state[sender_id] = (n + 1, oldest)


class _ClientIds:
    """Sending exactly once: the (sender, client_id) keys of one batch.

    Each new key is claimed with a row before its message exists. A
    concurrent transaction with the same key (another process) waits on the
    unique index, then finds our committed row and replays it; a second
    request with the key in this batch replays the first.
    """

    def __init__(self, keys: set[Key], now: datetime):
        self.replays: dict[Key, ClientRequest] = {}
        self.claims: dict[Key, ClientRequest] = {}
        self.firsts: dict[Key, int] = {}  # key -> index of the request that uses it
        if not keys:
            return
        senders, ids = {s for s, _ in keys}, {c for _, c in keys}
        rows = ClientRequest.objects.filter(sender__in=senders, client_id__in=ids)
        # Older than the window: the id may be used again.
        rows.filter(created_at__lt=now - timedelta(seconds=settings.CHAT_CLIENT_ID_SECONDS)).delete()
        ClientRequest.objects.bulk_create(
            [ClientRequest(sender_id=s, client_id=c, created_at=now) for s, c in keys], ignore_conflicts=True
        )
        for row in rows.select_related("message__sender", "message__recipient"):
            key = (row.sender_id, row.client_id)
            if key in keys:
                (self.replays if row.message_id else self.claims)[key] = row

    def check(self, key: Key | None) -> ClientRequest | int | None:
        """A stored answer to replay, the index of an earlier request of this
        batch with the key, or None: go ahead."""
        if key is None:
            return None
        replay = self.replays.get(key)
        if replay is not None and replay.message is not None:
            # Whatever kind of message it was: the contract's answer to a
            # second request with the same client_id is the first one's.
            return replay
        return self.firsts.get(key)

    def use(self, key: Key | None, index: int) -> None:
        if key is not None and key in self.claims:
            self.firsts[key] = index

    def finish(self, results: Sequence[Any], reply: Callable[[Any], dict[str, Any]]) -> None:
        """Store the answers of the keys used; free the claims of requests
        that failed, so the client may try again with the same id."""
        done = []
        for key, index in self.firsts.items():
            row = self.claims.pop(key)
            row.message, row.reply = results[index].message, reply(results[index])
            done.append(row)
        if done:
            ClientRequest.objects.bulk_update(done, ["message", "reply"])
        if self.claims:
            ClientRequest.objects.filter(pk__in=[row.pk for row in self.claims.values()]).delete()


# What makes two messages one conversation: the kind and the pair of users
# (private), nothing more (broadcasts) or the room.
Conversation = tuple[str, frozenset[int] | int | None]


def _conversation(message: Message) -> Conversation:
    if message.kind == Message.Kind.PRIVATE:
        return (message.kind, frozenset((message.sender_id, message.recipient_id)))  # type: ignore[arg-type]
    return (message.kind, message.room_id)


class _Replies:
    """The messages the requests of a batch reply to, each as its sender may
    see it, in a few queries for the batch (selectors.visible_replies)."""

    def __init__(self, requests: Sequence[AnySendRequest], todo: list[int]):
        wanted = {(requests[i].sender.pk, requests[i].reply_to) for i in todo if requests[i].reply_to is not None}
        self.found = visible_replies(wanted=wanted)  # type: ignore[arg-type]
        self.extras = wire.Extras(
            replies={m.id: wire.reply_object(m.id, sender=m.sender.username, body=m.body) for m in self.found.values()}
        )

    def check(self, r: AnySendRequest, conversation: Conversation) -> None:
        """unknown_message unless `r` replies to nothing, or to a message of
        its own conversation that its sender can see."""
        if r.reply_to is None:
            return
        target = self.found.get((r.sender.pk, r.reply_to))
        if target is None or _conversation(target) != conversation:
            raise ServiceError("unknown_message", "You can only reply to a message of this conversation you can see.")


def _clean_bodies(requests: Sequence[AnySendRequest]) -> tuple[list[Any], dict[int, str], list[int]]:
    """The checks that need no database: (results with the errors filled in,
    the cleaned body of each other request, the indexes still to do)."""
    results: list[Any] = [None] * len(requests)
    bodies: dict[int, str] = {}
    for i, r in enumerate(requests):
        try:
            if isinstance(r, SendRequest) and r.to_username == r.sender.username:
                raise ServiceError("invalid", "You cannot send a message to yourself.")
            bodies[i] = clean_body(r.body, may_be_empty=bool(r.attachments))
        except ServiceError as e:
            results[i] = e
    return results, bodies, [i for i in range(len(requests)) if results[i] is None]


def _claims(requests: Sequence[AnySendRequest], todo: list[int]) -> AttachmentClaims:
    return AttachmentClaims({i: (requests[i].sender, requests[i].attachments) for i in todo if requests[i].attachments})


def _key(sender: UserModel, client_id: str | None) -> Key | None:
    return (sender.pk, client_id) if client_id is not None else None


def _sent_reply(result: Sent) -> dict[str, Any]:
    return {"live": result.live}


def _broadcast_reply(result: Broadcasted) -> dict[str, Any]:
    return {"live": result.live, "stored": result.stored}


def messages_send(*, requests: Sequence[SendRequest]) -> list[Sent | ServiceError]:
    """Store private messages; each result says whether the recipient was online."""
    results, bodies, todo = _clean_bodies(requests)
    if not todo:
        return results
    with transaction.atomic():
        now = timezone.now()
        keys = {i: _key(requests[i].sender, requests[i].client_id) for i in todo}
        client_ids = _ClientIds({k for k in keys.values() if k}, now)
        names = {requests[i].to_username for i in todo}
        recipients = {
            u.username: u for u in User.objects.filter(username__in=names, is_active=True).only("pk", "username")
        }
        recipient_ids = [u.pk for u in recipients.values()]
        sender_ids = {requests[i].sender.pk for i in todo}
        blocks = set(
            Block.objects.filter(blocker__in=recipient_ids, blocked__in=sender_ids).values_list(
                "blocker_id", "blocked_id"
            )
        )
        online = set(live_presence(now).filter(user__in=recipient_ids).values_list("user_id", flat=True))
        rates = RateLimits({requests[i].sender.pk for i in todo if requests[i].rate_limit}, now)
        replies = _Replies(requests, todo)
        claims = _claims(requests, todo)
        accepted: list[int] = []
        copies: dict[int, int] = {}  # request index -> index of the earlier one it repeats
        for i in todo:
            r = requests[i]
            try:
                earlier = client_ids.check(keys[i])
                if isinstance(earlier, ClientRequest):
                    reply = earlier.reply or {}
                    results[i] = Sent(earlier.message, bool(reply.get("live")))  # type: ignore[arg-type]
                    continue
                if earlier is not None:
                    copies[i] = earlier
                    continue
                recipient = recipients.get(r.to_username)
                if recipient is None:
                    raise ServiceError("unknown_user", f"There is no user {r.to_username!r}.")
                if (recipient.pk, r.sender.pk) in blocks:
                    raise ServiceError("blocked", f"{recipient.username} does not accept your messages.")
                replies.check(r, (Message.Kind.PRIVATE, frozenset((r.sender.pk, recipient.pk))))
                claims.check(i)
                if r.rate_limit:
                    rates.take(r.sender.pk)
            except ServiceError as e:
                results[i] = e
                continue
            message = Message(
                kind=Message.Kind.PRIVATE,
                sender=r.sender,
                recipient=recipient,
                body=bodies[i],
                sent_at=now,
                reply_to_id=r.reply_to,
            )
            results[i] = Sent(message, recipient.pk in online)
            accepted.append(i)
            claims.take(i)
            client_ids.use(keys[i], i)
        Message.objects.bulk_create([results[i].message for i in accepted])
        extras = {i: claims.attach(i, results[i].message, replies.extras) for i in accepted}
        claims.save()
        Delivery.objects.bulk_create(
            [
                Delivery(message=m, recipient_id=m.recipient_id, pushed_at=now if results[i].live else None)
                for i in accepted
                for m in [results[i].message]
            ]
        )
        for i, earlier in copies.items():
            results[i] = results[earlier]
        client_ids.finish(results, _sent_reply)
        for i in accepted:
            message = results[i].message
            event = wire.message_event(message, stored=False, extras=extras[i])
            events.push_message(event, user_id=message.recipient_id)
    return results


Check = Callable[[Any, "_Replies"], None]


def _fanned_out(
    requests: Sequence[BroadcastRequest | RoomSendRequest],
    prepare: Callable[[list[int], datetime], Check],
    store: Callable[[Any, str, datetime, Callable[[Message], wire.Extras]], Broadcasted],
) -> list[Broadcasted | ServiceError]:
    """What broadcasts and room messages share: clean, replay a client_id's
    answer, check the request (`prepare` loads what the checks of the batch
    need, once), store and fan out each accepted one. `store` calls its
    last argument with the message it created, to attach the request's
    files, and pushes the extras it returns."""
    results, bodies, todo = _clean_bodies(requests)
    if not todo:
        return results
    with transaction.atomic():
        now = timezone.now()
        keys = {i: _key(requests[i].sender, requests[i].client_id) for i in todo}
        client_ids = _ClientIds({k for k in keys.values() if k}, now)
        replies = _Replies(requests, todo)
        check = prepare(todo, now)
        claims = _claims(requests, todo)
        copies: dict[int, int] = {}
        for i in todo:
            r = requests[i]
            try:
                earlier = client_ids.check(keys[i])
                if isinstance(earlier, ClientRequest):
                    # The first answer's counts (a private message's: one, live or stored).
                    reply = earlier.reply or {}
                    live, stored = reply.get("live", 0), reply.get("stored")
                    if stored is None:
                        live, stored = int(bool(live)), int(not live)
                    results[i] = Broadcasted(earlier.message, live, stored)  # type: ignore[arg-type]
                    continue
                if earlier is not None:
                    copies[i] = earlier
                    continue
                claims.check(i)
                check(r, replies)
            except ServiceError as e:
                results[i] = e
                continue
            claims.take(i)
            results[i] = store(r, bodies[i], now, lambda m, i=i: claims.attach(i, m, replies.extras))  # type: ignore[misc]
            client_ids.use(keys[i], i)
        claims.save()
        for i, earlier in copies.items():
            results[i] = results[earlier]
        client_ids.finish(results, _broadcast_reply)
    return results


def messages_broadcast(*, requests: Sequence[BroadcastRequest]) -> list[Broadcasted | ServiceError]:
    """Store broadcasts for every active user but the sender and those who
    block the sender; each result counts who was online and who will get it
    at their next login. Only users with presence get a row now; the others
    get theirs when they log in (mailbox), so a broadcast costs what its
    online audience costs, however many users are registered."""

    def prepare(todo: list[int], now: datetime) -> Check:
        limited = {requests[i].sender.pk for i in todo if requests[i].rate_limit}
        rates = RateLimits(limited, now)
        broadcast_rates = RateLimits(limited, now, broadcasts=True)

        def check(r: BroadcastRequest, replies: _Replies) -> None:
            replies.check(r, (Message.Kind.BROADCAST, None))
            if r.rate_limit:
                broadcast_rates.take(r.sender.pk)
                rates.take(r.sender.pk)

        return check

    def store(r: BroadcastRequest, body: str, now: datetime, attach: Callable[[Message], wire.Extras]) -> Broadcasted:
        broadcasts_fence(exclusive=True)  # before the id is taken
        message = Message.objects.create(
            kind=Message.Kind.BROADCAST, sender=r.sender, body=body, sent_at=now, reply_to_id=r.reply_to
        )
        extras = attach(message)
        live, stored = _fan_out_broadcast(message, now)
        blockers = set(Block.objects.filter(blocked=r.sender).values_list("blocker_id", flat=True))
        events.push_to_everyone(
            [wire.message_event(message, stored=False, extras=extras)], exclude_user_ids=blockers | {r.sender.pk}
        )
        return Broadcasted(message, live, stored)

    return _fanned_out(requests, prepare, store)


def messages_room_send(*, requests: Sequence[RoomSendRequest]) -> list[Broadcasted | ServiceError]:
    """Store room messages for every member but the sender and those who
    block the sender; each result counts who was online and who will get it
    at their next login. unknown_room unless the sender is a member."""

    def prepare(todo: list[int], now: datetime) -> Check:
        members = set(
            RoomMember.objects.filter(
                room__in={requests[i].room_id for i in todo}, user__in={requests[i].sender.pk for i in todo}
            ).values_list("room_id", "user_id")
        )
        rates = RateLimits({requests[i].sender.pk for i in todo if requests[i].rate_limit}, now)

        def check(r: RoomSendRequest, replies: _Replies) -> None:
            if (r.room_id, r.sender.pk) not in members:
                raise ServiceError("unknown_room", "You are in no room with that id.")
            replies.check(r, (Message.Kind.ROOM, r.room_id))
            if r.rate_limit:
                rates.take(r.sender.pk)

        return check

    def store(r: RoomSendRequest, body: str, now: datetime, attach: Callable[[Message], wire.Extras]) -> Broadcasted:
        message = Message.objects.create(
            kind=Message.Kind.ROOM, sender=r.sender, room_id=r.room_id, body=body, sent_at=now, reply_to_id=r.reply_to
        )
        extras = attach(message)
        live, stored = _fan_out_room(message, now, room_id=r.room_id)
        # To the members online only, through the hubs: one layer message per process.
        online = Delivery.objects.filter(message=message, pushed_at__isnull=False).values_list(
            "recipient_id", flat=True
        )
        events.push_to_users([wire.message_event(message, stored=False, extras=extras)], user_ids=list(online))
        return Broadcasted(message, live, stored)

    return _fanned_out(requests, prepare, store)


def _fan_out_broadcast(message: Message, now: datetime) -> tuple[int, int]:
    """A pending delivery for each user with presence (live, or a stale row
    whose connection may still be there) but the sender and those who block
    the sender, in one INSERT ... SELECT; the rest of the audience is
    counted, not written (mailbox). CROSS JOIN keeps SQLite from walking
    every user to find the few with presence (it keeps the order written;
    PostgreSQL plans it like any join). Returns (online, offline)
    recipients."""
    user, delivery, block, presence = (m._meta.db_table for m in (User, Delivery, Block, Presence))
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {delivery} (message_id, recipient_id, pushed_at, acked_at)
            SELECT %s, u.id, CASE WHEN p.heartbeat_at >= %s THEN %s ELSE NULL END, NULL
            FROM {presence} p CROSS JOIN {user} u
            WHERE u.id = p.user_id AND u.is_active AND u.id <> %s
              AND NOT EXISTS (SELECT 1 FROM {block} b WHERE b.blocker_id = u.id AND b.blocked_id = %s)
            """,
            [
                message.pk,
                ops.adapt_datetimefield_value(online_cutoff(now)),
                ops.adapt_datetimefield_value(now),
                message.sender_id,
                message.sender_id,
            ],
        )
        cursor.execute(f"SELECT COUNT(pushed_at) FROM {delivery} WHERE message_id = %s", [message.pk])
        (live,) = cursor.fetchone()
    sender_active = User.objects.filter(pk=message.sender_id, is_active=True).exists()
    audience = (
        account_selectors.active_user_count()
        - sender_active
        - Block.objects.filter(blocked=message.sender_id, blocker__is_active=True).count()
    )
    return live, max(audience - live, 0)


def _fan_out_room(message: Message, now: datetime, *, room_id: int) -> tuple[int, int]:
    """One pending delivery per member but the sender and those who block
    the sender, written by the database itself in one INSERT ... SELECT (a
    room of a thousand without a round trip each). Returns (online
    recipients, offline recipients)."""
    user, delivery, block, presence, member = (m._meta.db_table for m in (User, Delivery, Block, Presence, RoomMember))
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {delivery} (message_id, recipient_id, pushed_at, acked_at)
            SELECT %s, u.id, CASE WHEN p.user_id IS NULL THEN NULL ELSE %s END, NULL
            FROM {user} u
            LEFT JOIN {presence} p ON p.user_id = u.id AND p.heartbeat_at >= %s
            JOIN {member} rm ON rm.user_id = u.id AND rm.room_id = %s
            WHERE u.is_active AND u.id <> %s
              AND NOT EXISTS (SELECT 1 FROM {block} b WHERE b.blocker_id = u.id AND b.blocked_id = %s)
            """,
            [
                message.pk,
                ops.adapt_datetimefield_value(now),
                ops.adapt_datetimefield_value(online_cutoff(now)),
                room_id,
                message.sender_id,
                message.sender_id,
            ],
        )
        cursor.execute(f"SELECT COUNT(*), COUNT(pushed_at) FROM {delivery} WHERE message_id = %s", [message.pk])
        total, live = cursor.fetchone()
    return live, total - live


def _one(result: Result | ServiceError) -> Result:
    if isinstance(result, ServiceError):
        raise result
    return result


def message_send(
    *,
    sender: UserModel,
    to_username: str,
    body: str,
    client_id: str | None = None,
    rate_limit: bool = True,
    reply_to: int | None = None,
    attachments: Sequence[int] = (),
) -> Sent:
    """Store one private message (a batch of one)."""
    request = SendRequest(
        sender=sender,
        to_username=to_username,
        body=body,
        client_id=client_id,
        rate_limit=rate_limit,
        reply_to=reply_to,
        attachments=tuple(attachments),
    )
    return _one(messages_send(requests=[request])[0])


def message_broadcast(
    *,
    sender: UserModel,
    body: str,
    client_id: str | None = None,
    rate_limit: bool = True,
    reply_to: int | None = None,
    attachments: Sequence[int] = (),
) -> Broadcasted:
    """Store one broadcast (a batch of one)."""
    request = BroadcastRequest(
        sender=sender,
        body=body,
        client_id=client_id,
        rate_limit=rate_limit,
        reply_to=reply_to,
        attachments=tuple(attachments),
    )
    return _one(messages_broadcast(requests=[request])[0])


def message_room_send(
    *,
    sender: UserModel,
    room_id: int,
    body: str,
    client_id: str | None = None,
    reply_to: int | None = None,
    rate_limit: bool = True,
    attachments: Sequence[int] = (),
) -> Broadcasted:
    """Store one room message (a batch of one)."""
    request = RoomSendRequest(
        sender=sender,
        room_id=room_id,
        body=body,
        client_id=client_id,
        reply_to=reply_to,
        rate_limit=rate_limit,
        attachments=tuple(attachments),
    )
    return _one(messages_room_send(requests=[request])[0])
