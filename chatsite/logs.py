"""Log lines an operator can use: who (process, request), when, how bad.

LOG_FORMAT=json makes every line one JSON object (for a log shipper), the
default text format a line with time, level, process and logger. A request
id ties the lines of one HTTP request together: the client's or proxy's
X-Request-ID when it looks like one, else a new one, echoed in the
response. Secrets are kept out twice over: nothing logs them on purpose,
and a filter masks what looks like a password, a token or a message body
in a line anyway (an exception's text may quote a query's values).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_GOOD_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s%(request_suffix)s"

# key=value, key: value, "key": "value" for the names of secrets; the value
# up to the next quote, comma, brace or space.
_SECRET = re.compile(
    r"""(?P<key>["']?\b(?:password\d?|new_password\d|old_password|passwd|token|resume_token|session_?key|"""
    r"""secret_key|sessionid|csrfmiddlewaretoken|body)\b["']?\s*[:=]\s*)(?P<value>"[^"]*"|'[^']*'|[^\s,;&}\]]+)""",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the values of secret-looking keys replaced by ***."""
    return _SECRET.sub(lambda m: f"{m.group('key')}***", text)


class ContextFilter(logging.Filter):
    """Adds the request id (or None) and masks secrets in the rendered line."""

    def filter(self, record: logging.LogRecord) -> bool:
        # django.request logs a 4xx/5xx after the middleware has returned,
        # with the request attached.
        rid = request_id.get() or getattr(getattr(record, "request", None), "request_id", None)
        record.request_id = rid
        record.request_suffix = f" [request {rid}]" if rid else ""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            line["request_id"] = rid
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The text format; tolerates records that did not pass ContextFilter."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_suffix"):
            record.request_suffix = ""
        return super().format(record)


def given_or_new(given: str) -> str:
    """The request id a proxy gave, if it is a sane one, else a new one."""
    return given if _GOOD_ID.fullmatch(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets the request id for the lines logged while a request is served."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = given_or_new(request.headers.get("X-Request-ID", ""))
        request.request_id = rid  # type: ignore[attr-defined]
        token = request_id.set(rid)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response["X-Request-ID"] = rid
        return response


class SocketRequestId:
    """ASGI middleware: a request id for each WebSocket (from X-Request-ID,
    as nginx may set it, or a new one), so every log line of one connection
    can be told apart from another's. What the connection does runs in
    this context, its tasks included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin1")
        token = request_id.set(given_or_new(given))
        try:
            return await self.app(scope, receive, send)
        finally:
            request_id.reset(token)
