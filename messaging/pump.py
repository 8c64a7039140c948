"""Background work of one server process, for the connections it holds.

One task a process (not one a connection) so the database sees a query per
tick, not per user: it refreshes the heartbeat of local presence rows, ends
local connections that lost their row, expires presence that dead processes
left anywhere, and pushes again what local users have not acked in time.

The registry below is connection bookkeeping, not business state: the
database stays the one truth of who is online.
"""

import asyncio
import logging

from django.conf import settings

from . import events, services

log = logging.getLogger("chat")


class Pump:
    def __init__(self):
        self.local = {}  # channel name -> user id, of logged-in connections here
        self.task = None
        self.cleared_dead = False

    async def startup(self):
        """Once a process, before its first login: clear what a crashed
        process on this host left behind."""
        if not self.cleared_dead:
            self.cleared_dead = True
            await self._safely(services.presence_clear_dead_processes, set(self.local))

    def register(self, channel_name, user_id):
        self.local[channel_name] = user_id
        if self.task is None or self.task.done() or self.task.get_loop() is not asyncio.get_running_loop():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def unregister(self, channel_name):
        self.local.pop(channel_name, None)

    async def _run(self):
        # Stops when the last local connection goes, so nothing lingers.
        while self.local:
            await asyncio.sleep(settings.CHAT_PUMP_SECONDS)
            if self.local:
                await self._safely(self.tick, list(self.local))

    async def _safely(self, func, *args):
        try:
            await events.call(func, *args)
        except Exception:
            log.exception("background %s failed", func.__name__)

    def tick(self, channel_names):
        for name in services.presence_heartbeat(channel_names=channel_names):
            self.unregister(name)
            events.push_session_ended(name, reason="Your connection expired; reconnect.")
        services.presence_expire()
        services.delivery_redeliver(channel_names=[n for n in channel_names if n in self.local])


pump = Pump()
