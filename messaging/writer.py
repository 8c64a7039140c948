"""Group commit: one writer per server process.

Consumers hand their sends, broadcasts, acks, read marks and logins'
claims to the writer and wait for their own result. While one batch is being committed, the
next one gathers; it then goes to the database in one transaction
(``services.requests_apply``). Under load, batches form by themselves;
when the server is idle, a request is a batch of one and waits for nobody.

The delivery guarantee is unchanged: a message is committed before its
``ok``, and pushes go out after the commit (``events.run_then_push`` sends
them before the results are handed back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from core import metrics
from core.errors import ServiceError

from . import events, services

log = logging.getLogger("chat")

MAX_BATCH = 500  # sends, broadcasts, room messages, read marks, claims
# A broadcast writes a row per user: a few per batch, so the requests behind
# them wait for a few thousand rows, not for every queued broadcast.
MAX_BROADCASTS_PER_BATCH = 4
# Acks go beside those, not in front of them: a broadcast to 10,000 online
# comes back as 10,000 acks, and a send queued behind them must not wait
# for twenty batches. A batch of acks alone takes MAX_ACKS_PER_BATCH (acks
# of one message are one UPDATE: services.deliveries_ack), one with a send
# or a broadcast MAX_ACKS_BESIDE: at 10,000 online, with the event loop
# busy, a batch of 5,000 acks held the database thread 0.4-1.5 s, and the
# broadcast that came meanwhile waited for it (docs/performance.md, item 5).
MAX_ACKS_PER_BATCH = 1000
MAX_ACKS_BESIDE = 500


class Writer:
    def __init__(self) -> None:
        self.queue: list[tuple[services.BatchRequest, asyncio.Future[Any]]] = []
        self.task: asyncio.Task[None] | None = None

    async def submit(self, request: services.BatchRequest) -> Any:
        """Apply one request; its result, or its ServiceError raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.queue.append((request, future))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        return await future

    async def drain(self) -> None:
        """Wait for what was handed over to be committed (at shutdown)."""
        while self.task is not None and not self.task.done():
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        # Let the requests that arrive in this turn of the loop join the first batch.
        await asyncio.sleep(0)
        while self.queue:
            await self._commit(self._next_batch())

    def _next_batch(self) -> list[tuple[services.BatchRequest, asyncio.Future[Any]]]:
        """What the next transaction applies: the oldest requests, up to
        MAX_BATCH of them (MAX_BROADCASTS_PER_BATCH broadcasts), and beside
        them up to MAX_ACKS_BESIDE acks, however many came first; with
        nothing but acks waiting, up to MAX_ACKS_PER_BATCH of them."""
        batch: list[tuple[services.BatchRequest, asyncio.Future[Any]]] = []
        rest: list[tuple[services.BatchRequest, asyncio.Future[Any]]] = []
        broadcasts = others = acks = 0
        alone = all(isinstance(item[0], services.AckRequest) for item in self.queue)
        most_acks = MAX_ACKS_PER_BATCH if alone else MAX_ACKS_BESIDE
        for item in self.queue:
            if isinstance(item[0], services.AckRequest):
                taken = acks < most_acks
                acks += taken
            else:
                is_broadcast = isinstance(item[0], services.BroadcastRequest)
                taken = others < MAX_BATCH and not (is_broadcast and broadcasts >= MAX_BROADCASTS_PER_BATCH)
                others += taken
                broadcasts += taken and is_broadcast
            (batch if taken else rest).append(item)
        self.queue = rest
        return batch

    async def _apart(self, requests: list[services.BatchRequest]) -> list[Any]:
        """One request broke the batch's transaction: apply the others one
        by one, so only that one fails. Acks go together (thousands of
        them, which fail only with the database): one transaction, and one
        traceback in the log if it fails."""
        results: list[Any] = [None] * len(requests)
        acks = [i for i, request in enumerate(requests) if isinstance(request, services.AckRequest)]
        others = [[i] for i, request in enumerate(requests) if not isinstance(request, services.AckRequest)]
        groups = ([acks] if acks else []) + others
        for group in groups:
            try:
                done = await events.run_then_push(services.requests_apply, requests=[requests[i] for i in group])
            except Exception as e:
                log.exception("request failed")
                done = [e] * len(group)
            for i, result in zip(group, done, strict=True):
                results[i] = result
        return results

    async def _commit(self, batch: list[tuple[services.BatchRequest, asyncio.Future[Any]]]) -> None:
        requests = [request for request, _ in batch]
        metrics.batch_size.observe(len(requests))
        started = time.perf_counter()
        try:
            results = await events.run_then_push(services.requests_apply, requests=requests)
        except Exception:
            if len(batch) == 1:
                log.exception("request failed")
                results = [Exception("the request failed")]
            else:
                log.warning("a batch of %d failed; applying them one by one", len(batch), exc_info=True)
                results = await self._apart(requests)
        metrics.batch_seconds.observe(time.perf_counter() - started)
        orphans = []
        for (request, future), result in zip(batch, results, strict=True):
            if future.done():  # the connection went away meanwhile
                if isinstance(request, services.ClaimRequest) and not isinstance(result, BaseException):
                    orphans.append(request)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result if isinstance(result, ServiceError) else RuntimeError(str(result)))
            else:
                future.set_result(result)
        for claim in orphans:
            await self._release(claim)

    async def _release(self, claim: services.ClaimRequest) -> None:
        """A login claimed for a socket that closed while its batch
        committed: nobody holds the row, so let it go now (the user goes
        offline again) rather than leave them online until it expires."""
        try:
            await events.run_then_push(services.presence_release, user=claim.user, channel_name=claim.channel_name)
        except Exception:
            log.warning("could not release the presence of %s", claim.user.username, exc_info=True)
