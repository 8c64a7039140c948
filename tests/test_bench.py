"""The load generator works: `bench/bench.py --quick`, every scenario, against
the project (and the bare reference app), on SQLite and on PostgreSQL + Redis
(each half of the suite runs the bench on its own stack).

No figure is asserted (this machine is shared); only that every scenario ran
to the end and every message it sent arrived.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connection

from .conftest import need

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["closed", "open", "drain", "idle", "storm", "fanout", "rooms", "reconnect"]


def run_bench(tmp_path, *args):
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    proc = subprocess.run(
        [sys.executable, "bench/bench.py", "--quick", "--json", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def check(results, target):
    sc = results["scenarios"]
    assert set(sc) == set(SCENARIOS)
    closed = sc["closed"][target]
    assert closed["sent"] > 0 and closed["delivered"] == closed["sent"] and closed["errors"] == 0
    for point in sc["open"][target]["points"]:
        assert point["errors"] == 0 and point["undelivered_after_grace"] == 0
    drain = sc["drain"][target]
    assert drain["pending"] == drain["received"] == results["meta"]["sizes"]["drain"]
    idle = sc["idle"][target]
    assert idle["rss_after_kib"] > 0 and idle["logged_in"] == idle["connections"] and idle["idle_cpu_s"] >= 0
    for fan in sc["fanout"][target].values():
        assert fan["broadcasts"] == results["meta"]["sizes"]["broadcasts"]
    sizes = results["meta"]["sizes"]
    for n in sizes["rooms"]:
        for kind in ("room", "broadcast"):
            assert sc["rooms"][target][str(n)][kind]["messages"] == sizes["room_messages"]
    if target == "project":
        assert sc["rooms"][target]["list"]["rooms"] >= sizes["room_list"]
        # Every terminal client back online by its resume token after the
        # restart, and none printed anything a person would take for an error.
        restart = sc["reconnect"][target]
        assert restart["back"] == sizes["reconnect"] and restart["missing"] == 0, restart
        assert restart["said_count"] == 0, restart["said"]
    storm = sc["storm"][target]
    assert [r["users"] for r in storm["batch"]] == [r["users"] for r in storm["plain"]]
    if target == "project":
        assert all(r["presence_frames"] > 0 for r in storm["batch"] + storm["plain"])


def test_quick_run_of_every_scenario(tmp_path):
    """On the stack this half of the suite runs on: SQLite against the bare
    app too (and the plot), or PostgreSQL + Redis."""
    if connection.vendor == "sqlite":
        # The crowd scenarios over two client processes here; in-process on PostgreSQL.
        # The server pinned to one CPU of this process's, the load elsewhere (if there is an elsewhere).
        cpus = sorted(os.sched_getaffinity(0))
        pinned = ["--server-cpus", str(cpus[0])] if len(cpus) > 1 else []
        results, stdout = run_bench(tmp_path, "--plot", str(tmp_path / "plot.png"), "--client-processes", "2", *pinned)
        assert results["meta"]["server_cpus"] == (cpus[:1] if pinned else [])
        check(results, "project")
        check(results, "bare")
        assert "Closed loop" in stdout and "Rooms: a room message" in stdout
        assert (tmp_path / "plot.png").stat().st_size > 0
        return
    need(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    need(bool(settings.REDIS_URL), "Redis (REDIS_URL)")
    pg = settings.DATABASES["default"]
    pg_url = f"postgres://{pg['USER']}@{pg['HOST'] or '127.0.0.1'}:{pg['PORT'] or 5432}/{pg['NAME']}"
    results, _ = run_bench(tmp_path, "--stack", "scaleout", "--targets", "project", "--pg-url", pg_url,
                           "--redis-url", settings.REDIS_URL)  # fmt: skip
    check(results, "project")
    assert results["scenarios"]["closed"]["project"]["cpu_ms_per_msg"]["postgres"] is not None


def test_every_copy_of_daphnes_ping_flags_finds_a_dead_client_within_the_minute():
    """The protocol: a connection that dies without a clean close stops
    counting as online within 60 seconds. Only daphne's pings find such a
    client: a ping after `--ping-interval` seconds of silence (checked every
    2 s), then `--ping-timeout` seconds for the pong. The flags are written
    in the Makefile, the systemd unit and the bench's servers; they must
    agree, and their sum must stay under the minute."""
    from bench.stack import DAPHNE_PINGS

    def flags(text):
        found = re.findall(r"--ping-interval (\d+) --ping-timeout (\d+)", text)
        assert found, "no ping flags"
        return {(int(interval), int(timeout)) for interval, timeout in found}

    makefile = flags((ROOT / "Makefile").read_text())
    unit = flags((ROOT / "deploy" / "chat@.service").read_text().replace("\\\n", " "))
    bench = flags(" ".join(DAPHNE_PINGS))
    assert makefile == unit == bench and len(bench) == 1
    ((interval, timeout),) = bench
    daphne_check_period = 2
    assert interval + daphne_check_period + timeout < 60
    assert "--ping-interval 15" not in (ROOT / "docs" / "deploy.md").read_text()
