"""Background work of one server process, for the connections it holds.

One task a process (not one a connection), so the database sees a query per
tick, not per user. Each step is one service: the heartbeat of this
process's presence rows (``presence_tick``), ending connections whose login
no longer holds (``presence_sessions_check``, less often: most such ends
come as they happen, from messaging.receivers), the re-push of what its users
have not acked (``delivery_redeliver``), and now and then the clean-up of
old rows (``records_prune``). The runtime starts and stops it; a tick with
no connection here does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings

from . import events, services

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("chat")


class Pump:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.task: asyncio.Task[None] | None = None
        self.pruned_at: float | None = None  # never yet: at the first tick
        self.checked_at: float | None = None  # the sessions check: at the first tick
        self.ticked_at = 0.0  # the last tick that reached the database
        self.quiet_until = 0.0  # no expiring of others before this
        # Connections whose login held at the last check, and on what: a
        # cache of verdicts (presence_sessions_check), not business state.
        self.verified: dict[str, int] = {}

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(settings.CHAT_PUMP_SECONDS)
            try:
                await self.tick()
            except Exception:
                log.exception("background tick failed")

    async def tick(self) -> None:
        hub = self.hub
        names = hub.channel_names()
        if not names:
            return
        # The groups first: after a Redis restart, the re-push must find them.
        try:
            await hub.refresh()
        except Exception:
            log.warning("hub: could not renew its channel-layer groups", exc_info=True)
        # After a gap (the database was down, the process was stopped) long
        # enough that other processes' live rows may have aged past the
        # timeout too, wait one timeout before expiring anyone's. A live row
        # is up to a third of the timeout and a tick old when the gap starts
        # (presence_tick writes it again only then). Never below a tick and
        # a half: a usual tick is no outage, or nothing would ever expire.
        now = time.monotonic()
        timeout, tick = settings.CHAT_PRESENCE_TIMEOUT_SECONDS, settings.CHAT_PUMP_SECONDS
        if self.ticked_at and now - self.ticked_at > max(timeout * 2 / 3 - tick, tick * 1.5):
            self.quiet_until = now + timeout
        if await self._safely(services.presence_tick, channel_names=names, expire=now >= self.quiet_until):
            self.ticked_at = now
        # The safety net: a logout or a saved account ends its socket at once
        # (messaging.receivers); this finds expiries and silent changes.
        if self.checked_at is None or now - self.checked_at >= settings.CHAT_SESSIONS_CHECK_SECONDS:
            self.checked_at = now
            await self._safely(
                services.presence_sessions_check, channel_names=hub.channel_names(), verified=self.verified
            )
        await self._safely(services.delivery_redeliver, channel_names=hub.channel_names(flushing=False))
        # The monotonic clock counts from boot: "0" would wait for a machine
        # up less than CHAT_PRUNE_SECONDS.
        if self.pruned_at is None or time.monotonic() - self.pruned_at > settings.CHAT_PRUNE_SECONDS:
            self.pruned_at = time.monotonic()
            await self._safely(services.records_prune)

    async def _safely(self, func: Callable[..., Any], **kwargs: Any) -> bool:
        try:
            await events.run_then_push(func, **kwargs)
        except Exception:
            log.exception("background %s failed", func.__name__)
            return False
        return True
