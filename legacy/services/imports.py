"""Bringing over what the old server held: users, undelivered messages, blocks.

`legacy_import` is the whole import of the old server's files (read by
legacy.files), as the chat_import command runs it; `users_import` (.users),
`messages_import` and `blocks_import` are its bulk writes. Every write is
idempotent: importing the same thing twice creates nothing new. A dry run
reads what is there to report exactly what would be done, and writes (and
hashes) nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from accounts.models import User as UserModel
from messaging.models import Block, Delivery, Message

from ..files import Legacy
from .users import UserImport, users_import, users_not_imported

# Progress of a long import: given a phase's name, a function called with
# (steps done, steps in all) as the phase goes.
Progress = Callable[[str], Callable[[int, int], None]]

BATCH = 500
T = TypeVar("T")


def _ref(user: UserModel) -> Hashable:
    """Who a user is, saved or not (a dry run's new users have no pk)."""
    return user.pk if user.pk is not None else ("new", user.username_key)


def _batches(items: Sequence[T], size: int = BATCH) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _blocked_pairs(pairs: Iterable[tuple[Hashable, Hashable]]) -> set[tuple[Hashable, Hashable]]:
    """The (blocker, blocked) among `pairs` (saved users' pks) that the database holds."""
    by_blocker: dict[Hashable, set[Hashable]] = {}
    for blocker, blocked in pairs:
        by_blocker.setdefault(blocker, set()).add(blocked)
    found: set[tuple[Hashable, Hashable]] = set()
    for ids in _batches(list(by_blocker)):
        rows = Block.objects.filter(blocker_id__in=ids).values_list("blocker_id", "blocked_id")
        found.update((a, b) for a, b in rows if b in by_blocker[a])
    return found


@dataclass(frozen=True)
class MessageImport:
    """One message the old server held for one recipient."""

    sender: UserModel
    recipient: UserModel
    body: str
    sent_at: datetime
    kind: str = Message.Kind.PRIVATE


@dataclass(frozen=True)
class MessageImported:
    """`created`: the message is new. `state`: "pending" (a new delivery),
    "already imported" (the recipient has it) or "blocked" (the recipient
    blocks the sender: nothing for them, as block_create would have dropped it)."""

    created: bool
    state: str


def messages_import(
    *,
    messages: Sequence[MessageImport],
    blocks: Collection[tuple[UserModel, UserModel]] = (),
    dry_run: bool = False,
    batch_size: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> list[MessageImported]:
    """message_import for many (one recipient each), in a few queries.

    The same (kind, sender, recipient of a private message, body, sent_at)
    is one message, here and in the database; a broadcast held for several
    recipients is one message with a delivery each. A recipient who blocks
    the sender, in the database or in `blocks` ((blocker, blocked) to take
    as made: a dry run's), gets nothing. Messages and deliveries are written
    with bulk_create in batches of `batch_size`; `progress(done, total)`
    after each.
    Nothing is pushed. Users may be unsaved in a dry run (nothing written).
    """
    Key = tuple[str, Hashable, Hashable, str, datetime]

    def key_of(m: MessageImport) -> Key:
        to = _ref(m.recipient) if m.kind == Message.Kind.PRIVATE else None
        return (m.kind, _ref(m.sender), to, m.body, m.sent_at.astimezone(UTC))

    keys = [key_of(m) for m in messages]
    saved_pairs = [
        (m.recipient.pk, m.sender.pk) for m in messages if m.recipient.pk is not None and m.sender.pk is not None
    ]
    blocked = _blocked_pairs(saved_pairs) | {(_ref(a), _ref(b)) for a, b in blocks}

    # What the database already has: messages of saved senders in the time
    # span of the import (the first of equal ones), and their deliveries.
    existing: dict[Key, int] = {}
    senders = list({m.sender.pk for m in messages if m.sender.pk is not None})
    wanted = set(keys)
    if senders:
        lo, hi = min(k[4] for k in keys), max(k[4] for k in keys)
        for ids in _batches(senders):
            rows = (
                Message.objects.filter(sender_id__in=ids, sent_at__gte=lo, sent_at__lte=hi)
                .order_by("id")
                .values_list("id", "kind", "sender_id", "recipient_id", "body", "sent_at")
            )
            for pk, kind, sender_id, recipient_id, body, sent_at in rows:
                found: Key = (kind, sender_id, recipient_id, body, sent_at.astimezone(UTC))
                if found in wanted:
                    existing.setdefault(found, pk)
    have: set[tuple[int, Hashable]] = set()
    for message_ids in _batches(list(set(existing.values()))):
        have.update(Delivery.objects.filter(message_id__in=message_ids).values_list("message_id", "recipient_id"))

    new_messages: dict[Key, Message] = {}
    new_deliveries: dict[tuple[Key, Hashable], MessageImport] = {}
    results = []
    for m, key in zip(messages, keys, strict=True):
        recipient = _ref(m.recipient)
        if (recipient, _ref(m.sender)) in blocked:
            results.append(MessageImported(created=False, state="blocked"))
            continue
        created = False
        if key not in existing and key not in new_messages:
            recipient_of = m.recipient if m.kind == Message.Kind.PRIVATE else None
            new_messages[key] = Message(
                kind=m.kind, sender=m.sender, recipient=recipient_of, body=m.body, sent_at=m.sent_at
            )
            created = True
        if (key, recipient) in new_deliveries or (key in existing and (existing[key], recipient) in have):
            results.append(MessageImported(created=created, state="already imported"))
            continue
        new_deliveries[(key, recipient)] = m
        results.append(MessageImported(created=created, state="pending"))
    if dry_run:
        return results

    fresh = list(new_messages.values())
    total, done = len(fresh) + len(new_deliveries), 0
    with transaction.atomic():
        for batch in _batches(fresh, batch_size):
            Message.objects.bulk_create(batch)
            done += len(batch)
            if progress:
                progress(done, total)
        if any(m.pk is None for m in fresh):  # a backend that does not return ids
            raise RuntimeError("bulk_create did not set the messages' ids")
        pks = {**existing, **{k: m.pk for k, m in new_messages.items()}}
        deliveries = [Delivery(message_id=pks[k], recipient=m.recipient) for (k, _), m in new_deliveries.items()]
        for chunk in _batches(deliveries, batch_size):
            Delivery.objects.bulk_create(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return results


@dataclass(frozen=True)
class BlockImported:
    """`created`: a new block; otherwise it existed, or `error` says why not."""

    created: bool = False
    error: str | None = None


def blocks_import(
    *, blocks: Sequence[tuple[UserModel, UserModel]], dry_run: bool = False, batch_size: int = BATCH
) -> list[BlockImported]:
    """block_create for many (blocker, blocked) pairs, in a few queries.

    A pair the database (or an earlier pair) already has is left as it is.
    As block_create: nobody blocks themselves or a deactivated account, and
    what the blocked user still has pending for the blocker is dropped.
    """
    saved = [(a.pk, b.pk) for a, b in blocks if a.pk is not None and b.pk is not None]
    seen = _blocked_pairs(saved)
    results = []
    new: list[tuple[UserModel, UserModel]] = []
    for blocker, blocked in blocks:
        pair = (_ref(blocker), _ref(blocked))
        if pair[0] == pair[1]:
            results.append(BlockImported(error="You cannot block yourself."))
        elif pair in seen:
            results.append(BlockImported())
        elif not blocked.is_active:
            results.append(BlockImported(error=f"There is no user {blocked.username!r}."))
        else:
            seen.add(pair)
            new.append((blocker, blocked))
            results.append(BlockImported(created=True))
    if dry_run or not new:
        return results
    with transaction.atomic():
        Block.objects.bulk_create([Block(blocker=a, blocked=b) for a, b in new], batch_size=batch_size)
        for batch in _batches(new, 100):
            pending = Q()
            for a, b in batch:
                pending |= Q(recipient=a, message__sender=b)
            Delivery.objects.filter(pending, acked_at__isnull=True).delete()
    return results


@dataclass
class ImportReport:
    """What legacy_import did (or, in a dry run, would do): counts, and lines
    in order, each ("note" or "skip", text)."""

    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ["users", "users existing", "messages", "deliveries", "blocks", "blocks existing", "skipped"], 0
        )
    )
    lines: list[tuple[str, str]] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.lines.append(("note", text))

    def skip(self, where: str, why: str) -> None:
        self.counts["skipped"] += 1
        self.lines.append(("skip", f"{where}: {why}"))


class NameClash(Exception):
    """Names of the old server that accounts the import did not create
    already have here: `clashes` is [(old name, existing username)]."""

    def __init__(self, clashes: list[tuple[str, str]]) -> None:
        self.clashes = clashes
        shown = ", ".join(name if name == taken else f"{name} (taken as {taken})" for name, taken in clashes)
        super().__init__(
            f"{len(clashes)} name(s) of the old server belong to accounts the import did not create: {shown}. "
            "Their pending messages and blocks would go to those accounts."
        )


def legacy_import(
    *,
    legacy: Legacy,
    commit: bool = False,
    merge: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import what the old server's files hold (legacy.files.legacy_read).

    Users first (users_import: passwords hashed on `jobs` processes,
    then one transaction), then messages, deliveries and blocks in a second
    transaction. Without `commit` it is a dry run: nothing is hashed or
    written, and the report is the one `commit` would give. Running it again
    imports nothing twice, so an import cut short is simply run again.

    A name that an account here already has, one the import did not create
    (someone signed up with it), is taken for someone else: NameClash,
    before anything is hashed or written, unless `merge` says they are the
    same people (their accounts then get the old server's pending messages
    and blocks).
    """
    report = ImportReport()
    counts = report.counts
    for where, why in legacy.skipped:
        report.skip(where, why)

    # Users.
    names = list(legacy.users)
    wanted = []
    for name in names:
        file = legacy.files.get(name)
        wanted.append(
            UserImport(
                username=name,
                password=legacy.users[name][1],
                date_joined=file.signup_timestamp if file else None,
            )
        )
    outcomes = users_import(users=wanted, dry_run=True)
    if not merge:
        existing = [o.user for o in outcomes if o.user is not None and not o.created]
        strangers = {u.pk for u in users_not_imported(existing)}
        clashes = [
            (name, o.user.username)
            for name, o in zip(names, outcomes, strict=True)
            if o.user is not None and o.user.pk in strangers
        ]
        if clashes:
            raise NameClash(clashes)
    if commit:
        outcomes = users_import(users=wanted, jobs=jobs, progress=progress("hashing passwords") if progress else None)
    users: dict[str, UserModel] = {}
    for name, outcome in zip(names, outcomes, strict=True):
        if outcome.user is None:
            report.skip(f"user_pass.csv line {legacy.users[name][0]}", str(outcome.error))
            continue
        users[name] = outcome.user
        counts["users" if outcome.created else "users existing"] += 1
        report.note(f"user {name}: {'create' if outcome.created else 'exists, left as it is'}")

    # Blocks are worked out first: a blocked sender's messages are not delivered.
    block_entries: list[tuple[str, str, int | None]] = []  # (where, blocked name, index in block_pairs)
    block_pairs: list[tuple[UserModel, UserModel]] = []
    for name, file in legacy.files.items():
        if name not in users:
            continue
        for other in file.blocked:
            where = f"{users[name].username}.json blocked"
            if other not in users:
                block_entries.append((where, other, None))
                continue
            block_entries.append((where, other, len(block_pairs)))
            block_pairs.append((users[name], users[other]))
    block_plan = blocks_import(blocks=block_pairs, dry_run=True)
    planned = [pair for pair, r in zip(block_pairs, block_plan, strict=True) if r.created]

    # Messages.
    message_entries: list[tuple[str, str | None]] = []  # (where, why skipped): in order, to report
    wanted_messages: list[MessageImport] = []
    for name, file in legacy.files.items():
        if name not in users:
            continue
        recipient = users[name]
        for i, m in enumerate(file.messages, start=1):
            where = f"{recipient.username}.json message {i}"
            sender = users.get(m.sender)
            body = m.body.strip()
            if sender is None:
                message_entries.append((where, f"sender {m.sender} does not exist"))
            elif not body or len(body) > settings.CHAT_MAX_BODY_CHARS:
                message_entries.append((where, "empty or longer than the chat allows"))
            else:
                message_entries.append((where, None))
                wanted_messages.append(
                    MessageImport(sender=sender, recipient=recipient, body=body, sent_at=m.sent_at, kind=m.kind)
                )

    with transaction.atomic() if commit else contextlib.nullcontext():
        results = messages_import(
            messages=wanted_messages,
            blocks=planned,
            dry_run=not commit,
            progress=progress("writing messages") if progress and commit else None,
        )
        made = blocks_import(blocks=block_pairs) if commit else block_plan
    imported = iter(zip(wanted_messages, results, strict=True))
    for where, skipped in message_entries:
        if skipped is not None:
            report.skip(where, skipped)
            continue
        item, r = next(imported)
        counts["messages"] += r.created
        frm, to = item.sender.username, item.recipient.username
        if r.state == "blocked":
            report.skip(where, f"{to} blocks {frm}")
            continue
        counts["deliveries"] += r.state == "pending"
        report.note(f"{item.kind} from {frm} to {to}: {r.state}")
    for place, other, index in block_entries:
        if index is None:
            report.skip(place, f"{other} does not exist")
            continue
        b = made[index]
        if b.error:
            report.skip(place, b.error)
        elif b.created:
            counts["blocks"] += 1
            report.note(f"{block_pairs[index][0].username} blocks {other}")
        else:
            counts["blocks existing"] += 1
    return report
