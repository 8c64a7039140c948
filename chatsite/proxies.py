"""Who the client is: the address behind a trusted proxy, validated.

daphne's --proxy-headers believes X-Forwarded-For from anyone, so a client
could pick its own address (and dodge the per-address lockout) by sending
the header itself. This middleware believes the header only when the peer
is listed in TRUSTED_PROXIES (addresses or networks), and then takes the
right-most address the proxies did not add themselves. Behind such a proxy
it also takes X-Forwarded-Proto, so the page's origin (https://...) matches
the request's. The address always ends up a valid IP, so nothing
downstream (the lockout, the admin, Django's REMOTE_ADDR) sees junk.

A proxy header from a peer that is not trusted is not believed, and marks
the request (core.addresses.untrusted_forwarding): its peer is a proxy
nobody listed, so the address is not the client's, and the per-address
budgets spare it nothing even if it is in CHAT_ADDRESS_BUDGET_EXEMPT.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from core.addresses import PROXY_HEADERS, UNKNOWN, Network, parse_ip, trusted_networks, untrusted_forwarding


def _header(scope: dict[str, Any], name: bytes) -> str:
    values = [v.decode("latin1") for k, v in scope.get("headers") or [] if k.lower() == name]
    return ",".join(values)


def client_of(scope: dict[str, Any], trusted: list[Network]) -> tuple[str, str | None]:
    """(client address, scheme the proxy saw or None)."""
    client = scope.get("client") or ()
    peer = parse_ip(str(client[0])) if client else None
    if peer is None:
        return UNKNOWN, None
    if not any(peer in network for network in trusted):
        return str(peer), None
    address = peer
    for hop in reversed([h for h in _header(scope, b"x-forwarded-for").split(",") if h.strip()]):
        hop_ip = parse_ip(hop)
        if hop_ip is None:
            break  # junk: keep the last address we could trust
        address = hop_ip
        if not any(hop_ip in network for network in trusted):
            break
    proto = _header(scope, b"x-forwarded-proto").split(",")[-1].strip().lower() or None
    return str(address), proto if proto in ("http", "https") else None


def forwarded_untrusted(scope: dict[str, Any], trusted: list[Network]) -> bool:
    """Whether a peer that is not a trusted proxy sent a proxy header."""
    client = scope.get("client") or ()
    peer = parse_ip(str(client[0])) if client else None
    if peer is not None and any(peer in network for network in trusted):
        return False
    return any(k.lower() in PROXY_HEADERS for k, _ in scope.get("headers") or [])


class ClientAddress:
    """ASGI middleware: scope["client"] (and, behind a proxy, the scheme)."""

    def __init__(self, app: Any):
        self.app = app
        self._trusted: tuple[tuple[str, ...], list[Network]] = ((), [])

    def trusted(self) -> list[Network]:
        listed = tuple(settings.TRUSTED_PROXIES)
        if listed != self._trusted[0]:
            self._trusted = (listed, trusted_networks(list(listed)))
        return self._trusted[1]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        trusted = self.trusted()
        untrusted = forwarded_untrusted(scope, trusted)
        address, proto = client_of(scope, trusted)
        port = (scope.get("client") or (None, 0))[1] or 0
        scope = dict(scope, client=(address, port))
        if proto is not None:
            secure = proto == "https"
            scope["scheme"] = ("wss" if secure else "ws") if scope["type"] == "websocket" else proto
        token = untrusted_forwarding.set(untrusted)
        try:
            return await self.app(scope, receive, send)
        finally:
            untrusted_forwarding.reset(token)
