"""How 1,000 terminal clients come back after the server restarts.

    .venv/bin/python bench/reconnect_bench.py [--clients 1000] [--outage 20] [--json out.json]

Starts the project on a fresh SQLite database (bench/stack.py), logs in
`--clients` real ``chatclient.client.ChatClient`` instances (the terminal
client's own backoff and jitter, not a model of them), stops the server for
`--outage` seconds, starts it again on the same port and records, per
client, the seconds from "the server listens again" to "logged in again".
Prints a histogram of those seconds: the jitter should spread arrivals over
the backoff's cap (5 s) instead of one second. The page uses the same cap
and the same jitter (static/chat/connection.js).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench import raise_open_files  # noqa: E402
from bench.clients import PASSWORD  # noqa: E402
from bench.stack import Options, Stack  # noqa: E402
from chatclient.client import ChatClient  # noqa: E402


def histogram(values: list[float], width: float = 1.0) -> list[list[float]]:
    """[[bin start, count], ...] in `width`-second bins, empty ones included."""
    bins: dict[int, int] = {}
    for v in values:
        bins[int(v // width)] = bins.get(int(v // width), 0) + 1
    return [[i * width, bins.get(i, 0)] for i in range(max(bins) + 1)] if bins else []


async def measure(stack: Stack, clients: int, outage: float, max_delay: float) -> dict[str, Any]:
    url = stack.urls[0]
    port = int(url.split(":")[2].split("/")[0])
    back_at: dict[int, float] = {}  # logged in again
    open_at: dict[int, float] = {}  # its connection open again (the arrival)
    tries: list[float] = []
    pool: list[ChatClient] = []
    gate = asyncio.Semaphore(50)

    async def start(i: int) -> None:
        client = ChatClient(url, lambda line: None, max_delay=max_delay)
        opener = client._open

        async def traced() -> None:
            tries.append(time.monotonic())  # every try to connect, failed or not
            await opener()

        client._open = traced  # type: ignore[method-assign]
        pool.append(client)
        async with gate:
            await client.connect()
            assert await client.login(f"u{i + 1}", PASSWORD) is None

    await asyncio.gather(*(start(i) for i in range(clients)))
    print(f"{clients} clients logged in; stopping the server for {outage:.0f} s", file=sys.stderr)
    for proc in stack.procs:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    await asyncio.sleep(outage)
    proc = stack._serve(port, 0)
    stack.procs = [proc]
    await asyncio.to_thread(stack._wait_listening, proc, port)
    restarted = time.monotonic()
    deadline = restarted + 120
    while len(back_at) < clients and time.monotonic() < deadline:
        for i, client in enumerate(pool):
            if client.up.is_set() and i not in open_at:
                open_at[i] = time.monotonic()
            if client.online and i not in back_at:
                back_at[i] = time.monotonic()
        await asyncio.sleep(0.02)
    await asyncio.gather(*(c.close() for c in pool), return_exceptions=True)
    return {
        "clients": clients,
        "outage_s": outage,
        # Tries from 10 s before the restart on: how the jitter spreads them.
        "tries": summary([t - restarted for t in tries if t > restarted - 10], shift=10),
        "connected": summary([t - restarted for t in open_at.values()]),
        "logged_in": summary([t - restarted for t in back_at.values()]),
    }


def summary(values: list[float], shift: float = 0) -> dict[str, Any]:
    """Percentiles and a histogram of seconds after the restart (the
    histogram's bins start `shift` seconds before it)."""
    s = sorted(values)
    if not s:
        return {"n": 0}

    def at(p: float) -> float:
        return round(s[min(len(s) - 1, int(len(s) * p))], 2)

    bins = [[b - shift, n] for b, n in histogram([v + shift for v in s])]
    return {"n": len(s), "p50_s": at(0.5), "p99_s": at(0.99), "max_s": round(s[-1], 2), "histogram": bins}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--max-delay", type=float, default=5.0, help="the clients' backoff cap (30 was the old one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    raise_open_files()
    stack = Stack("project", Options(users=args.clients, log=lambda s: print(s, file=sys.stderr)))
    try:
        stack.start()
        result = asyncio.run(measure(stack, args.clients, args.outage, args.max_delay))
    finally:
        stack.stop()
    result["machine"] = f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for what in ("tries", "connected", "logged_in"):
        r = result[what]
        print(f"{what.replace('_', ' ')}: {r['n']}/{args.clients}, p50 {r.get('p50_s')} s, p99 {r.get('p99_s')} s")
        peak = max((n for _, n in r.get("histogram", [])), default=1)
        for start, n in r.get("histogram", []):
            print(f"  {start:4.0f} to {start + 1:<3.0f} s {n:5.0f} {'#' * round(50 * n / peak)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
