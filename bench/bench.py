"""Benchmark: a load generator against real chat servers on this machine.

    .venv/bin/python bench/bench.py                       # SQLite, one process
    .venv/bin/python bench/bench.py --scaleout            # PostgreSQL + Redis, two processes

It makes a fresh database, seeds users (manage.py chat_seed), starts daphne
(rate limit off), logs N clients in over WebSockets, then measures:

- login: time for every client to log in (Argon2 is most of it);
- private: each client sends messages to random others; latency is from
  sending a `send` to the recipient receiving the `message` event, and
  "ok" latency is from sending to the sender's `ok`;
- broadcast: one client broadcasts; time until every other client has it.

It only talks to 127.0.0.1 and stops by itself. Each figure is the median
of --rounds runs; compare configurations within one run of this script.
"""

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-42"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env, *args):
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def start_server(env, port):
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


class Client:
    def __init__(self, name, url):
        self.name, self.url = name, url
        self.ref = 0
        self.waiting = {}
        self.received = {}  # body -> receive time

    async def open(self):
        self.ws = await websockets.connect(self.url, max_size=None)
        self.reader = asyncio.create_task(self.read())

    async def read(self):
        async for raw in self.ws:
            now = time.perf_counter()
            frame = json.loads(raw)
            if frame["type"] in ("ok", "error") and frame.get("ref") in self.waiting:
                self.waiting.pop(frame["ref"]).set_result((now, frame))
            elif frame["type"] == "message":
                self.received[frame["body"]] = now
                await self.ws.send(json.dumps({"type": "ack", "ids": [frame["id"]]}))

    async def request(self, type, **fields):
        self.ref += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.ref] = future
        await self.ws.send(json.dumps({"type": type, "ref": self.ref, **fields}))
        return await future

    async def close(self):
        await self.ws.close()
        self.reader.cancel()


async def wait_until(predicate, timeout=60):
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("messages did not all arrive")
        await asyncio.sleep(0.005)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


async def run_round(urls, clients_n, messages, rate):
    clients = [Client(f"bench{i + 1}", urls[i % len(urls)]) for i in range(clients_n)]
    await asyncio.gather(*(c.open() for c in clients))
    t0 = time.perf_counter()
    replies = await asyncio.gather(
        *(c.request("login", username=c.name, password=PASSWORD, takeover=True) for c in clients)
    )
    login_s = time.perf_counter() - t0
    assert all(r[1]["type"] == "ok" for r in replies), replies[:3]
    await asyncio.sleep(0.5)  # let presence settle

    sent = {}  # body -> (send time, recipient, ok time)
    rng = random.Random(1)

    async def talk(client):
        for k in range(messages):
            peer = rng.choice([c for c in clients if c is not client])
            body = f"{client.name}-{k}"
            start = time.perf_counter()
            done, reply = await client.request("send", to=peer.name, body=body)
            assert reply["type"] == "ok", reply
            sent[body] = (start, peer, done)
            await asyncio.sleep(1 / rate)

    t0 = time.perf_counter()
    await asyncio.gather(*(talk(c) for c in clients))
    await wait_until(lambda: all(body in peer.received for body, (_, peer, _) in sent.items()))
    private_s = time.perf_counter() - t0
    latencies = [peer.received[body] - start for body, (start, peer, _) in sent.items()]
    ok_latencies = [done - start for body, (start, _, done) in sent.items()]

    body = "broadcast-" + str(time.time())
    start = time.perf_counter()
    await clients[0].request("broadcast", body=body)
    await wait_until(lambda: all(body in c.received for c in clients[1:]))
    fanout = max(c.received[body] for c in clients[1:]) - start

    await asyncio.gather(*(c.close() for c in clients))
    return {
        "login_s": login_s,
        "msgs_per_s": len(sent) / private_s,
        "p50_ms": pct(latencies, 0.5),
        "p95_ms": pct(latencies, 0.95),
        "p99_ms": pct(latencies, 0.99),
        "ok_p50_ms": pct(ok_latencies, 0.5),
        "broadcast_ms": fanout * 1000,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20, help="per client")
    parser.add_argument("--rate", type=float, default=10, help="messages per second per client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scaleout", action="store_true", help="PostgreSQL + Redis, two server processes")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    env = {**os.environ, "CHAT_RATE_LIMIT_COUNT": "0", "LOG_LEVEL": "ERROR"}
    tmp = tempfile.mkdtemp(prefix="chat-bench-")
    if args.scaleout:
        db = f"chatbench{os.getpid()}"
        base = args.database_url.rsplit("/", 1)[0]
        subprocess.run(["psql", args.database_url, "-qc", f"CREATE DATABASE {db}"], check=True)
        env.update(DATABASE_URL=f"{base}/{db}", REDIS_URL=args.redis_url, CHANNEL_LAYER_PREFIX=f"bench{os.getpid()}")
    else:
        env.update(DATABASE_URL=f"sqlite:///{tmp}/bench.sqlite3")
    env.pop("REDIS_URL", None) if not args.scaleout else None
    procs = []
    try:
        manage(env, "migrate", "--noinput")
        manage(env, "chat_seed", "--users", str(args.clients), "--prefix", "bench", "--password", PASSWORD)
        ports = [free_port() for _ in range(2 if args.scaleout else 1)]
        procs = [start_server(env, p) for p in ports]
        urls = [f"ws://127.0.0.1:{p}/ws/chat/" for p in ports]
        results = [asyncio.run(run_round(urls, args.clients, args.messages, args.rate)) for _ in range(args.rounds)]
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        if args.scaleout:
            subprocess.run(["psql", args.database_url, "-qc", f"DROP DATABASE IF EXISTS {db}"], check=False)
    setup = "PostgreSQL + Redis, 2 processes" if args.scaleout else "SQLite, 1 process"
    print(
        f"{setup}: {args.clients} clients x {args.messages} msgs at {args.rate}/s each, median of {args.rounds} rounds"
    )
    for key in results[0]:
        print(f"  {key:<14} {statistics.median(r[key] for r in results):10.1f}")


if __name__ == "__main__":
    main()
