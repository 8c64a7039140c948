"""Client addresses: parsing what a server or a proxy says the peer is."""

from __future__ import annotations

import ipaddress
from contextvars import ContextVar

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "0.0.0.0"

# Headers by which a proxy says whom it forwards for.
PROXY_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")

# True while a request (an HTTP request, or a whole WebSocket) is handled
# whose peer sent a proxy header without being a trusted proxy: the peer
# is then most likely a proxy someone forgot to list in TRUSTED_PROXIES,
# its address stands for many clients, and no budget may spare it. Set by
# chatsite.proxies for the request's context, which sync_to_async carries
# into the threads services run in, so every door (the socket, the login
# page, the admin) is covered without each passing it along.
untrusted_forwarding: ContextVar[bool] = ContextVar("untrusted_forwarding", default=False)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [::1]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 1.2.3.4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address


def trusted_networks(entries: list[str]) -> list[Network]:
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]


def in_networks(text: str, networks: list[Network]) -> bool:
    address = parse_ip(text)
    return address is not None and any(address in network for network in networks)
