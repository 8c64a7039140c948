"""/metrics: each process its own numbers, closed to the world."""

import re
import urllib.request

import pytest

from .helpers import PASSWORD
from .servers import Peer, Server, signup

pytestmark = pytest.mark.django_db(transaction=True)


def value(text, name, **labels):
    """The sample `name{labels}` of a Prometheus text page (0 if absent)."""
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(label) + r"\}" if label else "") + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def scrape(server):
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def test_metrics_are_for_this_machine_or_a_token(client, settings):
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    # nginx on this machine forwarding a stranger is not this machine
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 404
    settings.CHAT_METRICS_ALLOWED = []
    assert client.get("/metrics").status_code == 404
    settings.CHAT_METRICS_TOKEN = "s3cret-metrics"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    page = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics")
    assert page.status_code == 200 and b"chat_open_sockets" in page.content


async def test_each_process_counts_what_it_served():
    one, two = Server().start(), Server().start()
    try:
        await signup(one.url, "alice", "bob")
        async with Peer(one.url) as stranger:
            assert (await stranger.request("login", username="bob", password="wrong-password"))["type"] == "error"
        async with Peer(one.url) as alice:
            await alice.ok("login", username="alice", password=PASSWORD)
            sent = await alice.ok("send", to="bob", body="while you were out")
            assert sent["delivered"] == "stored"
            first = scrape(one)
            assert value(first, "chat_open_sockets") == 1
            assert value(first, "chat_logged_in_users") == 1
            assert value(first, "chat_messages_accepted_total", kind="private") == 1
            assert value(first, "chat_deliveries_total", how="stored") == 1
            assert value(first, "chat_failed_logins_total") == 1
            assert value(first, "chat_batch_requests_count") >= 1
            assert value(first, "chat_pending_messages") == 1
        second = scrape(two)
        assert value(second, "chat_messages_accepted_total", kind="private") == 0
        assert value(second, "chat_open_sockets") == 0
        assert value(second, "chat_pending_messages") == 1  # the database's count, the same everywhere
    finally:
        one.stop()
        two.stop()
