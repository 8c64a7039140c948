"""The per-process pump: its steps, and what it does after an outage."""

import time
from types import SimpleNamespace

import pytest

from messaging import pump as pump_module
from messaging import services
from messaging.hub import Hub
from messaging.pump import Pump


class FakeHub(Hub):
    def __init__(self):
        super().__init__()
        self.connections = {
            "chan-1": SimpleNamespace(logged_in=True, flushing=False),
            # Joined the hub, still claiming its presence: no row to refresh yet.
            "chan-2": SimpleNamespace(logged_in=False, flushing=False),
        }

    async def refresh(self):
        pass


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def record(name):
        def service(**kwargs):
            seen.append((name, kwargs))
            return []

        return service

    for name in ("presence_tick", "presence_sessions_check", "delivery_redeliver", "records_prune"):
        monkeypatch.setattr(services, name, record(name))
    return seen


@pytest.mark.django_db(transaction=True)
async def test_a_tick_runs_each_step_once(calls, monkeypatch):
    # A machine up for ten seconds (the monotonic clock counts from boot):
    # the first tick prunes all the same.
    monkeypatch.setattr(pump_module, "time", SimpleNamespace(monotonic=lambda: 10.0))
    await Pump(FakeHub()).tick()
    assert [name for name, _ in calls] == [
        "presence_tick",
        "presence_sessions_check",
        "delivery_redeliver",
        "records_prune",
    ]
    # A connection caught mid-login is left alone (the heartbeat would find
    # no presence row for it, and end it).
    assert calls[0][1] == {"channel_names": ["chan-1"], "expire": True}


@pytest.mark.django_db(transaction=True)
async def test_after_an_outage_nobody_else_is_expired_for_a_while(calls, settings):
    """Every process's heartbeat stopped during a database outage: the
    first to tick again must not take the others' users for dead."""
    settings.CHAT_PUMP_SECONDS = 5
    pump = Pump(FakeHub())
    await pump.tick()
    pump.ticked_at = time.monotonic() - settings.CHAT_PRESENCE_TIMEOUT_SECONDS - 1  # the gap
    await pump.tick()
    await pump.tick()
    ticks = [kwargs["expire"] for name, kwargs in calls if name == "presence_tick"]
    assert ticks == [True, False, False]
    pump.quiet_until = time.monotonic() - 1  # one timeout later
    await pump.tick()
    assert [kwargs["expire"] for name, kwargs in calls if name == "presence_tick"][-1] is True


@pytest.mark.django_db(transaction=True)
async def test_the_sessions_check_runs_at_its_own_pace(calls, monkeypatch, settings):
    """At the first tick, then once CHAT_SESSIONS_CHECK_SECONDS have passed:
    a logout or a saved account ends its socket at once (receivers), so
    the check of every socket is only the safety net."""
    settings.CHAT_SESSIONS_CHECK_SECONDS = 60
    clock = [1000.0]
    monkeypatch.setattr(pump_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    pump = Pump(FakeHub())
    for now in (1000.0, 1005.0, 1059.0, 1060.0, 1065.0, 1130.0):
        clock[0] = now
        await pump.tick()
    checks = [name for name, _ in calls].count("presence_sessions_check")
    assert checks == 3  # at 1000, 1060 and 1130
    assert [name for name, _ in calls].count("presence_tick") == 6


@pytest.mark.django_db(transaction=True)
async def test_a_gap_that_may_have_aged_live_rows_past_the_timeout_is_an_outage(calls, settings):
    """A live row is written again once a third of the timeout old, so it
    may be 15 + 5 s old when every process stops ticking: a gap of 25 s
    (of a 45 s timeout, 5 s ticks) may already have aged it past the
    timeout. Shorter gaps cannot."""
    settings.CHAT_PRESENCE_TIMEOUT_SECONDS, settings.CHAT_PUMP_SECONDS = 45, 5
    pump = Pump(FakeHub())
    await pump.tick()
    pump.ticked_at = time.monotonic() - 20
    await pump.tick()
    pump.ticked_at = time.monotonic() - 30
    await pump.tick()
    await pump.tick()
    assert [kwargs["expire"] for name, kwargs in calls if name == "presence_tick"] == [True, True, False, False]
