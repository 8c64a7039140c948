"""Browser-facing protections: the WebSocket origin check and the CSP."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings

DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def parse_origin(text: str) -> Origin | None:
    """(scheme, host, port) of an origin such as https://chat.example.com."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:  # "http://127.0.0.1:2000.evil.example" is no origin
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.username:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def own_origin(scope: dict[str, Any], host: str | None) -> Origin | None:
    """The origin of the page this server would have served the request's
    Host on, with the scheme the request came in with."""
    if not host:
        return None
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    return parse_origin(f"{scheme}://{host}")


def _matches(origin: Origin, pattern: str) -> bool:
    """An entry of CSRF_TRUSTED_ORIGINS: exact, or https://*.example.com."""
    wildcard = "://*." in pattern
    listed = parse_origin(pattern.replace("://*.", "://", 1))
    if listed is None or listed[0] != origin[0] or listed[2] != origin[2]:
        return False
    return origin[1].endswith("." + listed[1]) if wildcard else origin[1] == listed[1]


class BrowserOriginValidator:
    """Refuse WebSockets opened by another site's page.

    Browsers always send Origin, and cookies are not scoped by port: a page
    at http://127.0.0.1:8080 or https://127.0.0.1 could otherwise open a
    socket that carries the user's session cookie. So the origin must be
    this server itself, same scheme, host and port as the request, or be
    listed in CSRF_TRUSTED_ORIGINS (as Django's CSRF check has it).
    Programs (the terminal client, load generators) send no Origin and
    carry no browser cookies: they pass, and log in like anyone else.
    """

    def __init__(self, application: Any):
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = host = None
        for name, value in scope.get("headers") or ():  # no dict of them: this frame lasts as long as the socket
            if name == b"origin":
                origin = value
            elif name == b"host":
                host = value
        if origin is None or self.allowed(scope, origin.decode("latin1"), host.decode("latin1") if host else None):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)

    @staticmethod
    def allowed(scope: dict[str, Any], origin_text: str, host: str | None) -> bool:
        origin = parse_origin(origin_text)
        if origin is None:
            return False
        if origin == own_origin(scope, host):
            return True
        return any(_matches(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS)


class ContentSecurityPolicy:
    """Django middleware: a Content-Security-Policy on every response, the
    admin's included. No inline script can run, so a body that slipped past
    escaping still cannot execute."""

    def __init__(self, get_response: Any):
        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if self.policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.policy
        return response
