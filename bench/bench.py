"""Load generator: the chat server against a bare Channels app, one command.

    .venv/bin/python bench/bench.py                          # every scenario, SQLite, daphne
    .venv/bin/python bench/bench.py --quick                  # tiny sizes (CI)
    .venv/bin/python bench/bench.py --stack scaleout --layer pubsub --server uvicorn
    .venv/bin/python bench/bench.py --scenarios closed,open --rates 100,200,500 --json r.json --plot r.png

For each target (the project, then the bare reference app of bench/bare/)
it makes a fresh database in a temp dir (SQLite) or a fresh PostgreSQL
database (scaleout: with Redis and two processes), migrates, seeds users
with a cheap password hasher (bench/cheap_hash_settings.py), starts the
servers with the rate limits off, runs the chosen scenarios, and stops and
cleans up, Ctrl+C included. Scenarios:

  closed  10 pairs, 8 messages in flight per sender, 8 s: delivered/s, CPU-ms per message
  open    private messages at each --rates: p50/p90/p99 send -> recipient, undelivered after 5 s
  drain   10,000 messages waiting for a user: login ok -> last one arrived
  idle    1,000 idle logged-in connections: server RSS per connection
  storm   250/500/1,000 logins, 20 at a time: presence frames, with and without presence_batch
  fanout  a broadcast to 100 and 1,000 online users: median time until all have it (10 broadcasts)
  rooms   a room message to 100 and 1,000 members online: p50/p99 until all have it (20 messages),
          and a broadcast to the same connections; `rooms` for a user in 500 rooms (project only)
  reconnect  1,000 terminal clients connected, the server restarted (SIGTERM, started again):
          seconds until each is online again by its resume token, presence frames, anything
          a client printed that a person would read as an error (project only)

Crowds (issue 23): `--idle 10000 --fanout 10000 --reconnect 10000` spreads the
connections of idle, fanout and reconnect over client processes
(`--client-processes`, bench/crowd.py), each sampled from /proc: a figure
taken while one of them was above 90% of a core says "client-bound", the
load generator may have set its pace. `idle` also watches the server's CPU
for `--idle-seconds` while nobody talks.

Clients and servers share this machine: compare the project with the bare
app (and configurations) within one run, not figures across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report  # noqa: E402
from bench.scenarios import ORDER, SCENARIOS, Sizes  # noqa: E402
from bench.stack import DAPHNE_PINGS, Options, Stack  # noqa: E402

T0 = time.perf_counter()


def log(line: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {line}", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", choices=["sqlite", "scaleout"], default="sqlite")
    p.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    p.add_argument(
        "--layer", choices=["core", "pubsub"], default="pubsub", help="channels_redis layer (scaleout; CHANNEL_LAYER)"
    )
    p.add_argument(
        "--bare-layer",
        choices=["stock", "project"],
        default="stock",
        help="bare app on one process: Channels' InMemoryChannelLayer, or the project's (chatsite/layers.py)",
    )
    p.add_argument("--processes", type=int, default=0, help="server processes (default: 1 sqlite, 2 scaleout)")
    p.add_argument("--scenarios", default=",".join(ORDER), help=f"comma-separated, of {','.join(ORDER)}")
    p.add_argument("--targets", default="project,bare", help="project, bare or both")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds in all (CI)")
    p.add_argument("--rates", help="open loop: offered messages/s, comma-separated (default 100,200,500)")
    p.add_argument("--fanout", help="online users per broadcast, comma-separated (default 100,1000)")
    p.add_argument("--rooms", help="room members online besides the sender, comma-separated (default 100,1000)")
    p.add_argument("--room-list", type=int, help="rooms of the user whose `rooms` is timed (default 500)")
    p.add_argument("--drain", type=int, help="messages waiting (default 10000)")
    p.add_argument("--idle", type=int, help="idle connections (default 1000)")
    p.add_argument("--storm", help="login storm sizes, comma-separated (default 250,500,1000)")
    p.add_argument("--seconds", type=float, help="closed loop duration (default 8)")
    p.add_argument("--idle-seconds", type=float, help="idle: seconds the server's CPU is watched (default 30)")
    p.add_argument("--reconnect", type=int, help="terminal clients connected across a restart (default 1000)")
    p.add_argument("--reconnect-timeout", type=float, help="reconnect: seconds to wait for all to be back (120)")
    p.add_argument(
        "--client-processes",
        type=int,
        help="idle, fanout, reconnect: spread the connections over this many client processes"
        " (default: one per 3,000 connections, 0 below 1,000: the bench's own process)",
    )
    p.add_argument(
        "--pings",
        help="daphne's ping flags as 'INTERVAL,TIMEOUT' seconds (default: those of `make run`, "
        + ",".join(DAPHNE_PINGS[1::2])
        + "): an idle connection's cost at another interval",
    )
    p.add_argument(
        "--server-cpus",
        help="CPUs (comma-separated numbers) the server processes run on, the load generator on the others:"
        " on a small machine, what one process does with cores of its own",
    )
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres", help="scaleout: server to use")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--plot", help="draw the latency curve and the sizes into this PNG")
    args = p.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(ORDER)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.layer == "core" and args.stack != "scaleout":
        p.error("--layer core needs --stack scaleout")
    return args


def sizes_of(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()

    def ints(s: str) -> list[int]:
        return [int(x) for x in s.split(",") if x]

    # Options named as the sizes they set: a list (comma-separated) or one number.
    for name in ("rates", "fanout", "storm", "rooms"):
        if getattr(args, name):
            setattr(sizes, name, ints(getattr(args, name)))
    for name in ("room_list", "drain", "idle", "seconds", "idle_seconds", "reconnect", "reconnect_timeout"):
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    if args.client_processes is not None:
        sizes.client_processes = args.client_processes
    else:
        most = max([sizes.idle, sizes.reconnect, *sizes.fanout])
        sizes.client_processes = 0 if most < 1000 else -(-most // 3000)
    return sizes


async def run_target(stack: Stack, scenarios: list[str], sizes: Sizes, out: dict[str, Any]) -> None:
    for name in scenarios:
        log(f"  {stack.target}: {name}")
        out[name][stack.target] = await SCENARIOS[name](stack, sizes, log)
        await asyncio.sleep(0.5)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def run(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """Every target, every chosen scenario, into `results` (so far, when interrupted)."""
    raise_open_files()  # a thousand connections here, and in the servers (they inherit it)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    sizes = sizes_of(args)
    scenarios = [s for s in ORDER if s in args.scenarios.split(",")]
    targets = [t for t in ("project", "bare") if t in args.targets.split(",")]
    options = Options(
        stack=args.stack, server=args.server, layer=args.layer, processes=args.processes, pg_url=args.pg_url,
        redis_url=args.redis_url, users=sizes.users(scenarios), log=log,
        pending=sizes.drain if "drain" in scenarios else 0, rooms=sizes.rooms if "rooms" in scenarios else [],
        extra_env={"BENCH_BARE_LAYER": args.bare_layer},
    )  # fmt: skip
    if args.server_cpus:
        options.server_cpus = {int(cpu) for cpu in args.server_cpus.split(",")}
        others = os.sched_getaffinity(0) - options.server_cpus
        if not others:
            raise SystemExit("--server-cpus leaves no CPU for the load generator")
        os.sched_setaffinity(0, others)  # the bench, and the client processes it starts
    if args.pings:
        interval, timeout = (str(int(v)) for v in args.pings.split(","))
        options.pings = ["--ping-interval", interval, "--ping-timeout", timeout]
    results.update({
        "meta": {
            "stack": args.stack,
            "server": args.server,
            "layer": args.layer if args.stack == "scaleout" else "in-memory",
            "processes": args.processes or (2 if args.stack == "scaleout" else 1),
            "daphne_pings": " ".join(options.pings),
            "server_cpus": sorted(options.server_cpus),
            "quick": args.quick,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "sizes": vars(sizes),
        },  # fmt: skip
        "scenarios": {s: {} for s in scenarios},
    })  # fmt: skip
    for target in targets:
        stack = Stack(target, options)
        try:
            log(f"{target}: starting ({args.stack}, {args.server}, {stack.n} process(es), {options.users} users)")
            stack.start()
            log(f"{target}: serving on {', '.join(stack.urls)}")
            asyncio.run(run_target(stack, scenarios, sizes, results["scenarios"]))
        except Exception:
            log(f"{target}: failed; server log:\n{stack.server_log()}")
            raise
        finally:
            stack.stop()
            log(f"{target}: stopped, cleaned up")
    return results


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    import os

    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.platform()}"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    results: dict[str, Any] = {}
    code = 0
    try:
        run(args, results)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped; results so far:")
        code = 130
    if not results:
        return code
    print(report.text(results))
    if args.json:
        report.write_json(results, args.json)
        log(f"raw results in {args.json}")
    if args.plot:
        report.plot(results, args.plot)
        log(f"plot in {args.plot}")
    return code


if __name__ == "__main__":
    sys.exit(main())
