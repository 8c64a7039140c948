"""The channel layers: the in-memory one of the embedded default, without
the costs that Channels' own pays on every message, and channels_redis's
two (lists, and pub/sub) made to outlive a Redis restart.

Channels' ``InMemoryChannelLayer`` deep-copies every message it queues,
sweeps every channel and group for expired entries on every ``receive``
and ``group_send`` (a thousand connections make each message cost a
thousand checks), and sends to a group through one task per member. This
one sweeps at most once a second, queues group messages directly, and
shares one message among the members of a group: nothing in this project
changes an event after sending it or while handling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

import redis.exceptions
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer as ChannelsRedisPubSubChannelLayer
from channels_redis.pubsub import RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close, decode_hosts

from core import metrics
from core.queues import SlimQueue

log = logging.getLogger("chat")

# What Redis going away raises, through redis-py.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Outages:
    """Redis going away and coming back, logged once each and counted in
    ``outages`` (which tests watch), instead of a traceback a second."""

    outages = 0
    down = False

    def redis_down(self) -> None:
        if not self.down:
            self.down = True
            self.outages += 1
            metrics.layer_outages.inc()
            # One line, no traceback: the outage is the news, not the stack.
            log.warning("Redis is unreachable (%s); connections wait for it", sys.exc_info()[1])

    def redis_up(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis is back")


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):  # type: ignore[misc]  # no type hints in channels: its classes are Any
    sweep_interval = 1.0
    _swept_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at >= self.sweep_interval:
            self._swept_at = now
            super()._clean_expired()

    def _queue(self, channel: str) -> SlimQueue[tuple[float, dict[str, Any]]]:
        # A SlimQueue (core/queues.py), not an asyncio.Queue: every socket's
        # channel has one while it waits for an event, 2.4 KB each otherwise.
        queue: SlimQueue[tuple[float, dict[str, Any]]] | None = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = SlimQueue(maxsize=self.get_capacity(channel))
        return queue

    def _put(self, channel: str, message: dict[str, Any]) -> None:
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, message))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict[str, Any]:
        """Channels' receive, on a SlimQueue."""
        self.require_valid_channel_name(channel)
        self._clean_expired()
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._put(channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                self._put(channel, message)
            except ChannelFull:
                pass  # as Channels' layers do: a full channel misses group messages


class RedisChannelLayer(Outages, ChannelsRedisChannelLayer):  # type: ignore[misc]  # no type hints in channels_redis: its classes are Any
    """channels_redis's layer, whose receive waits out a Redis outage.

    channels_redis raises from ``receive`` when Redis goes away, and Channels
    then ends the consumer: a Redis restart would close every WebSocket of
    every process at once (1011), and their clients would all log in again.
    Here ``receive`` tries again every second instead. What was pushed
    meanwhile is lost, and pushed again from its pending delivery; the
    group memberships a restarted Redis forgot are joined again by the hub,
    which watches ``outages``.
    """

    retry_seconds = 1.0

    async def receive(self, channel: str) -> dict[str, Any]:
        while True:
            try:
                message: dict[str, Any] = await super().receive(channel)
            except REDIS_DOWN:
                self.redis_down()
                await asyncio.sleep(self.retry_seconds)
                continue
            self.redis_up()
            return message


class RedisPubSubChannelLayer(Outages, ChannelsRedisPubSubChannelLayer):  # type: ignore[misc]  # no type hints in channels_redis: its classes are Any
    """channels_redis's pub/sub layer: a group is a Redis channel that each
    process holding a member subscribes to once, and a message is one
    PUBLISH, delivered at once or never (no queue, capacity nor expiry in
    Redis; nothing to expire, so nothing to renew either).

    Through a Redis restart, redis-py reconnects the subscription and
    subscribes again to every channel and group it had (``PubSub.on_connect``),
    and ``receive`` waits on a local queue that an outage does not touch:
    connections stay open. What is published meanwhile is lost, and pushed
    again from its pending delivery. Here the outage is logged once (not a
    traceback a second) and counted in ``outages``, as the other layer does,
    and ``group_add`` of a channel that already ended (a connection closing
    while the hub renews its groups) does nothing instead of raising.
    """

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = self._layers[loop] = _PubSubLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
            return layer


class _PubSubLoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]  # no type hints in channels_redis: its classes are Any
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shards: list[RedisSingleShardConnection] = [
            _PubSubShard(host, self) for host in decode_hosts(kwargs.get("hosts", args[0] if args else None))
        ]

    async def _subscribe_to_channel(self, channel: str) -> None:
        try:
            await super()._subscribe_to_channel(channel)
        except BaseException:
            self.channels.pop(channel, None)  # Redis is down: the consumer does not start
            raise

    async def group_add(self, group: str, channel: str) -> None:
        if channel not in self.channels:
            return  # its receive ended: the connection is gone
        try:
            await super().group_add(group, channel)
        except BaseException:
            # Not subscribed (Redis is down): forget the member too, or a
            # later group_add would think it subscribed.
            members = self.groups.get(self._get_group_channel_name(group))
            if members is not None:
                members.discard(channel)
                if not members:
                    del self.groups[self._get_group_channel_name(group)]
            raise


class _PubSubShard(RedisSingleShardConnection):  # type: ignore[misc]  # no type hints in channels_redis: its classes are Any
    """One Redis connection's subscriptions. channels_redis's receiver polls
    every 0.1 s until the first subscription; this one is woken by it, so
    the first events of a process are not held back."""

    retry_seconds = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscribed = asyncio.Event()

    async def subscribe(self, channel: str) -> None:
        await super().subscribe(channel)
        self.subscribed.set()

    async def _do_receiving(self) -> None:
        proxy = self.channel_layer.channel_layer
        while True:
            try:
                if not (self._pubsub and self._pubsub.subscribed):
                    self.subscribed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.subscribed.wait(), self.retry_seconds)
                else:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    proxy.redis_up()
                    self._receive_message(message)
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN:
                proxy.redis_down()
                await asyncio.sleep(self.retry_seconds)
            except Exception:
                log.exception("channel layer: unexpected error receiving from Redis")
                await asyncio.sleep(self.retry_seconds)
