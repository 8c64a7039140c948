"""The channel layers: the in-memory one of the embedded default, without
the costs that Channels' own pays on every message, and channels_redis's
made to outlive a Redis restart.

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
import logging
import time
from typing import Any

import redis.exceptions
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer

log = logging.getLogger("chat")


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    sweep_interval = 1.0
    _swept_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at >= self.sweep_interval:
            self._swept_at = now
            super()._clean_expired()

    def _put(self, channel: str, message: dict[str, Any]) -> None:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            queue.put_nowait((time.time() + self.expiry, message))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

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


class RedisChannelLayer(ChannelsRedisChannelLayer):
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outages = 0  # times Redis went away
        self.down = False

    async def receive(self, channel: str) -> dict[str, Any]:
        while True:
            try:
                message = await super().receive(channel)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                if not self.down:
                    self.down = True
                    self.outages += 1
                    log.warning("Redis is unreachable; connections wait for it", exc_info=True)
                await asyncio.sleep(self.retry_seconds)
                continue
            if self.down:
                self.down = False
                log.warning("Redis is back")
            return message
