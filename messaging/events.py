"""The only module that knows channel-layer names and event types.

Services call the ``push_*`` functions inside their transaction; every push
is deferred to ``on_commit``, so nobody hears of a change that could still
roll back. The consumer joins and leaves groups through ``subscribe`` and
``unsubscribe`` and handles the two event types sent here: ``chat.frames``
(forward frames to the client) and ``chat.end`` (forward a frame, then close).

Async code runs services through ``call``: their pushes are then sent from
the event loop once the service returns, so a database thread never waits
on the channel layer (nor on a loop that is shutting down). Sync callers
(admin, management commands) send at commit.
"""

import threading

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

_local = threading.local()

from .wire import message_object

ONLINE_GROUP = "chat.online"

# Close codes for connections the server ends.
CLOSE_REPLACED = 4001
CLOSE_ENDED = 4003


def user_group(user_id):
    return f"chat.user.{user_id}"


def message_frame(message, *, stored):
    return {"type": "message", **message_object(message), "stored": stored}


async def subscribe(channel_layer, channel_name, user_id):
    await channel_layer.group_add(user_group(user_id), channel_name)
    await channel_layer.group_add(ONLINE_GROUP, channel_name)


async def unsubscribe(channel_layer, channel_name, user_id):
    await channel_layer.group_discard(user_group(user_id), channel_name)
    await channel_layer.group_discard(ONLINE_GROUP, channel_name)


async def _deliver(item):
    method, target, event = item
    layer = get_channel_layer()
    await (layer.group_send(target, event) if method == "group" else layer.send(target, event))


def _after_commit(item):
    def run():
        outbox = getattr(_local, "outbox", None)
        if outbox is not None:
            outbox.append(item)
        else:
            async_to_sync(_deliver)(item)

    transaction.on_commit(run)


def _group_send(group, event):
    _after_commit(("group", group, event))


def _send(channel_name, event):
    _after_commit(("channel", channel_name, event))


async def call(func, *args, parallel=False, **kwargs):
    """Run a sync service in the database thread, then send what it pushed.

    `parallel=True` runs it in a thread of its own instead, for slow work
    such as password hashing that must not hold up everyone else's requests.
    """

    def run():
        _local.outbox = outbox = []
        try:
            return func(*args, **kwargs), outbox, None
        except Exception as e:
            return None, outbox, e
        finally:
            _local.outbox = None

    runner = database_sync_to_async(run, thread_sensitive=not parallel)
    result, outbox, error = await runner()
    for item in outbox:
        await _deliver(item)
    if error is not None:
        raise error
    return result


def push_message(message, *, user_id, stored=False):
    """Push one message to one user's live connection, if any."""
    _group_send(user_group(user_id), {"type": "chat.frames", "frames": [message_frame(message, stored=stored)]})


def push_messages(messages_by_user):
    """Push several messages (re-deliveries): {user_id: [(message, stored), ...]}."""
    for user_id, items in messages_by_user.items():
        frames = [message_frame(m, stored=s) for m, s in items]
        _group_send(user_group(user_id), {"type": "chat.frames", "frames": frames})


def push_broadcast(message, *, exclude_user_ids):
    """Push a broadcast to every logged-in connection but the excluded users'."""
    _group_send(
        ONLINE_GROUP,
        {
            "type": "chat.frames",
            "frames": [message_frame(message, stored=False)],
            "exclude": sorted(exclude_user_ids),
        },
    )


def push_presence(username, *, online):
    _group_send(
        ONLINE_GROUP,
        {"type": "chat.frames", "frames": [{"type": "presence", "username": username, "online": online}]},
    )


def push_session_replaced(channel_name):
    _send(channel_name, {"type": "chat.end", "frame": {"type": "session_replaced"}, "code": CLOSE_REPLACED})


def push_session_ended(channel_name, *, reason):
    """End a connection for an operator or because its presence expired."""
    _send(
        channel_name,
        {"type": "chat.end", "frame": {"type": "session_ended", "reason": reason}, "code": CLOSE_ENDED},
    )
