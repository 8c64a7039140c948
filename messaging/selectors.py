"""Messaging reads: who is online, who was around, blocks, history, conversations.

A user only ever sees messages sent by them or delivered to them (a
Delivery row): blocking drops pending rows, and with them the message.
"""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, F, Max, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Block, Delivery, Message, ReadMark
from .services import live_presence
from .wire import message_object, timestamp

User = get_user_model()


def online_usernames():
    return sorted(live_presence().values_list("user__username", flat=True))


def recent_users():
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


def blocked_usernames(*, user):
    return sorted(Block.objects.filter(blocker=user).values_list("blocked__username", flat=True))


def _visible_to(user):
    return Q(sender=user) | Exists(Delivery.objects.filter(message=OuterRef("pk"), recipient=user))


def conversation_messages(*, user, peer):
    """The messages of one conversation that `user` may see (peer None: broadcasts)."""
    if peer is None:
        return Message.objects.filter(_visible_to(user), kind=Message.Kind.BROADCAST)
    return Message.objects.filter(
        Q(sender=user, recipient=peer)
        | Q(sender=peer, recipient=user) & Exists(Delivery.objects.filter(message=OuterRef("pk"), recipient=user)),
        kind=Message.Kind.PRIVATE,
    )


def message_history(*, user, peer, before=None, limit=50):
    """Up to `limit` messages before id `before`, oldest first."""
    messages = conversation_messages(user=user, peer=peer)
    if before is not None:
        messages = messages.filter(id__lt=before)
    page = list(messages.select_related("sender", "recipient").order_by("-id")[:limit])
    return [message_object(m) for m in reversed(page)]


def conversation_list(*, user):
    """One entry per private peer and one for broadcasts, latest first."""
    last = {}  # peer id (None: broadcasts) -> last message id
    for row in Message.objects.filter(sender=user).values("recipient_id").annotate(m=Max("id")):
        last[row["recipient_id"]] = row["m"]
    received = Delivery.objects.filter(recipient=user)
    for row in received.values("message__kind", "message__sender_id").annotate(m=Max("message_id")):
        peer = row["message__sender_id"] if row["message__kind"] == Message.Kind.PRIVATE else None
        last[peer] = max(last.get(peer, 0), row["m"])

    mark = ReadMark.objects.filter(user=user, peer=OuterRef("message__sender")).values("up_to")[:1]
    unread = dict(
        received.filter(message__kind=Message.Kind.PRIVATE)
        .annotate(mark=Coalesce(Subquery(mark), Value(0)))
        .filter(message_id__gt=F("mark"))
        .values("message__sender_id")
        .annotate(n=Count("id"))
        .values_list("message__sender_id", "n")
    )
    broadcast_mark = ReadMark.objects.filter(user=user, peer=None).values_list("up_to", flat=True).first() or 0
    unread[None] = received.filter(message__kind=Message.Kind.BROADCAST, message_id__gt=broadcast_mark).count()

    messages = Message.objects.select_related("sender", "recipient").in_bulk(list(last.values()))
    names = dict(User.objects.filter(pk__in=[p for p in last if p is not None]).values_list("pk", "username"))
    return [
        {"with": names.get(peer) if peer is not None else None, "last": message_object(messages[mid]), "unread": unread.get(peer, 0)}
        for peer, mid in sorted(last.items(), key=lambda item: -item[1])
    ]
