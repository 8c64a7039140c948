"""Who a WebSocket's cookie says it is, in one step.

Channels' ``AuthMiddlewareStack`` is three middlewares (cookies, session,
user) over a fourth (its base): each copies the scope, the session one
wraps ``send``, and their coroutines wait for the whole life of the
socket, so every connection keeps four frames and four scopes it no longer
needs, about 5 KB, and pays a thread hop to the database at the handshake
even when it carries no cookie. The chat's sockets need what they give:
``scope["cookies"]``, ``scope["session"]`` and ``scope["user"]`` (the
consumer logs a page in by its session cookie). ``SocketSession`` sets the
same three with one copy of the scope and one frame, and asks the database
only when there is a session cookie to look up (without one, the session
is None and the user anonymous).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

ANONYMOUS = AnonymousUser()  # holds nothing: one for every socket without a session cookie


class SocketSession:
    """ASGI middleware for WebSockets: cookies, session and user in the scope,
    as Channels' AuthMiddlewareStack puts them there."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        cookies: dict[str, str] = {}
        for name, value in scope.get("headers") or ():
            if name == b"cookie":
                cookies = parse_cookie(value.decode("latin1"))
                break
        scope = dict(scope, cookies=cookies)
        key = cookies.get(settings.SESSION_COOKIE_NAME)
        if key:
            scope["session"] = import_module(settings.SESSION_ENGINE).SessionStore(key)
            # get_user reads the session (a query) and checks its auth hash
            # as Django's own login does.
            scope["user"] = await get_user(scope)
        else:
            # Nothing to read: no session (the consumer takes None for "no
            # cookie"), and no query.
            scope["session"], scope["user"] = None, ANONYMOUS
        return await self.inner(scope, receive, send)
