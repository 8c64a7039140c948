"""The only module that knows channel-layer names and event types.

Services call the ``push_*`` functions inside their transaction. Every push
is deferred to ``on_commit``, so nobody hears of a change that could still
roll back. Async code runs services through ``run_then_push``: their pushes
are collected while the service runs in the database thread, then sent from
the event loop once it returns, so the database thread never waits on the
channel layer. Sync callers (admin, management commands) send at commit.

Where pushes go:

- ``chat.user.<id>``: the connections of one user (at most one logged in;
  a connection joins before it claims its presence, so nothing sent
  meanwhile is missed). Private messages, receipts, typing, edits.
- ``chat.hub``: one channel per server process (``messaging.hub``), which
  hands broadcasts and presence changes to its own connections. A
  broadcast to a thousand users is then one layer message per process,
  not a thousand.
- a channel name: one connection, to end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple, ParamSpec, TypeVar, cast

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from core import metrics
from core.errors import ServiceError

# Close codes for connections the server ends: the protocol's, shared with
# the terminal client.
from core.protocol import CLOSE_ENDED, CLOSE_REPLACED

from . import wire

log = logging.getLogger("chat")

HUB_GROUP = "chat.hub"

# Event types, as the consumer and the hub handle them (Channels maps
# "chat.frames" to the method chat_frames).
FRAMES = "chat.frames"  # forward frames to the client
END = "chat.end"  # forward a frame, then close with a code
HUB_FRAMES = "hub.frames"  # to every logged-in connection of a process, but some
HUB_PRESENCE = "hub.presence"  # a user came online or went offline


def user_group(user_id: int) -> str:
    return f"chat.user.{user_id}"


class Push(NamedTuple):
    """One channel-layer send: to a group or to one channel."""

    to: Literal["group", "channel"]
    target: str
    event: dict[str, Any]


async def subscribe(layer: Any, channel_name: str, user_id: int) -> None:
    await layer.group_add(user_group(user_id), channel_name)


async def unsubscribe(layer: Any, channel_name: str, user_id: int) -> None:
    await layer.group_discard(user_group(user_id), channel_name)


# --- Sending, after the commit ----------------------------------------------------

_local = threading.local()
_captures: list[list[Push]] = []


class LayerDown(Exception):
    """The channel layer failed a moment ago; pushes are skipped for a second."""


class Breaker:
    """After a failure (Redis unreachable), pushes fail at once for a second
    instead of each waiting on a connect timeout: the writer must not crawl,
    and what is lost is pushed again from the database. Owned, like the rest
    of a process's state, by ``messaging.runtime`` (which resets it)."""

    def __init__(self) -> None:
        self.down_until = 0.0

    def reset(self) -> None:
        self.down_until = 0.0

    def check(self) -> None:
        if time.monotonic() < self.down_until:
            raise LayerDown("the channel layer failed a moment ago")

    def tripped(self) -> None:
        self.down_until = time.monotonic() + 1.0


breaker = Breaker()


async def send(push: Push) -> None:
    """Send one push now, unless the breaker is open."""
    breaker.check()
    layer = get_channel_layer()
    started = time.perf_counter()
    try:
        if push.to == "group":
            await layer.group_send(push.target, push.event)
        else:
            await layer.send(push.target, push.event)
    except Exception:
        breaker.tripped()
        raise
    metrics.push_seconds.observe(time.perf_counter() - started)


def _emit(push: Push) -> None:
    for captured in _captures:
        captured.append(push)
    outbox = getattr(_local, "outbox", None)
    if outbox is not None:
        outbox.append(push)
    else:
        async_to_sync(send)(push)


def _after_commit(push: Push) -> None:
    transaction.on_commit(lambda: _emit(push))


@contextlib.contextmanager
def capture() -> Iterator[list[Push]]:
    """Record every push that goes out while the block runs (for tests).

    The pushes are still sent; the list shows what was pushed and in which
    order, after commit (as Zulip's ``capture_send_event_calls``).
    """
    pushes: list[Push] = []
    _captures.append(pushes)
    try:
        yield pushes
    finally:
        _captures.remove(pushes)


P = ParamSpec("P")
R = TypeVar("R")


async def run_then_push(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a sync service in the database thread, then send what it pushed.

    The pushes go out even when the service raises after a commit, and
    before the caller sees the result: a reply never overtakes the events
    of the change it reports. A push that fails (the channel layer is down)
    is logged, not raised: the change is committed, so reporting it failed
    would be false (and a retry would repeat it); a lost message is pushed
    again from its pending delivery. Shielded: a caller cancelled meanwhile
    (its socket closed) gets CancelledError, but the service still runs to
    its end and its pushes still go out, as nothing else would send them
    (a login's claim committed without its "online" left the user offline
    to everyone).
    """
    task = asyncio.ensure_future(_run_then_push(func, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_retrieved)
        raise


def _retrieved(task: asyncio.Future[Any]) -> None:
    """What a shielded run ended with, once nobody waits for it: a failure
    is logged (a refusal, ServiceError, is nobody's to hear)."""
    error = None if task.cancelled() else task.exception()
    if error is not None and not isinstance(error, ServiceError):
        log.warning("a service whose caller had gone failed", exc_info=error)


async def _run_then_push(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """run_then_push, unshielded."""

    def run() -> tuple[R | None, list[Push], BaseException | None]:
        outbox: list[Push] = []
        _local.outbox = outbox
        try:
            return func(*args, **kwargs), outbox, None
        except Exception as e:
            return None, outbox, e
        finally:
            _local.outbox = None

    done: tuple[R | None, list[Push], BaseException | None] = await database_sync_to_async(run)()
    result, outbox, error = done
    for push in outbox:
        try:
            await send(push)
        except Exception:
            log.warning("could not push %s to %s", push.event["type"], push.target, exc_info=True)
    if error is not None:
        raise error
    return cast(R, result)  # run() gives None for a result only with an error


# --- What services push -----------------------------------------------------------


def _to_user(user_id: int, frames: Sequence[Mapping[str, Any]]) -> None:
    _after_commit(Push("group", user_group(user_id), {"type": FRAMES, "frames": list(frames)}))


def push_message(message: wire.MessageEvent, *, user_id: int) -> None:
    """One message to one user's connection, if any."""
    _to_user(user_id, [message])


def push_messages(messages_by_user: dict[int, list[wire.MessageEvent]]) -> None:
    """Several messages (re-deliveries) to several users."""
    for user_id, frames in messages_by_user.items():
        _to_user(user_id, frames)


def push_frames(user_id: int, frames: Sequence[Mapping[str, Any]]) -> None:
    """Any other frames (receipts, edits) to one user's connection."""
    _to_user(user_id, frames)


def push_to_everyone(frames: Sequence[Mapping[str, Any]], *, exclude_user_ids: set[int]) -> None:
    """Frames to every logged-in connection but the excluded users'."""
    _after_commit(Push("group", HUB_GROUP, {"type": HUB_FRAMES, "frames": frames, "exclude": sorted(exclude_user_ids)}))


def push_presence(username: str, *, online: bool) -> None:
    _after_commit(Push("group", HUB_GROUP, {"type": HUB_PRESENCE, "username": username, "online": online}))


# Names in one presence event of many users (a process's stop, its restart).
PRESENCE_CHUNK = 1000


def push_presence_many(usernames: Sequence[str], *, online: bool) -> None:
    """The same change for many users: one hub event per PRESENCE_CHUNK
    names, not one each (a stopping process takes thousands offline)."""
    for i in range(0, len(usernames), PRESENCE_CHUNK):
        chunk = list(usernames[i : i + PRESENCE_CHUNK])
        _after_commit(Push("group", HUB_GROUP, {"type": HUB_PRESENCE, "usernames": chunk, "online": online}))


def push_session_replaced(channel_name: str) -> None:
    _after_commit(
        Push("channel", channel_name, {"type": END, "frame": {"type": "session_replaced"}, "code": CLOSE_REPLACED})
    )


EndAction = Literal["reconnect", "login", "stop"]


def session_ended_frame(reason: str, *, action: EndAction) -> dict[str, Any]:
    return {"type": "session_ended", "reason": reason, "action": action}


def push_session_ended(channel_name: str, *, reason: str, action: EndAction) -> None:
    """End one connection, telling the client what to do next: reconnect (its
    presence expired), log in again (its session ended, the password
    changed), or stop (an operator ended it, the account was deactivated)."""
    frame = session_ended_frame(reason, action=action)
    _after_commit(Push("channel", channel_name, {"type": END, "frame": frame, "code": CLOSE_ENDED}))


async def send_typing(recipient_id: int, *, sender: str, typing: bool) -> None:
    """Typing is not stored: nothing to commit, so it goes out at once, or
    not at all if the channel layer is down (the next one will do)."""
    frames = [wire.typing(sender, typing=typing)]
    try:
        await send(Push("group", user_group(recipient_id), {"type": FRAMES, "frames": frames}))
    except Exception:
        log.warning("could not push typing to user %s", recipient_id, exc_info=True)


def push_to_users(frames: Sequence[Mapping[str, Any]], *, user_ids: Collection[int]) -> None:
    """Frames to the connections of these users only, through each process's
    hub: a room message to a thousand members is one layer message per
    process, not a thousand."""
    if user_ids:
        _after_commit(
            Push("group", HUB_GROUP, {"type": HUB_FRAMES, "frames": list(frames), "include": sorted(user_ids)})
        )


def push_rooms(frames_by_user: Mapping[int, Sequence[Mapping[str, Any]]]) -> None:
    """`room` events, each member's own copy of the room object: per user."""
    for user_id, frames in frames_by_user.items():
        _to_user(user_id, frames)


async def send_typing_room(user_ids: Collection[int], *, sender: str, room_id: int, typing: bool) -> None:
    """Typing in a room, to its members online (not stored, as send_typing)."""
    if not user_ids:
        return
    frames = [wire.typing(sender, typing=typing, room_id=room_id)]
    try:
        await send(Push("group", HUB_GROUP, {"type": HUB_FRAMES, "frames": frames, "include": sorted(user_ids)}))
    except Exception:
        log.warning("could not push typing to room %s", room_id, exc_info=True)
