"""System checks of the account settings (`manage.py check --deploy`, and
logged when the server starts: daphne runs no checks)."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks import Warning as CheckWarning

from core.addresses import trusted_networks

DOC_SECTION = "What the per-address budgets do behind a proxy"
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


def address_exemption_warnings() -> list[str]:
    """What is wrong with CHAT_ADDRESS_BUDGET_EXEMPT: it spares addresses a
    proxy connects from (loopback, where nginx on this machine connects
    from, or a proxy in TRUSTED_PROXIES). Whatever such a proxy forwards
    without X-Forwarded-For, from every client, is then spared the sign-up
    and password budgets."""
    exempt = trusted_networks(list(settings.CHAT_ADDRESS_BUDGET_EXEMPT))
    proxies = LOOPBACK + trusted_networks(list(settings.TRUSTED_PROXIES))
    spared = [str(e) for e in exempt if any(p.version == e.version and p.overlaps(e) for p in proxies)]
    if not spared:
        return []
    return [
        f"CHAT_ADDRESS_BUDGET_EXEMPT spares {', '.join(spared)}, where a proxy may connect from: every client it"
        " forwards without X-Forwarded-For has its address, and would escape the per-address sign-up and password"
        " budgets. (A proxy that sends X-Forwarded-For without being in TRUSTED_PROXIES is refused the exemption,"
        " with a warning in the log.) In production set CHAT_ADDRESS_BUDGET_EXEMPT= (empty: nobody) and list"
        " the proxy in TRUSTED_PROXIES."
    ]


@register(Tags.security, deploy=True)
def check_address_exemption(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    return [
        CheckWarning(text, hint=f"See docs/deploy.md, '{DOC_SECTION}'.", id="accounts.W001")
        for text in address_exemption_warnings()
    ]
