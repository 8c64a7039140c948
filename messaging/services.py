"""Messaging writes: messages, deliveries, blocks, presence, read marks.

Every function commits first and pushes after (``events`` defers pushes to
``on_commit``). Errors are ServiceError with a protocol error code.
"""

import logging
import math
import os
import socket
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from chatsite.errors import ServiceError

from . import events
from .models import Block, Delivery, Message, Presence, ReadMark

User = get_user_model()
log = logging.getLogger("chat")

# Who this server process is, for the presence rows of its connections.
HOST = socket.gethostname()[:255]
PID = os.getpid()


def online_cutoff(now=None):
    """Presence rows with an older heartbeat belong to dead processes."""
    return (now or timezone.now()) - timedelta(seconds=settings.CHAT_PRESENCE_TIMEOUT_SECONDS)


def live_presence(now=None):
    return Presence.objects.filter(heartbeat_at__gte=online_cutoff(now))


def user_by_name(username):
    """The active user called `username`, or ServiceError unknown_user."""
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise ServiceError("unknown_user", f"There is no user {username!r}.")
    return user


# --- Presence -----------------------------------------------------------------


def presence_claim(*, user, channel_name, takeover=False):
    """Make `channel_name` the user's one live connection.

    Raises already_online when a live connection holds it and `takeover` is
    false; with `takeover`, the old connection is told and closed. A row left
    by a dead connection (stale heartbeat) is simply replaced.
    """
    now = timezone.now()
    fields = {"channel_name": channel_name, "host": HOST, "pid": PID, "connected_at": now, "heartbeat_at": now}
    for _ in range(3):
        with transaction.atomic():
            try:
                with transaction.atomic():
                    Presence.objects.create(user=user, **fields)
                replaced = None
                came_online = True
            except IntegrityError:
                row = Presence.objects.select_for_update().filter(user=user).first()
                if row is None:
                    continue  # released meanwhile: try the insert again
                alive = row.heartbeat_at >= online_cutoff(now)
                if alive and not takeover:
                    raise ServiceError(
                        "already_online", "You are already connected elsewhere; log in with takeover to move here."
                    ) from None
                replaced = row.channel_name
                came_online = not alive
                for name, value in fields.items():
                    setattr(row, name, value)
                row.save()
            User.objects.filter(pk=user.pk).update(last_login=now)
            if replaced:
                events.push_session_replaced(replaced)
            if came_online:
                events.push_presence(user.username, online=True)
            return replaced
    raise ServiceError("already_online", "Could not claim the connection; try again.")


def presence_release(*, user, channel_name):
    """Forget this connection; the user goes offline if it was theirs."""
    now = timezone.now()
    with transaction.atomic():
        deleted, _ = Presence.objects.filter(user=user, channel_name=channel_name).delete()
        if deleted:
            User.objects.filter(pk=user.pk).update(last_seen=now)
            events.push_presence(user.username, online=False)
    return bool(deleted)


def presence_disconnect(*, user, reason="An administrator ended your session."):
    """End the user's live connection, wherever it is (admin action)."""
    with transaction.atomic():
        row = Presence.objects.select_for_update().filter(user=user).first()
        if row is None:
            return False
        channel_name = row.channel_name
        row.delete()
        User.objects.filter(pk=user.pk).update(last_seen=timezone.now())
        events.push_session_ended(channel_name, reason=reason)
        events.push_presence(user.username, online=False)
    return True


def presence_expire():
    """Remove presence whose heartbeat stopped (a dead process); notify offline."""
    now = timezone.now()
    cutoff = online_cutoff(now)
    expired = []
    for row in Presence.objects.filter(heartbeat_at__lt=cutoff).select_related("user"):
        with transaction.atomic():
            deleted, _ = Presence.objects.filter(pk=row.pk, heartbeat_at__lt=cutoff).delete()
            if deleted:
                User.objects.filter(pk=row.pk).update(last_seen=row.heartbeat_at)
                events.push_presence(row.user.username, online=False)
                expired.append(row.user.username)
    return expired


def presence_clear_dead_processes(keep=()):
    """At server start: drop what a crashed process on this host left behind.

    A row of this host whose process no longer runs (or whose pid is ours
    but whose channel is not in `keep`: an earlier process had our pid) is
    dead for sure; rows of other hosts are left to the heartbeat expiry.
    """
    dead = []
    for row in Presence.objects.filter(host=HOST).only("pk", "pid", "channel_name"):
        if (row.pid == PID and row.channel_name not in keep) or not _pid_alive(row.pid):
            dead.append(row.pk)
    now = timezone.now()
    cleared = []
    for row in Presence.objects.filter(pk__in=dead).select_related("user"):
        with transaction.atomic():
            if Presence.objects.filter(pk=row.pk, channel_name=row.channel_name).delete()[0]:
                User.objects.filter(pk=row.pk).update(last_seen=now)
                events.push_presence(row.user.username, online=False)
                cleared.append(row.user.username)
    return cleared


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def presence_heartbeat(*, channel_names):
    """Refresh this process's connections; return the names that lost their row.

    A connection without a row was taken over or expired: it must close.
    """
    now = timezone.now()
    names = list(channel_names)
    alive = set()
    for i in range(0, len(names), 500):
        chunk = names[i : i + 500]
        Presence.objects.filter(channel_name__in=chunk).update(heartbeat_at=now)
        alive.update(Presence.objects.filter(channel_name__in=chunk).values_list("channel_name", flat=True))
    return [name for name in names if name not in alive]


# --- Messages -----------------------------------------------------------------


def _clean_body(body):
    body = body.strip()
    if not body:
        raise ServiceError("invalid", "The message is empty.")
    if len(body) > settings.CHAT_MAX_BODY_CHARS:
        raise ServiceError("invalid", f"The message is longer than {settings.CHAT_MAX_BODY_CHARS} characters.")
    return body


def _check_rate(sender, now):
    limit, window = settings.CHAT_RATE_LIMIT_COUNT, settings.CHAT_RATE_LIMIT_SECONDS
    if limit <= 0:
        return
    recent = Message.objects.filter(sender=sender, sent_at__gt=now - timedelta(seconds=window))
    times = list(recent.order_by("-sent_at").values_list("sent_at", flat=True)[:limit])
    if len(times) >= limit:
        retry_after = max(1, math.ceil((times[-1] + timedelta(seconds=window) - now).total_seconds()))
        raise ServiceError(
            "rate_limited", f"Too many messages. Try again in {retry_after} seconds.", retry_after=retry_after
        )


def message_send(*, sender, to_username, body, rate_limit=True):
    """Store a private message; return (message, True if the recipient is online).

    `rate_limit=False` is for operators' tools (seeding), never for users.
    """
    if to_username == sender.username:
        raise ServiceError("invalid", "You cannot send a message to yourself.")
    body = _clean_body(body)
    with transaction.atomic():
        now = timezone.now()
        # One query for the recipient, whether they block the sender, and
        # whether they are online: this is the hot path.
        recipient = (
            User.objects.filter(username=to_username, is_active=True)
            .annotate(
                blocks_sender=Exists(Block.objects.filter(blocker=OuterRef("pk"), blocked=sender)),
                online=Exists(live_presence(now).filter(user=OuterRef("pk"))),
            )
            .only("pk", "username")
            .first()
        )
        if recipient is None:
            raise ServiceError("unknown_user", f"There is no user {to_username!r}.")
        if recipient.blocks_sender:
            raise ServiceError("blocked", f"{recipient.username} does not accept your messages.")
        if rate_limit:
            _check_rate(sender, now)
        message = Message.objects.create(
            kind=Message.Kind.PRIVATE, sender=sender, recipient=recipient, body=body, sent_at=now
        )
        Delivery.objects.create(message=message, recipient=recipient, pushed_at=now if recipient.online else None)
        events.push_message(message, user_id=recipient.pk)
    return message, recipient.online


def message_broadcast(*, sender, body):
    """Store a broadcast for everyone but the sender and those blocking them.

    Returns (message, live count, stored count).
    """
    body = _clean_body(body)
    with transaction.atomic():
        now = timezone.now()
        _check_rate(sender, now)
        message = Message.objects.create(kind=Message.Kind.BROADCAST, sender=sender, body=body, sent_at=now)
        blockers = set(Block.objects.filter(blocked=sender).values_list("blocker_id", flat=True))
        recipients = [
            pk
            for pk in User.objects.filter(is_active=True).exclude(pk=sender.pk).values_list("pk", flat=True)
            if pk not in blockers
        ]
        online = set(live_presence(now).values_list("user_id", flat=True))
        Delivery.objects.bulk_create(
            [Delivery(message=message, recipient_id=pk, pushed_at=now if pk in online else None) for pk in recipients],
            batch_size=2000,
        )
        live = sum(1 for pk in recipients if pk in online)
        events.push_broadcast(message, exclude_user_ids=blockers | {sender.pk})
    return message, live, len(recipients) - live


def delivery_ack(*, user, ids):
    """Mark these messages delivered to `user`; unknown or done ids are ignored."""
    return Delivery.objects.filter(recipient=user, message_id__in=ids, acked_at__isnull=True).update(
        acked_at=timezone.now()
    )


def delivery_flush(*, user):
    """Every message pending for `user`, oldest first, marked as pushed now."""
    with transaction.atomic():
        pending = Delivery.objects.filter(recipient=user, acked_at__isnull=True)
        messages = [
            d.message
            for d in pending.select_related("message__sender", "message__recipient").order_by("message_id")
        ]
        pending.update(pushed_at=timezone.now())
    return messages


def delivery_redeliver(*, channel_names, limit=1000):
    """Push again what users connected here have not acked in time.

    The channel layer may drop a push under load; the pending row stays, so
    this is what makes a live recipient get it after all.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.CHAT_REDELIVER_SECONDS)
    names = list(channel_names)
    by_user = defaultdict(list)
    with transaction.atomic():
        for i in range(0, len(names), 500):
            due = Delivery.objects.filter(
                Q(pushed_at__lt=cutoff) | Q(pushed_at__isnull=True, message__sent_at__lt=cutoff),
                acked_at__isnull=True,
                recipient__presence__channel_name__in=names[i : i + 500],
            ).select_related("message__sender", "message__recipient")
            rows = list(due.order_by("message_id")[:limit])
            if not rows:
                continue
            Delivery.objects.filter(pk__in=[d.pk for d in rows]).update(pushed_at=now)
            for d in rows:
                by_user[d.recipient_id].append((d.message, d.pushed_at is None))
        events.push_messages(by_user)
    return sum(len(v) for v in by_user.values())


def message_import(*, sender, recipients, body, sent_at, kind=Message.Kind.PRIVATE):
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
        if created:
            message = Message.objects.create(**fields)
        have = set(Delivery.objects.filter(message=message).values_list("recipient_id", flat=True))
        new = [Delivery(message=message, recipient=r) for r in recipients if r.pk not in have]
        Delivery.objects.bulk_create(new)
    return message, created, len(new)


# --- Blocks -------------------------------------------------------------------


def block_create(*, blocker, username):
    """Block `username`: nothing more from them reaches `blocker`, and what of
    theirs is still pending for `blocker` is dropped."""
    if username == blocker.username:
        raise ServiceError("invalid", "You cannot block yourself.")
    with transaction.atomic():
        blocked = user_by_name(username)
        try:
            with transaction.atomic():
                block = Block.objects.create(blocker=blocker, blocked=blocked)
        except IntegrityError:
            raise ServiceError("already_blocked", f"You already block {blocked.username}.") from None
        Delivery.objects.filter(recipient=blocker, message__sender=blocked, acked_at__isnull=True).delete()
    return block


def block_delete(*, blocker, username):
    with transaction.atomic():
        blocked = user_by_name(username)
        deleted, _ = Block.objects.filter(blocker=blocker, blocked=blocked).delete()
        if not deleted:
            raise ServiceError("not_blocked", f"You do not block {blocked.username}.")
    return blocked


# --- Read marks ---------------------------------------------------------------


def conversation_read(*, user, peer, up_to):
    """Mark the conversation with `peer` (None: broadcasts) read up to `up_to`.

    The mark only moves forward.
    """
    with transaction.atomic():
        mark, created = ReadMark.objects.get_or_create(user=user, peer=peer, defaults={"up_to": up_to})
        if not created and up_to > mark.up_to:
            ReadMark.objects.filter(pk=mark.pk, up_to__lt=up_to).update(up_to=up_to)
