"""A small FIFO for the queues every connection keeps.

Each WebSocket has two queues for its whole life: daphne's input queue
(what the client sent, for the application to ``receive``) and its
channel's queue in the in-memory channel layer. ``asyncio.Queue`` costs
about 2.4 KB even empty: three deques (items, getters, putters) and an
``Event`` with a deque of its own, each deque allocating a block of 64
slots up front. At ten thousand idle connections that is 48 MB for queues
that are nearly always empty.

``SlimQueue`` keeps what those two uses need (``put_nowait``, ``get``,
``get_nowait``, ``qsize``, ``empty``, ``full``, a ``maxsize``; ``_queue``
for Channels' expiry sweep, which reads its first item) in about 200
bytes: the deque of items exists only while it holds any, and the waiting
getters list only while one waits. There is no ``put`` that waits nor
``join``/``task_done``: nothing here uses them.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_EMPTY: collections.deque[Any] = collections.deque(maxlen=0)  # shared, never holds anything


class SlimQueue(Generic[T]):
    __slots__ = ("_getters", "_queue", "maxsize")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._queue: collections.deque[T] = _EMPTY
        self._getters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._queue)

    def empty(self) -> bool:
        return not self._queue

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._queue)

    def put_nowait(self, item: T) -> None:
        if self.full():
            raise asyncio.QueueFull
        if self._queue is _EMPTY:
            self._queue = collections.deque()
        self._queue.append(item)
        self._wake_one()

    def get_nowait(self) -> T:
        if not self._queue:
            raise asyncio.QueueEmpty
        item = self._queue.popleft()
        if not self._queue:
            self._queue = _EMPTY  # the deque's block goes back
        return item

    async def get(self) -> T:
        while not self._queue:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                self._forget(getter)
                if self._queue and not getter.cancelled():
                    self._wake_one()  # it was woken, then cancelled: the next one takes the item
                raise
            self._forget(getter)
        return self.get_nowait()

    def _forget(self, getter: asyncio.Future[None]) -> None:
        if self._getters is not None:
            if getter in self._getters:
                self._getters.remove(getter)
            if not self._getters:
                self._getters = None

    def _wake_one(self) -> None:
        for getter in self._getters or ():
            if not getter.done():
                getter.set_result(None)
                return
