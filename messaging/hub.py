"""The connections of one server process, and what reaches all of them.

Each process has one channel in the ``chat.hub`` group. A broadcast or a
presence change is one channel-layer message per process, which the hub
hands to each of its logged-in connections: a thousand users online cost a
thousand socket writes, not a thousand channel-layer messages (on Redis, a
thousand list pushes) and a thousand receive loops.

Presence comes two ways. A connection that asked for it at login gets
``presence_batch`` frames with every change since the last, at most one
per ``batch_interval``: CHAT_PRESENCE_BATCH_SECONDS, stretched as more
connections here listen, so that a login storm of N users costs each
connection a bounded number of frames and all of them about N frames, not
N squared. Other connections get one
``presence`` event per change, as protocol 1.0 says.

The registry is bookkeeping of the sockets this process holds, not business
state: who is online is the database's to say.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from . import events, frames, wire

log = logging.getLogger("chat")

# How often the hub joins its connections' user groups again: the core
# Redis layer forgets a member after a day (channels_redis's group_expiry).
# The pub/sub layer keeps memberships in the process (and redis-py renews
# its subscriptions after a reconnect): joining again changes nothing there.
USER_GROUPS_REFRESH_SECONDS = 3600


class Connection(Protocol):
    channel_name: str
    user_id: int | None
    presence_batched: bool
    logged_in: bool
    flushing: bool  # pushing what waited at login

    def deliver(self, texts: list[str], message_ids: Sequence[int | None] | None = None) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        # Those that take presence one event per change (protocol 1.0): a
        # presence event walks these, not every connection (at 10,000
        # batched connections, walking them all for each of 10,000 logins
        # was a hundred million steps of the event loop).
        self.plain: dict[str, Connection] = {}
        self.channel: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.changes: dict[str, bool] = {}  # username -> online, since the last batch
        self.batch_task: asyncio.Task[None] | None = None
        self.starting: asyncio.Lock | None = None
        self.outages_seen = 0  # the layer's count when the user groups were last joined
        self.users_refreshed_at = time.monotonic()

    async def join(self, connection: Connection) -> None:
        """Register a connection that is logging in, before it claims its
        presence, so it misses no broadcast."""
        self.add(connection)
        await self._start()

    def add(self, connection: Connection) -> None:
        """Register it (join's first half; its presence_batched is set by then)."""
        self.connections[connection.channel_name] = connection
        if not connection.presence_batched:
            self.plain[connection.channel_name] = connection

    def leave(self, connection: Connection) -> None:
        self.connections.pop(connection.channel_name, None)
        self.plain.pop(connection.channel_name, None)
        if not self.connections:
            self.stop()

    def channel_names(self, *, flushing: bool = True) -> list[str]:
        """The connections that hold their user's presence (not those still
        claiming it: the heartbeat would find no row and end them); with
        `flushing` False, not those still pushing what waited at login."""
        return [
            name
            for name, connection in self.connections.items()
            if connection.logged_in and (flushing or not connection.flushing)
        ]

    async def _start(self) -> None:
        if self.starting is None:
            self.starting = asyncio.Lock()
        async with self.starting:
            if self.task is None or self.task.done():
                layer = get_channel_layer()
                channel = await layer.new_channel()
                await layer.group_add(events.HUB_GROUP, channel)
                self.channel = channel
                self.task = asyncio.get_running_loop().create_task(self._receive(layer, channel))

    def stop(self) -> None:
        """With no connection left, nothing needs to hear anything: leave the
        group and stop (a later login starts again)."""
        for task in (self.task, self.batch_task):
            if task is not None and not task.done():
                task.cancel()
        if self.channel is not None:
            asyncio.get_running_loop().create_task(self._discard(self.channel))
        self.task = self.batch_task = self.channel = None
        self.changes = {}

    @staticmethod
    async def _discard(channel: str) -> None:
        try:
            await get_channel_layer().group_discard(events.HUB_GROUP, channel)
        except Exception:
            log.warning("hub: could not leave its group", exc_info=True)

    async def refresh(self) -> None:
        """Stay in the groups: the hub's, every tick (channel layers expire
        memberships); each connection's user group after the layer lost
        Redis (a restarted Redis has forgotten every group), and hourly."""
        if self.channel is None:
            return
        layer = get_channel_layer()
        await layer.group_add(events.HUB_GROUP, self.channel)
        outages = getattr(layer, "outages", 0)
        if outages == self.outages_seen and time.monotonic() - self.users_refreshed_at < USER_GROUPS_REFRESH_SECONDS:
            return
        for name, connection in list(self.connections.items()):
            if connection.user_id is not None and name in self.connections:
                await events.subscribe(layer, name, connection.user_id)
        self.outages_seen, self.users_refreshed_at = outages, time.monotonic()

    async def _receive(self, layer: Any, channel: str) -> None:
        while True:
            try:
                event = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hub: the channel layer failed; retrying")
                await asyncio.sleep(1)
                continue
            try:
                self.dispatch(event)
            except Exception:
                log.exception("hub: could not dispatch %s", event.get("type"))

    def dispatch(self, event: dict[str, Any]) -> None:
        if event["type"] == events.HUB_FRAMES:
            exclude = set(event.get("exclude", ()))
            # Frames for some users only (a room's members), or for all but some.
            include = set(event["include"]) if "include" in event else None
            texts = [frames.encode(frame) for frame in event["frames"]]
            ids = [wire.message_id_of(frame) for frame in event["frames"]]
            for connection in list(self.connections.values()):
                if connection.user_id not in exclude and (include is None or connection.user_id in include):
                    connection.deliver(texts, ids)
        elif event["type"] == events.HUB_PRESENCE:
            # One user's change, or the same change for many (push_presence_many).
            names: list[str] = event["usernames"] if "usernames" in event else [event["username"]]
            online = event["online"]
            if self.plain:
                one_by_one = [frames.encode(dict(wire.presence(name, online=online))) for name in names]
                for connection in list(self.plain.values()):
                    connection.deliver(one_by_one)
            if len(self.plain) < len(self.connections):  # some take them batched
                self.changes.update(dict.fromkeys(names, online))
                if self.batch_task is None or self.batch_task.done():
                    self.batch_task = asyncio.get_running_loop().create_task(self._send_batch())

    async def _send_batch(self) -> None:
        listeners = sum(1 for connection in self.connections.values() if connection.presence_batched)
        await asyncio.sleep(batch_interval(listeners))
        changes, self.changes = self.changes, {}
        frame: wire.PresenceBatch = {
            "type": "presence_batch",
            "online": sorted(name for name, online in changes.items() if online),
            "offline": sorted(name for name, online in changes.items() if not online),
        }
        text = frames.encode(dict(frame))
        for connection in list(self.connections.values()):
            if connection.presence_batched:
                connection.deliver([text])


def batch_interval(listeners: int) -> float:
    """Seconds between presence_batch frames with `listeners` connections
    taking them: CHAT_PRESENCE_BATCH_SECONDS, times one more for every
    CHAT_PRESENCE_BATCH_USERS of them, at most CHAT_PRESENCE_BATCH_MAX_SECONDS.
    A storm of N logins lasts about N / (logins a second); a listener gets a
    frame per interval, so N / CHAT_PRESENCE_BATCH_USERS per interval keeps
    its frames (and all frames over N) bounded as N grows."""
    base = settings.CHAT_PRESENCE_BATCH_SECONDS
    stretched = base * max(1.0, listeners / max(1, settings.CHAT_PRESENCE_BATCH_USERS))
    return min(stretched, max(base, settings.CHAT_PRESENCE_BATCH_MAX_SECONDS))
