"""Crowds (issue 23, items 1 and 2): broadcasts among many registered users.

    .venv/bin/python bench/crowd_bench.py                          # 100,000 users, SQLite
    .venv/bin/python bench/crowd_bench.py --stack scaleout         # PostgreSQL + Redis, two processes
    .venv/bin/python bench/crowd_bench.py --users 2000 --broadcasts 5 --seconds 5 --waiting 1000   # quick

Starts the project (bench/stack.py) with --users registered users, few of
them online, and measures:

1. `accept`: a broadcaster sends --broadcasts broadcasts, one every
   --gap seconds, while --pairs pairs of other online users send each
   other private messages at --rate a second each: how long a broadcast
   takes to be accepted (`ok`), and the latency of the private messages
   sent meanwhile (send to arrival). What a broadcast costs must not
   depend on how many users are registered, only on how many are online.
2. `waiting`: one user offline while --waiting messages wait for them,
   half broadcasts (stored once, as the server stores them for offline
   users) and half private: how long from `login` until the last arrives.

Prints a table and, with --json, writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.clients import PASSWORD, BenchClient, Tracker, close_many, login_many, open_many, quiet  # noqa: E402
from bench.scenarios import pct  # noqa: E402
from bench.stack import Options, Stack  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", choices=["sqlite", "scaleout"], default="sqlite")
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--users", type=int, default=100_000, help="registered users")
    p.add_argument("--pairs", type=int, default=5, help="pairs sending private messages meanwhile")
    p.add_argument("--rate", type=float, default=5.0, help="private messages a second, per pair")
    p.add_argument("--broadcasts", type=int, default=20)
    p.add_argument("--gap", type=float, default=0.5, help="seconds between broadcasts")
    p.add_argument("--waiting", type=int, default=10_000, help="messages waiting for the offline user (0: skip)")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


async def accept(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    tracker = Tracker()
    names = [f"u{i}" for i in range(1, 2 * args.pairs + 2)]
    clients = await open_many(names, stack.urls, tracker)
    await login_many(clients)
    await quiet(clients)
    broadcaster, pairs = clients[0], clients[1:]
    stop = asyncio.Event()
    private: list[str] = []

    async def chat(a: BenchClient, b: BenchClient) -> None:
        n = 0
        while not stop.is_set():
            body = f"p {a.name} {n}"
            n += 1
            private.append(body)
            await a.send(b.name, body)
            await asyncio.sleep(1 / args.rate)

    talkers = [asyncio.create_task(chat(pairs[i], pairs[i + 1])) for i in range(0, len(pairs) - 1, 2)]
    await asyncio.sleep(1)
    accepted: list[float] = []
    stored: list[int] = []
    for i in range(args.broadcasts):
        began = time.perf_counter()
        reply = await broadcaster.s.ok("broadcast", body=f"b {i}")
        accepted.append(time.perf_counter() - began)
        stored.append(reply["stored"])
        await asyncio.sleep(args.gap)
    stop.set()
    await asyncio.gather(*talkers)
    await asyncio.sleep(1)
    latencies = tracker.latencies(private)
    await close_many(clients)
    return {
        "broadcasts": len(accepted),
        "stored_per_broadcast": statistics.median(stored) if stored else None,
        "accept_p50_ms": pct(accepted, 0.5),
        "accept_p99_ms": pct(accepted, 0.99),
        "accept_max_ms": round(max(accepted) * 1000, 1) if accepted else None,
        "private_sent": len(private),
        "private_arrived": len(latencies),
        "private_p50_ms": pct(latencies, 0.5),
        "private_p99_ms": pct(latencies, 0.99),
    }


async def waiting(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    broadcasts = args.waiting // 2
    seed = ["-m", "bench.seed", "--password", PASSWORD, "--to", "late", "--sender", "crowdsrc"]
    stack._run(*seed, "--pending", str(args.waiting - broadcasts), "--broadcasts", str(broadcasts))
    tracker = Tracker()
    [late] = await open_many(["late"], stack.urls, tracker)
    began = time.perf_counter()
    reply = await late.login()
    answered = time.perf_counter() - began
    deadline = began + 120
    while late.messages < args.waiting and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    took = max(tracker.last.values(), default=began) - began
    await close_many([late])
    return {
        "waiting": args.waiting,
        "pending_in_login_reply": reply.get("pending"),
        "login_ok_s": round(answered, 3),
        "all_arrived_s": round(took, 3),
        "arrived": late.messages,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    options = Options(stack=args.stack, pg_url=args.pg_url, redis_url=args.redis_url, users=args.users)
    stack = Stack("project", options)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "date": time.strftime("%F %T")}
    try:
        began = time.perf_counter()
        stack.start()
        results["seed_s"] = round(time.perf_counter() - began, 1)
        print(f"{args.users} users seeded and {stack.n} server(s) up in {results['seed_s']} s", flush=True)
        results["accept"] = asyncio.run(accept(stack, args))
        print("accept:", json.dumps(results["accept"]), flush=True)
        if args.waiting:
            results["waiting"] = asyncio.run(waiting(stack, args))
            print("waiting:", json.dumps(results["waiting"]), flush=True)
    finally:
        stack.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
