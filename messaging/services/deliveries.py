"""Delivery: what is pending for whom, pushed, pushed again, acked."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User as UserModel

from .. import events, wire
from ..models import Delivery, Message, Presence
from ..selectors import attachments_fill, message_extras
from .presence import HOST, PID


@dataclass(frozen=True)
class AckRequest:
    user: UserModel
    ids: Sequence[int]


# SQLite takes at most 32,766 parameters a statement.
_CHUNK = 5000


# Past this many sets of ids acked alike in one batch, the acks are read
# back row by row after all: one statement per set would cost more.
_MAX_ALIKE = 50


def deliveries_ack(*, requests: Sequence[AckRequest]) -> list[None]:
    """Mark messages delivered to their recipients, for many requests at
    once; ids that are not pending for that user are ignored. The senders
    of newly acked private messages get a delivered receipt.

    Private messages are read back row by row (a receipt names who acked
    which). The others (broadcasts, room messages) are one UPDATE for each
    set of ids acked alike: the acks of a broadcast to 10,000 online are a
    statement or two, not 10,000 rows read into Python, each row a step of
    SQLite that lets the event loop take the GIL and waits to get it back.
    Nothing counts what was newly acked (that would read the rows again)."""
    wanted: dict[int, set[int]] = defaultdict(set)
    for r in requests:
        wanted[r.user.pk].update(r.ids)
    message_ids = sorted({mid for ids in wanted.values() for mid in ids})
    if not message_ids:
        return [None] * len(requests)
    now = timezone.now()
    names = {r.user.pk: r.user.username for r in requests}
    with transaction.atomic():
        private: dict[int, int] = {}  # message id -> sender id
        for i in range(0, len(message_ids), _CHUNK):
            chunk = message_ids[i : i + _CHUNK]
            private.update(
                Message.objects.filter(pk__in=chunk, kind=Message.Kind.PRIVATE).values_list("pk", "sender_id")
            )
        alike: dict[tuple[int, ...], list[int]] = defaultdict(list)  # ids -> the users who acked them
        for user_id, acked in wanted.items():
            rest = tuple(sorted(mid for mid in acked if mid not in private))
            if rest:
                alike[rest].append(user_id)
        by_rows = {(user_id, mid) for user_id, acked in wanted.items() for mid in acked if mid in private}
        if len(alike) > _MAX_ALIKE:
            by_rows.update((user_id, mid) for same, user_ids in alike.items() for user_id in user_ids for mid in same)
            alike.clear()
        for same, user_ids in alike.items():
            for i in range(0, len(same), _CHUNK):
                for j in range(0, len(user_ids), _CHUNK):
                    pending = Delivery.objects.filter(acked_at__isnull=True, message_id__in=same[i : i + _CHUNK])
                    pending.filter(recipient_id__in=user_ids[j : j + _CHUNK]).update(acked_at=now)
        receipts: dict[int, list[wire.Receipt]] = defaultdict(list)
        for user_id, message_id in _ack_rows(by_rows, now):
            if message_id in private:
                receipts[private[message_id]].append(wire.receipt_delivered(message_id, by=names[user_id]))
        for sender_id, frames in receipts.items():
            events.push_frames(sender_id, frames)
    return [None] * len(requests)


def _ack_rows(pairs: set[tuple[int, int]], now: datetime) -> list[tuple[int, int]]:
    """Ack these (user id, message id) deliveries if pending, read row by
    row: the pairs that were newly acked."""
    if not pairs:
        return []
    user_ids = sorted({user_id for user_id, _ in pairs})
    message_ids = sorted({mid for _, mid in pairs})
    rows: list[tuple[int, int, int]] = []
    for i in range(0, len(message_ids), _CHUNK):
        pending = Delivery.objects.filter(
            recipient_id__in=user_ids, message_id__in=message_ids[i : i + _CHUNK], acked_at__isnull=True
        ).values_list("pk", "recipient_id", "message_id")
        rows.extend(row for row in pending if (row[1], row[2]) in pairs)
    pks = [row[0] for row in rows]
    for i in range(0, len(pks), _CHUNK):
        Delivery.objects.filter(pk__in=pks[i : i + _CHUNK]).update(acked_at=now)
    return [(user_id, message_id) for _, user_id, message_id in rows]


def delivery_ack(*, user: UserModel, ids: Sequence[int]) -> None:
    """Mark these messages delivered to `user` (a batch of one)."""
    deliveries_ack(requests=[AckRequest(user=user, ids=ids)])


def _audiences(names: list[str]) -> list[Q]:
    """Whose deliveries to look at, as filters on the recipient's presence
    row: this process's rows, read by host and pid, less the few of them
    not among `names` (connections still pushing what waited at login): one
    query with no list of 10,000 names to build each tick. Past 500 such
    rows, the names themselves, in lists of 500. A name with no row of
    this process has nothing to re-push here."""
    mine = set(Presence.objects.filter(host=HOST, pid=PID).values_list("channel_name", flat=True))
    named = mine & set(names)
    if not named:
        return []
    here = Q(recipient__presence__host=HOST, recipient__presence__pid=PID)
    skipped = list(mine - named)
    if len(skipped) > 500:
        listed = sorted(named)
        return [here & Q(recipient__presence__channel_name__in=listed[i : i + 500]) for i in range(0, len(listed), 500)]
    return [here & ~Q(recipient__presence__channel_name__in=skipped)] if skipped else [here]


def delivery_flush_page(
    *, user: UserModel, after: int = 0, limit: int = 500, max_bytes: int | None = None
) -> list[wire.MessageEvent]:
    """The next messages pending for `user` after id `after`, oldest first,
    as `message` events: at most `limit` of them and, past the first, at
    most `max_bytes` of bodies (a page of long messages is shorter), marked
    as pushed now (so the re-push waits its turn). Read as plain rows: at
    login this may run for thousands."""
    # No transaction around the read: an empty page (most logins) then takes
    # no write lock at all. A row acked between the read and the update is
    # pushed once more, which the protocol allows (acks are idempotent).
    pending = Delivery.objects.filter(recipient=user, acked_at__isnull=True, message_id__gt=after)
    rows = _within_bytes(
        list(
            pending.filter(message__deleted_at__isnull=True)
            .order_by("message_id")
            .values_list(*wire.MESSAGE_ROW)[:limit]
        ),
        max_bytes,
    )
    if rows:
        # The rows read, not an id range: a message committed meanwhile
        # with a lower id (ids are taken before commit) was not pushed.
        pending.filter(message_id__in=[row[0] for row in rows]).update(pushed_at=timezone.now())
    extras = message_extras(messages=[(row[0], row[wire.MESSAGE_ROW_REPLY_TO]) for row in rows])
    return attachments_fill([wire.message_event_row(row, stored=True, extras=extras) for row in rows])


# What a message event adds to its body's bytes, about (names, times, keys).
_FRAME_OVERHEAD = 200


def _within_bytes(rows: list[tuple[Any, ...]], max_bytes: int | None) -> list[tuple[Any, ...]]:
    """The first rows whose bodies (MESSAGE_ROW's `body`) fit in `max_bytes`;
    always at least one."""
    if max_bytes is None:
        return rows
    body = wire.MESSAGE_ROW.index("message__body")
    total = 0
    for i, row in enumerate(rows):
        total += len(row[body].encode("utf-8", "surrogatepass")) + _FRAME_OVERHEAD
        if total > max_bytes and i > 0:
            return rows[:i]
    return rows


def delivery_redeliver(*, channel_names: Iterable[str], limit: int = 1000, max_bytes_per_user: int = 256 * 1024) -> int:
    """Push again what users connected here have not acked in time.

    The channel layer may drop a push under load; the pending row stays, so
    this is what makes a live recipient get it after all. Each user gets at
    most `max_bytes_per_user` of bodies a tick (at least one message), so a
    stuffed mailbox is never pushed in one go; the rest waits for the next
    tick.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.CHAT_REDELIVER_SECONDS)
    names = list(channel_names)
    by_user: dict[int, list[wire.MessageEvent]] = defaultdict(list)
    with transaction.atomic():
        for audience in _audiences(names):
            due = Delivery.objects.filter(
                Q(pushed_at__lt=cutoff) | Q(pushed_at__isnull=True, message__sent_at__lt=cutoff),
                audience,
                acked_at__isnull=True,
                message__deleted_at__isnull=True,
            ).select_related("message__sender", "message__recipient")
            taken: list[Delivery] = []
            sizes: dict[int, int] = defaultdict(int)
            for d in due.order_by("message_id")[:limit]:
                size = len(d.message.body.encode("utf-8", "surrogatepass")) + _FRAME_OVERHEAD
                if sizes[d.recipient_id] and sizes[d.recipient_id] + size > max_bytes_per_user:
                    continue
                sizes[d.recipient_id] += size
                taken.append(d)
            if not taken:
                continue
            Delivery.objects.filter(pk__in=[d.pk for d in taken]).update(pushed_at=now)
            extras = message_extras(messages=[(d.message_id, d.message.reply_to_id) for d in taken])
            for d in taken:
                event = wire.message_event(d.message, stored=d.pushed_at is None, extras=extras)
                by_user[d.recipient_id].append(event)
        attachments_fill([event for frames in by_user.values() for event in frames])
        events.push_messages(by_user)
    return sum(len(v) for v in by_user.values())
