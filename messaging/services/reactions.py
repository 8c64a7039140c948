"""Reactions (protocol 1.2): an emoji per user per message, on or off.

Nothing is pending for a reaction: those online who can see the message
are told when something changed, the others see it in history.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User as UserModel
from core.errors import ServiceError

from .. import events, wire
from ..models import Message, Reaction
from ..selectors import message_viewers_online, visible_message

EMOJI_MAX = 32


def clean_emoji(emoji: str) -> str:
    if not 1 <= len(emoji) <= EMOJI_MAX or any(c.isspace() for c in emoji):
        raise ServiceError("invalid", f"An emoji is 1 to {EMOJI_MAX} characters without white space.")
    return emoji


def message_react(*, user: UserModel, message_id: int, emoji: str, on: bool = True) -> bool:
    """Put `user`'s `emoji` on a message they can see in history, or take it
    back; whether anything changed (a repeat changes nothing and is fine)."""
    emoji = clean_emoji(emoji)
    with transaction.atomic():
        message = visible_message(user=user, message_id=message_id)
        mine = Reaction.objects.filter(message=message, user=user, emoji=emoji)
        if on:
            # A reaction taken back is kept inactive (its emoji keeps its
            # place): putting it back makes it active again.
            if mine.filter(active=False).update(active=True):
                changed = True
            else:
                try:
                    with transaction.atomic():
                        changed = not mine.exists()
                        if changed:
                            Reaction.objects.create(message=message, user=user, emoji=emoji, created_at=timezone.now())
                except IntegrityError:  # the same reaction, a moment earlier elsewhere
                    changed = False
        else:
            changed = mine.filter(active=True).update(active=False) > 0
        if changed:
            _tell(message, wire.reaction(message.pk, emoji=emoji, by=user.username, on=on))
    return changed


def _tell(message: Message, frame: wire.ReactionEvent) -> None:
    events.push_to_users([frame], user_ids=message_viewers_online(message))
