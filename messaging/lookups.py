"""Reads off the event loop: one selector in the thread pool (`read`), and
the resume-token lookups of logins that arrive together, made in one
query (`SessionLookups`)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections

from accounts import selectors as account_selectors
from accounts.models import User as UserModel

log = logging.getLogger("chat")

# Keys looked up in one query at most (accounts.selectors reads a session
# table page of 500 keys a statement).
MAX_LOOKUPS = 500


async def read(func: Callable[..., Any], **kwargs: Any) -> Any:
    """Run a selector in the thread pool, beside the writer's thread.

    A plain executor hop with the caller's context, where asgiref's
    SyncToAsync (Channels' database_sync_to_async) does much more per call
    that a read needs none of (thread-sensitivity bookkeeping, a task map,
    the context copied back, a type annotation built each time): measured
    at about 100 µs of the event loop's time a call, and a login after a
    restart makes two (its token, then `rooms`). Stale database
    connections are closed before and after, as Channels does."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, contextvars.copy_context().run, _read_in_thread, func, kwargs)


def _read_in_thread(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    close_old_connections()
    try:
        return func(**kwargs)
    finally:
        close_old_connections()


class SessionLookups:
    """The user behind each resume token (or session key) of the logins
    under way, looked up together: the keys that arrive while a lookup is
    in the database go in the next one, a single sessions_check of them
    all. A restart's crowd logs in by token at once, and a query and a
    session decode each was a sixth of the server's time (py-spy, 3,000
    clients); the rule is the same one (accounts.selectors.sessions_check)."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[asyncio.Future[UserModel | None]]] = {}
        self.task: asyncio.Task[None] | None = None

    async def user_for(self, session_key: str) -> UserModel | None:
        """The active user `session_key` logs in, or None."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[UserModel | None] = loop.create_future()
        self.waiting.setdefault(session_key, []).append(future)
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
            self.task.add_done_callback(self._ended)
        return await future

    async def _run(self) -> None:
        batch: dict[str, list[asyncio.Future[UserModel | None]]] = {}
        try:
            await asyncio.sleep(0)  # the keys of this turn of the loop go in the first lookup
            while self.waiting:
                keys = list(self.waiting)[:MAX_LOOKUPS]
                batch = {key: self.waiting.pop(key) for key in keys}
                try:
                    checks = await read(account_selectors.sessions_check, session_keys=keys)
                except Exception as e:
                    _fail(batch, e)  # these logins fail; the next keys are tried
                    continue
                for key, futures in batch.items():
                    check = checks[key]
                    for future in futures:
                        if not future.done():  # the login went away meanwhile
                            future.set_result(check.user if check.ended is None else None)
        except BaseException as e:
            # Cancelled (a shutdown), or a bug: the logins taken fail now
            # (those queued behind them: _ended).
            cancelled = isinstance(e, asyncio.CancelledError)
            _fail(batch, RuntimeError("lookup cancelled" if cancelled else "lookup failed"))
            raise

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A lookup task that ended cancelled (a shutdown, perhaps before it
        started) or failed: the logins queued for it fail at once, none
        waits for a lookup nobody will start."""
        if task.cancelled():
            why = "lookup cancelled"
        elif (error := task.exception()) is not None:
            log.error("token lookups failed", exc_info=error)
            why = "lookup failed"
        else:
            return
        if task is self.task:  # else a new task has these keys
            waiting, self.waiting = self.waiting, {}
            _fail(waiting, RuntimeError(why))


def _fail(futures_by_key: dict[str, list[asyncio.Future[UserModel | None]]], error: Exception) -> None:
    for futures in futures_by_key.values():
        for future in futures:
            if not future.done():
                future.set_exception(error)
