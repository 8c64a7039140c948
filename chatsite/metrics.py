"""/metrics: this process's numbers (core/metrics.py) in Prometheus's text
format, for the addresses in CHAT_METRICS_ALLOWED (this machine by
default) or a request with `Authorization: Bearer CHAT_METRICS_TOKEN`;
anyone else gets 404, as if there were nothing here."""

from __future__ import annotations

import hmac
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import metrics
from core.addresses import parse_ip, trusted_networks

PENDING_EVERY_SECONDS = 15.0  # the pending count is one COUNT over an index: not every scrape
_pending_at = -PENDING_EVERY_SECONDS


def allowed(request: HttpRequest) -> bool:
    """A bearer token, or every address the request came through (the peer
    and what X-Forwarded-For names) in CHAT_METRICS_ALLOWED: nginx on this
    machine forwarding a stranger is not this machine."""
    token = settings.CHAT_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    networks = trusted_networks(list(settings.CHAT_METRICS_ALLOWED))
    hops = [request.META.get("REMOTE_ADDR", ""), *request.headers.get("X-Forwarded-For", "").split(",")]
    addresses = [parse_ip(hop) for hop in hops if hop.strip()]
    return bool(addresses) and all(
        address is not None and any(address in n for n in networks if n.version == address.version)
        for address in addresses
    )


def metrics_view(request: HttpRequest) -> HttpResponse:
    global _pending_at
    if not allowed(request):
        response: HttpResponse = HttpResponseNotFound()
    else:
        if time.monotonic() - _pending_at >= PENDING_EVERY_SECONDS:
            from messaging.selectors import pending_total

            metrics.pending.set(pending_total())
            _pending_at = time.monotonic()
        response = HttpResponse(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)
    response._has_been_logged = True  # type: ignore[attr-defined]  # scraped every few seconds: not logged
    response["Cache-Control"] = "no-store"
    return response
