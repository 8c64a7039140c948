"""Compare channels_redis's two layers on the scale-out path, by measurement.

    .venv/bin/python bench/layer_compare.py                # core and pubsub, 3 rounds each
    .venv/bin/python bench/layer_compare.py --rounds 1 --layers pubsub

For each layer in turn (alternating, so a noisy neighbour hurts both), it
starts 2 daphne processes on a fresh PostgreSQL database and a private
redis-server (so Redis's CPU is ours alone), with CHANNEL_LAYER set, rate
limits off and a cheap password hasher (a settings module written to a
temporary folder). It logs --users clients in, spread over the processes,
then:

- private: --pairs sender/recipient pairs, each pair's two users on
  different processes; each sender keeps --in-flight messages on their way
  (a message is on its way until its recipient has it; recipients ack
  every message), for --seconds. Delivered/s, p50/p99 latency from `send`
  to the recipient's `message` event.
- CPU: utime+stime (/proc/<pid>/stat) of the two server processes and of
  redis-server over the private phase, per delivered message.
- broadcast: --broadcasts broadcasts one after the other by one user; the
  time until every other online user has each (median).

Figures are the median of --rounds rounds per layer. It talks only to
127.0.0.1 and cleans up after itself.
"""

import argparse
import asyncio
import json
import os
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
TICKS = os.sysconf("SC_CLK_TCK")
SETTINGS = """from chatsite.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(proc, port, what):
    for _ in range(400):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def cpu_seconds(pid):
    """utime + stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    def __init__(self, name, url):
        self.name, self.url = name, url
        self.ref = 0
        self.errors = 0
        self.on_message = None  # callback(frame, receive time)

    async def open(self):
        self.ws = await websockets.connect(self.url, max_size=None)
        self.waiting = {}
        self.reader = asyncio.create_task(self.read())

    async def read(self):
        async for raw in self.ws:
            now = time.perf_counter()
            frame = json.loads(raw)
            kind = frame["type"]
            if kind in ("ok", "error"):
                if kind == "error":
                    self.errors += 1
                future = self.waiting.pop(frame.get("ref"), None)
                if future is not None:
                    future.set_result(frame)
            elif kind == "message":
                await self.ws.send(json.dumps({"type": "ack", "ids": [frame["id"]]}))
                if self.on_message is not None:
                    self.on_message(frame, now)

    async def request(self, type, **fields):
        self.ref += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.ref] = future
        await self.ws.send(json.dumps({"type": type, "ref": self.ref, **fields}))
        return await future

    async def send_nowait(self, type, **fields):
        self.ref += 1
        await self.ws.send(json.dumps({"type": type, "ref": self.ref, **fields}))

    async def close(self):
        await self.ws.close()
        self.reader.cancel()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


async def measure(urls, pids, args):
    clients = [Client(f"lc{i + 1}", urls[i % len(urls)]) for i in range(args.users)]
    await asyncio.gather(*(c.open() for c in clients))
    replies = await asyncio.gather(
        *(c.request("login", username=c.name, password=PASSWORD, takeover=True) for c in clients)
    )
    assert all(r["type"] == "ok" for r in replies), [r for r in replies if r["type"] != "ok"][:3]
    await asyncio.sleep(1.5)  # presence announcements and pending pushes settle

    # --- private, closed loop ---
    latencies, delivered = [], 0
    started = {}  # body -> send time
    measuring = False
    stop_at = 0.0
    pairs = [(clients[2 * k], clients[2 * k + 1]) for k in range(args.pairs)]  # different processes
    slots = {sender.name: asyncio.Semaphore(args.in_flight) for sender, _ in pairs}

    def received(frame, now):
        nonlocal delivered
        body = frame["body"]
        sent_at = started.pop(body, None)
        if sent_at is None:
            return  # a re-push, or a broadcast
        sender = body.split(":", 1)[0]
        slots[sender].release()
        if measuring and now <= stop_at:
            delivered += 1
            latencies.append(now - sent_at)

    for _, recipient in pairs:
        recipient.on_message = received

    async def talk(sender, recipient):
        k = 0
        while time.perf_counter() < stop_at:
            await slots[sender.name].acquire()
            k += 1
            body = f"{sender.name}:{k}"
            started[body] = time.perf_counter()
            await sender.send_nowait("send", to=recipient.name, body=body)

    cpu_before = [cpu_seconds(pid) for pid in pids]
    t0 = time.perf_counter()
    stop_at = t0 + args.seconds
    measuring = True
    talkers = [asyncio.create_task(talk(s, r)) for s, r in pairs]
    await asyncio.sleep(args.seconds)
    elapsed = time.perf_counter() - t0
    cpu_after = [cpu_seconds(pid) for pid in pids]
    measuring = False
    for sem in slots.values():  # let the talkers see the end
        for _ in range(args.in_flight):
            sem.release()
    await asyncio.gather(*talkers)
    deadline = time.perf_counter() + 30
    while started and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    lost = len(started)

    server_cpu = sum(cpu_after[:-1]) - sum(cpu_before[:-1])
    redis_cpu = cpu_after[-1] - cpu_before[-1]

    # --- broadcast ---
    fanouts = []
    for b in range(args.broadcasts):
        body = f"broadcast-{b}-{time.time()}"
        missing = {c.name for c in clients[1:]}
        done = asyncio.get_running_loop().create_future()

        def got(frame, now, body=body, missing=missing, done=done):
            if frame["body"] == body:
                missing.discard(frame["recipient"])
                if not missing and not done.done():
                    done.set_result(now)

        previous = {c.name: c.on_message for c in clients}
        for c in clients[1:]:
            c.on_message = lambda frame, now, name=c.name, got=got: (
                got({**frame, "recipient": name}, now) if frame["body"].startswith("broadcast-") else None
            )
        t = time.perf_counter()
        await clients[0].request("broadcast", body=body)
        fanouts.append(await asyncio.wait_for(done, 30) - t)
        for c in clients:
            c.on_message = previous[c.name]
        await asyncio.sleep(0.2)

    errors = sum(c.errors for c in clients)
    await asyncio.gather(*(c.close() for c in clients))
    return {
        "delivered_per_s": delivered / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "server_cpu_ms_per_msg": server_cpu / max(delivered, 1) * 1000,
        "redis_cpu_ms_per_msg": redis_cpu / max(delivered, 1) * 1000,
        "broadcast_ms": statistics.median(fanouts) * 1000,
        "lost": lost,
        "errors": errors,
    }


def one_round(layer, env, redis_pid, args):
    env = {**env, "CHANNEL_LAYER": layer}
    ports = [free_port() for _ in range(args.processes)]
    procs = []
    try:
        for port in ports:
            daphne = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"]
            proc = subprocess.Popen(daphne, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=args.server_log)
            procs.append(wait_port(proc, port, "daphne"))
        urls = [f"ws://127.0.0.1:{p}/ws/chat/" for p in ports]
        return asyncio.run(measure(urls, [p.pid for p in procs] + [redis_pid], args))
    finally:
        for proc in procs:
            stop(proc)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="core,pubsub")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--users", type=int, default=100, help="online during the run")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--in-flight", type=int, default=8, help="per sender")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--broadcasts", type=int, default=5)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", help="also write every round's figures to this file")
    args = parser.parse_args()
    assert args.users >= 2 * args.pairs

    tmp = Path(tempfile.mkdtemp(prefix="chat-layers-"))
    (tmp / "layer_compare_settings.py").write_text(SETTINGS)
    args.server_log = open(tmp / "servers.log", "ab")  # noqa: SIM115 (lives as long as the run)
    db = f"chatlayers{os.getpid()}"
    redis_port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "layer_compare_settings",
        "DATABASE_URL": f"{args.database_url.rsplit('/', 1)[0]}/{db}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CHANNEL_LAYER_PREFIX": f"lc{os.getpid()}",
        "CHAT_RATE_LIMIT_COUNT": "0",
        "CHAT_BROADCAST_RATE_COUNT": "0",
        "CHAT_CONNECTION_RATE": "0",
        "CHAT_SIGNUPS_PER_ADDRESS": "0",
        "CHAT_PASSWORD_FAILURES_PER_ADDRESS": "0",
        "LOG_LEVEL": "WARNING",
    }
    redis_command = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
    redis = subprocess.Popen([*redis_command, "--appendonly", "no"], cwd=tmp, stdout=subprocess.DEVNULL)
    subprocess.run(["psql", args.database_url, "-qc", f"CREATE DATABASE {db}"], check=True)
    results = {layer: [] for layer in args.layers.split(",")}
    try:
        wait_port(redis, redis_port, "redis-server")
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        seed = [*manage, "chat_seed", "--users", str(args.users), "--prefix", "lc", "--password", PASSWORD]
        subprocess.run(seed, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        layers = list(results)
        for r in range(args.rounds):
            for layer in layers if r % 2 == 0 else layers[::-1]:
                figures = one_round(layer, env, redis.pid, args)
                results[layer].append(figures)
                print(f"round {r + 1} {layer:<7}", " ".join(f"{k}={v:.3g}" for k, v in figures.items()), flush=True)
    finally:
        stop(redis)
        subprocess.run(["psql", args.database_url, "-qc", f"DROP DATABASE IF EXISTS {db}"], check=False)
    print(
        f"\n{args.processes} daphne processes, PostgreSQL + private Redis, {os.cpu_count()} cores; {args.users} online,"
        f" {args.pairs} pairs x {args.in_flight} in flight for {args.seconds:g} s; median of {args.rounds} rounds"
    )
    keys = list(next(iter(results.values()))[0])
    print(f"{'':<22}" + "".join(f"{layer:>12}" for layer in results))
    for key in keys:
        print(f"{key:<22}" + "".join(f"{statistics.median(r[key] for r in rs):12.3g}" for rs in results.values()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
