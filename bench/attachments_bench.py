"""Figures for attachments (issue 21), on one server process (daphne, a
fresh SQLite database and media folder in a temp dir):

1. Memory: the server's RSS, sampled every 5 ms, while one 10 MiB file is
   uploaded, against its RSS just before (after a warm-up upload, so lazy
   imports are not counted). An upload is streamed to a temporary file, so
   the peak must stay within 2 MiB of the baseline.
2. Concurrency: 50 image uploads of about 1 MiB at once (PNGs of noise,
   each decoded, re-encoded and thumbnailed by Pillow in a worker thread),
   p50 and p99 per upload, while 10 pairs of users keep chatting (20
   messages a second); the chat's p99 must stay under 100 ms. The same
   chat alone first, for comparison.

    .venv/bin/python bench/attachments_bench.py [--server uvicorn] [--json out.json] [--py-spy out.txt]

With --py-spy, py-spy samples the server (every thread, only while it holds
the GIL) during the concurrent uploads and writes collapsed stacks there:
what the event loop's thread competes with for the GIL.

Not a test: a measurement for docs/performance.md. It cleans up after itself.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import BenchClient, Tracker, close_many, login_many, open_many  # noqa: E402
from bench.scenarios import pct  # noqa: E402
from bench.stack import Options, Stack  # noqa: E402
from chatclient.upload import http_base, upload  # noqa: E402

MiB = 1024 * 1024


def noise_png(seed: int, side: int = 590) -> bytes:
    """A PNG of random pixels: it does not compress, so about 1 MiB."""
    from PIL import Image

    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory(stack: Stack, base: str, token: str, folder: Path, runs: int = 3) -> dict[str, object]:
    """Peak RSS over the baseline while a 10 MiB file uploads, for `runs` uploads."""
    pid = stack.server_pids[0]
    big = folder / "big.pdf"
    big.write_bytes(b"%PDF-1.4\n" + os.urandom(10 * MiB - 100) + b"\n%%EOF\n")
    warm = folder / "warm.pdf"
    warm.write_bytes(b"%PDF-1.4\n" + os.urandom(2 * MiB) + b"\n%%EOF\n")
    upload(base, token, str(warm))
    results = []
    for _ in range(runs):
        time.sleep(0.5)
        baseline = rss_kib(pid)
        peak, done = baseline, threading.Event()

        def sample(done: threading.Event = done) -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_kib(pid))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        upload(base, token, str(big))
        elapsed = time.perf_counter() - started
        time.sleep(0.2)
        done.set()
        sampler.join()
        results.append({"baseline_kib": baseline, "peak_kib": peak, "over_kib": peak - baseline, "seconds": elapsed})
    return {"file_bytes": big.stat().st_size, "runs": results, "max_over_kib": max(r["over_kib"] for r in results)}


Pairs = list[tuple[BenchClient, BenchClient]]


chat_bodies: list[list[str]] = []


async def chat(pairs: Pairs, tracker: Tracker, seconds: float, rate: float) -> list[float]:
    """Messages at `rate` a second across the pairs, for `seconds`; their latencies."""
    bodies: list[str] = []
    chat_bodies.append(bodies)
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    tasks = []
    while loop.time() - start < seconds:
        a, b = pairs[n % len(pairs)]
        body = f"m{n}-{random.random()}"
        bodies.append(body)
        tasks.append(loop.create_task(a.send(b.name, body)))
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.5)
    return tracker.latencies(bodies)


def py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` (GIL holders, per thread) until interrupted."""
    cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--threads", "--gil"]
    cmd += ["--rate", "200", "--format", "raw", "--output", out, "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def concurrency(
    stack: Stack,
    base: str,
    tokens: list[str],
    folder: Path,
    count: int = 50,
    profile: str | None = None,
    uploader_nice: int = 0,
) -> dict[str, object]:
    tracker = Tracker()
    names = [f"u{i}" for i in range(1, 21)]
    clients = await open_many(names, stack.urls, tracker)
    await login_many(clients)
    pairs = [(clients[i], clients[i + 1]) for i in range(0, 20, 2)]
    alone = await chat(pairs, tracker, 10, 20)

    images = []
    for i in range(count):
        path = folder / f"noise{i}.png"
        path.write_bytes(noise_png(i))
        images.append(path)

    # The uploads come from a process of their own, so that their threads
    # do not delay this process's chat clients (what is measured is the
    # server's latency, not the load generator's).
    (folder / "tokens.json").write_text(json.dumps(tokens))
    spy = py_spy(stack.server_pids[0], profile) if profile else None
    started = time.perf_counter()
    # With --uploader-nice the uploading clients yield the cores to the
    # server, as clients on machines of their own would.
    niced = ["nice", "-n", str(uploader_nice)] if uploader_nice else []
    uploader = await asyncio.create_subprocess_exec(
        *niced, sys.executable, __file__, "--uploader", str(folder), base, str(count), stdout=asyncio.subprocess.PIPE
    )
    during_task = asyncio.get_running_loop().create_task(chat(pairs, tracker, 10, 20))
    out, _ = await uploader.communicate()
    wall = time.perf_counter() - started
    times = json.loads(out)
    during = await during_task
    # When the slowest chat messages of that phase were sent (seconds after
    # the uploads started) and their latency: a burst, or all along?
    slow = sorted(
        (
            (tracker.sent[b] - started, tracker.received[b] - tracker.sent[b])
            for b in chat_bodies[-1]
            if b in tracker.received
        ),
        key=lambda x: -x[1],
    )[:10]
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    await close_many(clients)
    return {
        "uploads": count,
        "image_bytes_mean": sum(p.stat().st_size for p in images) // count,
        "upload_p50_ms": pct(times, 0.5),
        "upload_p99_ms": pct(times, 0.99),
        "upload_max_ms": round(max(times) * 1000, 1),
        "all_uploads_s": round(wall, 2),
        "chat_alone": {"messages": len(alone), "p50_ms": pct(alone, 0.5), "p99_ms": pct(alone, 0.99)},
        "chat_during_uploads": {"messages": len(during), "p50_ms": pct(during, 0.5), "p99_ms": pct(during, 0.99)},
        "chat_during_slowest": [[round(t, 2), round(ms * 1000)] for t, ms in slow],
    }


async def tokens_for(stack: Stack, count: int) -> list[str]:
    tracker = Tracker()
    clients = await open_many([f"u{i}" for i in range(21, 21 + count)], stack.urls, tracker)
    tokens = [(await c.login())["token"] for c in clients]
    await close_many(clients)
    return tokens


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {system}"


def uploader(folder: Path, base: str, count: int) -> None:
    """The upload side of `concurrency`: `count` uploads at once from as
    many threads; prints each one's seconds as JSON."""
    tokens = json.loads((folder / "tokens.json").read_text())

    def one(i: int) -> float:
        started = time.perf_counter()
        upload(base, tokens[i % len(tokens)], str(folder / f"noise{i}.png"), timeout=300)
        return time.perf_counter() - started

    with ThreadPoolExecutor(count) as pool:
        print(json.dumps(list(pool.map(one, range(count)))))


def main() -> None:
    if sys.argv[1:2] == ["--uploader"]:
        uploader(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--py-spy", help="profile the server during the concurrent uploads into this file")
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    parser.add_argument(
        "--uploader-nice", type=int, default=0, help="run the 50 uploading clients at this nice level (0 to 19)"
    )
    args = parser.parse_args()
    env = {"CHAT_ATTACHMENT_BYTES_PER_DAY": str(10**12), "LOG_LEVEL": "ERROR"}
    options = Options(users=40, server=args.server, extra_env=env)
    stack = Stack("project", options).start()
    try:
        base = http_base(stack.urls[0])
        tokens = asyncio.run(tokens_for(stack, 10))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            figures = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine(),
                "command": f"bench/attachments_bench.py --server {args.server} --uploader-nice {args.uploader_nice}",
                "load_average_before": os.getloadavg(),
                "memory_10mib_upload": memory(stack, base, tokens[0], folder),
                "concurrent_image_uploads": asyncio.run(
                    concurrency(stack, base, tokens, folder, profile=args.py_spy, uploader_nice=args.uploader_nice)
                ),
                "load_average_after": os.getloadavg(),
            }
    finally:
        stack.stop()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
