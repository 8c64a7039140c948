"""Liveness and readiness probes: /healthz and /readyz.

A middleware, first in MIDDLEWARE, answers them before sessions, CSRF, the
Host check and the URL resolver: a load balancer may probe every second, by
address, and each probe costs one query (and one Redis PING) at most. They
are never logged: Django's request logger is told the 503 was handled.

- /healthz: the process is up and serving HTTP. Touches nothing else, so a
  database outage does not get every process restarted.
- /readyz: the database answers, every migration on disk is applied, and
  Redis answers when REDIS_URL is set. Each check runs in a worker thread
  with a deadline (CHAT_READYZ_TIMEOUT_SECONDS), so a stopped or hung
  PostgreSQL or Redis is a 503 within it, and a 200 again once they are
  back (connections are reopened, nothing is cached but success).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse

_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")
_lock = threading.Lock()
# A check still running from an earlier probe is waited on, not started
# again: a hung database holds one thread, not one per second.
_running: dict[str, Future[None]] = {}
# When the migrations were last found applied (monotonic seconds).
_migrations_ok_at: float | None = None
_redis_client: Any = None


def check_database() -> None:
    """One round trip on a connection of this thread (reopened if broken)."""
    connection = connections["default"]
    connection.close_if_unusable_or_obsolete()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_migrations() -> None:
    """Every migration on disk is applied. Loading the migration files costs
    tens of milliseconds, so a success is remembered for
    CHAT_READYZ_MIGRATIONS_CACHE_SECONDS."""
    global _migrations_ok_at
    cached = _migrations_ok_at
    if cached is not None and time.monotonic() - cached < settings.CHAT_READYZ_MIGRATIONS_CACHE_SECONDS:
        return
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections["default"])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise RuntimeError(f"{len(plan)} migration(s) not applied")
    _migrations_ok_at = time.monotonic()


def check_redis() -> None:
    """A PING, with connect and read timeouts of its own."""
    global _redis_client
    if _redis_client is None:
        import redis

        timeout = settings.CHAT_READYZ_TIMEOUT_SECONDS
        _redis_client = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False
        )
    _redis_client.ping()


def _database_and_migrations() -> None:
    check_database()
    check_migrations()


def check_runtime() -> None:
    """This process's machinery: not stopping, its pump alive."""
    from messaging.runtime import runtime

    trouble = runtime.trouble()
    if trouble is not None:
        raise RuntimeError(trouble)


def _checks() -> dict[str, Callable[[], None]]:
    checks: dict[str, Callable[[], None]] = {"database": _database_and_migrations, "process": check_runtime}
    if settings.REDIS_URL:
        checks["redis"] = check_redis
    return checks


def readiness() -> dict[str, str]:
    """{check: "ok" or why not}, every check within one deadline."""
    futures: dict[str, Future[None]] = {}
    with _lock:
        for name, check in _checks().items():
            future = _running.get(name)
            if future is None or future.done():
                future = _running[name] = _pool.submit(check)
            futures[name] = future
    deadline = time.monotonic() + settings.CHAT_READYZ_TIMEOUT_SECONDS
    results: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            results[name] = "ok"
        except FutureTimeout:
            results[name] = "timeout"
        except Exception as e:  # the probe's answer is the failure, in short
            results[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]
    return results


def _unlogged(response: HttpResponse) -> HttpResponse:
    # django.request logs every response >= 400; a probe's 503 every second
    # would drown the log.
    response._has_been_logged = True  # type: ignore[attr-defined]
    response["Cache-Control"] = "no-store"
    return response


def healthz() -> HttpResponse:
    return _unlogged(JsonResponse({"status": "ok"}))


def readyz() -> HttpResponse:
    results = readiness()
    failed = [name for name, result in results.items() if result != "ok"]
    body = {"status": "fail" if failed else "ok", "failed": failed, "checks": results}
    return _unlogged(JsonResponse(body, status=503 if failed else 200))


PROBES: dict[str, Callable[[], HttpResponse]] = {"/healthz": healthz, "/readyz": readyz}


class HealthMiddleware:
    """Answers the probes and /metrics before any other middleware runs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info.rstrip("/") or "/"
        probe = PROBES.get(path)
        if probe is not None and request.method in ("GET", "HEAD"):
            return probe()
        if path == "/metrics" and request.method in ("GET", "HEAD"):
            from .metrics import metrics_view

            return metrics_view(request)
        return self.get_response(request)
