"""ServiceError: how a service refuses a request, with one of the protocol's
error codes; the consumer and views turn it into the protocol's error frame
or a form error. messaging.frames.FrameError is a kind of it (a frame refused
whole). Failures that are no client's doing have types of their own: the
channel layer's (messaging.events.LayerDown), the old server's import's
(legacy.files.LegacyError, legacy.services.NameClash)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A refused request: `code` is the protocol's error code, `message` the
    human text, `extra` more fields of the error frame (e.g. retry_after)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra
