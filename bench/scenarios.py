"""The scenarios: each drives one started ``Stack`` and returns its figures.

All run in the load generator's one event loop; times are perf_counter
seconds, reported in ms. Every scenario opens its own connections and closes
them, so they run in any order (the CLI's order puts fan-out last: a
broadcast leaves a pending message for every offline user).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.clients import BenchClient, Tracker, close_many, login_many, open_many, quiet
from bench.crowd import CpuWatch, Crowd, proc_cpu
from bench.stack import Stack

Log = Callable[[str], None]
ORDER = ["closed", "open", "drain", "idle", "storm", "fanout", "rooms", "reconnect"]


@dataclass
class Sizes:
    pairs: int = 10
    window: int = 8
    seconds: float = 8.0
    rates: list[int] = field(default_factory=lambda: [100, 200, 500])
    rate_seconds: float = 5.0
    grace: float = 5.0
    fanout: list[int] = field(default_factory=lambda: [100, 1000])
    broadcasts: int = 10
    rooms: list[int] = field(default_factory=lambda: [100, 1000])  # members online besides the sender
    room_messages: int = 20
    room_list: int = 500  # rooms of one user, for the time `rooms` takes
    drain: int = 10_000
    idle: int = 1000
    storm: list[int] = field(default_factory=lambda: [250, 500, 1000])
    storm_concurrency: int = 20
    settle: float = 2.0  # seconds for disconnects (and their presence) to settle between steps
    idle_seconds: float = 30.0  # how long the idle connections are watched doing nothing
    presence_quiet: float = 6.0  # no presence frame for this long: the logins' presence is over
    reconnect: int = 1000  # terminal clients connected when the server restarts
    reconnect_timeout: float = 120.0
    client_processes: int = 0  # idle, fanout, reconnect: client processes (0: the bench's own)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            pairs=2, window=4, seconds=1.0, rates=[20, 50], rate_seconds=1.0, grace=2.0, fanout=[10], broadcasts=2,
            drain=200, idle=20, storm=[10], storm_concurrency=5, settle=0.2, rooms=[10], room_messages=3,
            room_list=5, idle_seconds=1.0, presence_quiet=0.5, reconnect=10, reconnect_timeout=60.0,
        )  # fmt: skip

    def users(self, scenarios: Sequence[str] = ORDER) -> int:
        """How many users to seed: the most any of `scenarios` logs in at once."""
        needs = {"closed": 2 * self.pairs, "open": 2 * self.pairs, "fanout": max(self.fanout) + 1}
        needs["rooms"] = max([*self.rooms, 3]) + 1
        needs.update(idle=self.idle, storm=max(self.storm), drain=0, reconnect=self.reconnect)
        return max([2, *(needs[s] for s in scenarios)])


def pct(values: Sequence[float], p: float) -> float | None:
    """The p-quantile of seconds, in ms (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000, 1)


def cpu_per_message(before: dict[str, float], after: dict[str, float], delivered: int) -> dict[str, float | None]:
    """CPU-ms per delivered message, per component."""
    return {k: (round((after[k] - before[k]) * 1000 / delivered, 3) if delivered else None) for k in after}


async def _pairs(stack: Stack, sizes: Sizes, tracker: Tracker) -> tuple[list[BenchClient], list[BenchClient]]:
    names = [f"u{i}" for i in range(1, 2 * sizes.pairs + 1)]
    clients = await open_many(names, stack.urls, tracker)
    await login_many(clients)
    await quiet(clients, seconds=0.2 + sizes.settle)  # presence of the logins settles
    return clients[: sizes.pairs], clients[sizes.pairs :]


async def closed_loop(stack: Stack, sizes: Sizes, log: Log) -> dict[str, Any]:
    """Senders each keep `window` messages in flight (sent, not yet received
    by the recipient) for `seconds`: delivered/s at saturation."""
    tracker = Tracker()
    senders, recipients = await _pairs(stack, sizes, tracker)
    run = uuid.uuid4().hex[:6]
    errors = 0
    bodies: list[str] = []
    start = time.perf_counter()
    end = start + sizes.seconds
    cpu0 = stack.cpu()

    async def one(sender: BenchClient, recipient: BenchClient, body: str) -> None:
        nonlocal errors
        try:
            await sender.send(recipient.name, body)
            await asyncio.wait_for(tracker.wait_for(body), 30)
        except Exception:  # noqa: BLE001  (an error reply or a timeout: counted, not fatal)
            errors += 1

    async def sender_loop(k: int) -> None:
        gate = asyncio.Semaphore(sizes.window)
        tasks = []
        seq = 0
        while time.perf_counter() < end:
            await gate.acquire()
            seq += 1
            body = f"c{run}-{k}-{seq}"
            bodies.append(body)
            task = asyncio.ensure_future(one(senders[k], recipients[k], body))
            task.add_done_callback(lambda _t: gate.release())
            tasks.append(task)
        await asyncio.gather(*tasks)

    await asyncio.gather(*(sender_loop(k) for k in range(sizes.pairs)))
    cpu1 = stack.cpu()
    in_window = sum(1 for b in bodies if tracker.received.get(b, end + 1) <= end)
    delivered = sum(1 for b in bodies if b in tracker.received)
    latencies = tracker.latencies(bodies)
    await close_many(senders + recipients)
    result = {
        "delivered_per_s": round(in_window / sizes.seconds, 1),
        "sent": len(bodies),
        "delivered": delivered,
        "errors": errors,
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "cpu_ms_per_msg": cpu_per_message(cpu0, cpu1, delivered),
    }
    log(f"    closed loop: {result['delivered_per_s']}/s delivered, p50 {result['p50_ms']} ms, errors {errors}")
    return result


async def open_loop(stack: Stack, sizes: Sizes, log: Log) -> dict[str, Any]:
    """Sends at each offered rate, whatever the replies: the latency curve."""
    tracker = Tracker()
    senders, recipients = await _pairs(stack, sizes, tracker)
    run = uuid.uuid4().hex[:6]
    points = []
    for rate in sizes.rates:
        total = max(1, int(rate * sizes.rate_seconds))
        bodies = [f"o{run}-{rate}-{i}" for i in range(total)]
        errors = 0

        async def one(i: int, body: str) -> None:
            nonlocal errors
            try:
                await senders[i % sizes.pairs].send(recipients[i % sizes.pairs].name, body)
            except Exception:  # noqa: BLE001  (counted)
                errors += 1

        cpu0 = stack.cpu()
        start = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i, body)))
        last_send = time.perf_counter()
        offered = total / max(last_send - start, 1e-9) if total > 1 else float(rate)
        waiting = [
            asyncio.wait_for(tracker.wait_for(b), max(0.01, last_send + sizes.grace - time.perf_counter()))
            for b in bodies
        ]
        await asyncio.gather(*waiting, return_exceptions=True)
        cpu1 = stack.cpu()
        latencies = tracker.latencies(bodies)
        delivered = len(latencies)
        point = {
            "rate": rate,
            "achieved_offered_per_s": round(offered, 1),
            "sent": total,
            "errors": errors,
            "p50_ms": pct(latencies, 0.5),
            "p90_ms": pct(latencies, 0.9),
            "p99_ms": pct(latencies, 0.99),
            "undelivered_after_grace": total - delivered,
            "cpu_ms_per_msg": cpu_per_message(cpu0, cpu1, delivered),
        }
        points.append(point)
        log(
            f"    {rate}/s offered: p50 {point['p50_ms']} p90 {point['p90_ms']} p99 {point['p99_ms']} ms,"
            f" {point['undelivered_after_grace']} undelivered"
        )
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(sizes.settle / 2)
    await close_many(senders + recipients)
    return {"points": points, "grace_s": sizes.grace}


async def _online(stack: Stack, sizes: Sizes, n: int, tracker: Tracker) -> list[BenchClient]:
    """N + 1 users logged in, their presence settled: the last one speaks."""
    clients = await open_many([f"u{i}" for i in range(1, n + 2)], stack.urls, tracker)
    await login_many(clients)
    await quiet(clients, seconds=0.2 + sizes.settle)
    return clients


async def _until_all(
    tracker: Tracker, sender: BenchClient, count: int, times: int, log: Log, op: str, **fields: Any
) -> list[float]:
    """Send `op` `times` times, one after the other: seconds each took
    until `count` clients had it."""
    took = []
    for k in range(times):
        body = f"{op}-{uuid.uuid4().hex[:8]}-{k}"
        done = tracker.wait_for(body, count=count)
        start = time.perf_counter()
        await sender.s.ok(op, body=body, **fields)
        try:
            took.append(await asyncio.wait_for(done, 60) - start)
        except TimeoutError:
            log(f"    {op} {k} to {count}: only {tracker.counts.get(body, 0)} got it within 60 s")
    return took


async def fanout(stack: Stack, sizes: Sizes, log: Log) -> dict[str, Any]:
    """One user broadcasts to N online: median time until the last has it.
    The N + 1 connections are spread over the client processes."""
    out = {}
    for n in sizes.fanout:
        names = [f"u{i}" for i in range(1, n + 2)]
        sender = names[-1]
        async with Crowd(sizes.client_processes) as crowd:
            stack.loadgen_pids = crowd.pids if crowd.procs else []
            login = await crowd.log_in(names, stack.urls)
            await crowd.quiet(seconds=0.2 + sizes.settle, timeout=120)
            owner = crowd.owner(sender)
            times: list[float] = []
            reached = n  # the fewest sockets still open when a broadcast went out
            async with CpuWatch(crowd.pids) as watch:
                for k in range(sizes.broadcasts):
                    body = f"broadcast-{uuid.uuid4().hex[:8]}-{k}"
                    waits = [
                        asyncio.ensure_future(crowd.call(i, "wait_for", body=body, timeout=60))
                        for i in range(crowd.size)
                    ]
                    sent = await crowd.call(owner, "speak", name=sender, op="broadcast", fields={"body": body})
                    arrived = await asyncio.gather(*waits)
                    reached = min(reached, sum(a["expected"] for a in arrived))
                    if all(a["at"] is not None for a in arrived if a["expected"]):
                        times.append(max(a["at"] for a in arrived if a["expected"]) - sent["start"])
                    else:
                        got = sum(a["count"] for a in arrived)
                        log(f"    broadcast {k} to {n}: only {got} got it within 60 s")
            stack.loadgen_pids = []
        out[str(n)] = {
            "median_ms": pct(times, 0.5), "max_ms": pct(times, 1.0), "broadcasts": len(times),
            "login_failed": login["failed"], "online": reached, **watch.figures(),
        }  # fmt: skip
        if reached < n:
            log(f"    {n - reached} of the {n} sockets closed or never logged in (login errors: {login['errors'][:3]})")
        bound = " (client-bound)" if watch.client_bound else ""
        log(f"    broadcast to {n} online: median {out[str(n)]['median_ms']} ms until all have it{bound}")
        await asyncio.sleep(sizes.settle)  # the disconnects settle
    return out


ROOM_ADD = 100  # names in one room_create or room_add (the protocol's limit)


async def _room(stack: Stack, owner: BenchClient, members: Sequence[BenchClient], name: str) -> Any:
    """The room of `owner` and `members`: the project's was seeded
    (bench.seed); the bare app's is made here, and ready once every
    member's connection has joined its group (a `room` event)."""
    if stack.target == "project":
        return next(r["id"] for r in (await owner.s.ok("rooms"))["rooms"] if r["name"] == name)
    names = [c.name for c in members]
    reply = await owner.s.ok("room_create", name=name, members=names[:ROOM_ADD])
    room = reply["room"]["id"]
    for i in range(ROOM_ADD, len(names), ROOM_ADD):
        await owner.s.ok("room_add", room=room, usernames=names[i : i + ROOM_ADD])
    deadline = time.perf_counter() + 60
    while not all(room in c.rooms for c in members) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    return room


async def rooms(stack: Stack, sizes: Sizes, log: Log) -> dict[str, Any]:
    """A room of N members online besides the sender: p50/p99 until every
    member has a room message; and, to the same N connections, the time a
    broadcast takes (the bare app's broadcast is the issue's yardstick).
    Then (project only) how long `rooms` takes for a user in `room_list` rooms."""
    out: dict[str, Any] = {}
    for n in sizes.rooms:
        tracker = Tracker()
        clients = await _online(stack, sizes, n, tracker)
        sender, members = clients[-1], clients[:-1]
        room = await _room(stack, sender, members, f"bench-{n}")
        figures: dict[str, Any] = {"members": n}
        for kind, op, fields in (("room", "send", {"room": room}), ("broadcast", "broadcast", {})):
            times = await _until_all(tracker, sender, n, sizes.room_messages, log, op, **fields)
            figures[kind] = {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99), "messages": len(times)}
        await close_many(clients)
        out[str(n)] = figures
        log(
            f"    room of {n} online: p50 {figures['room']['p50_ms']} p99 {figures['room']['p99_ms']} ms until all"
            f" have it (broadcast to them: p50 {figures['broadcast']['p50_ms']} ms)"
        )
        await asyncio.sleep(sizes.settle)
    if stack.target == "project":
        out["list"] = await room_list(stack, sizes, log)
    return out


async def room_list(stack: Stack, sizes: Sizes, log: Log) -> dict[str, Any]:
    """`rooms` for a user in `room_list` rooms of three members, each with a
    few messages (some unread): p50/p99 of the reply time."""
    tracker = Tracker()
    me, other, third = await open_many(["u1", "u2", "u3"], stack.urls, tracker)
    await login_many([me, other, third])
    made = []
    for i in range(sizes.room_list):
        made.append((await me.s.ok("room_create", name=f"list-{i}", members=["u2", "u3"]))["room"]["id"])
    for i, room in enumerate(made):
        await other.s.ok("send", room=room, body=f"unread {i}")
        await me.s.ok("send", room=room, body=f"mine {i}")
    await quiet([me], seconds=0.5)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        reply = await me.s.ok("rooms")
        times.append(time.perf_counter() - start)
    assert len(reply["rooms"]) >= sizes.room_list
    await close_many([me, other, third])
    result = {"rooms": len(reply["rooms"]), "p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99), "calls": len(times)}
    log(f"    rooms for a user in {result['rooms']} rooms: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    return result


async def drain(stack: Stack, sizes: Sizes, log: Log) -> dict[str, Any]:
    """A user with `drain` messages waiting logs in: login `ok` to the last one."""
    tracker = Tracker()
    (client,) = await open_many(["drain"], stack.urls, tracker)
    extra: dict[str, Any] = {"bench_pending": sizes.drain} if stack.target == "bare" else {}
    asked_at = time.perf_counter()
    reply = await client.login(**extra)
    # The reply's future resumes us after the reader may have taken some
    # messages already: the first message bounds when the ok arrived.
    ok_at = min(time.perf_counter(), client.first_message or float("inf"))
    expected = sizes.drain if stack.target == "bare" else int(reply.get("pending", 0))
    deadline = ok_at + 300
    while client.messages < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    last = max(tracker.last.values(), default=ok_at)
    await close_many([client])
    seconds = last - ok_at
    result = {
        "pending": expected,
        "received": client.messages,
        "seconds": round(seconds, 3),
        "from_login_request_s": round(last - asked_at, 3),
        "per_s": round(client.messages / seconds, 1) if seconds > 0 else None,
    }
    log(f"    drain: {client.messages}/{expected} in {result['seconds']} s")
    return result


async def idle(stack: Stack, sizes: Sizes, log: Log) -> dict[str, Any]:
    """N logged-in idle connections: the server's memory per connection,
    and its CPU while nobody talks (`idle_seconds`), beside its CPU over as
    long with no connection at all."""
    await asyncio.sleep(sizes.settle / 2)
    before = stack.rss_kib()
    # What the server costs idle with no connection at all, over as long.
    base0, base_at = sum(proc_cpu(pid) or 0.0 for pid in stack.server_pids), time.perf_counter()
    await asyncio.sleep(sizes.idle_seconds)
    base = (sum(proc_cpu(pid) or 0.0 for pid in stack.server_pids) - base0) / (time.perf_counter() - base_at)
    async with Crowd(sizes.client_processes) as crowd:
        stack.loadgen_pids = crowd.pids if crowd.procs else []
        login = await crowd.log_in([f"u{i}" for i in range(1, sizes.idle + 1)], stack.urls)
        await crowd.quiet(seconds=max(sizes.settle, sizes.presence_quiet), timeout=180)
        after = stack.rss_kib()
        frames0 = (await crowd.counts())["presence_frames"]
        cpu0, at0 = sum(proc_cpu(pid) or 0.0 for pid in stack.server_pids), time.perf_counter()
        async with CpuWatch(crowd.pids) as watch:
            await asyncio.sleep(sizes.idle_seconds)
        cpu1, at1 = sum(proc_cpu(pid) or 0.0 for pid in stack.server_pids), time.perf_counter()
        counts = await crowd.counts()
        stack.loadgen_pids = []
    per = (after - before) / sizes.idle
    result = {
        "connections": sizes.idle,
        "logged_in": sizes.idle - login["failed"],
        "login_s": round(login["seconds"], 1),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": round(per, 1),
        "idle_s": round(at1 - at0, 1),
        "idle_cpu_s": round(cpu1 - cpu0, 2),
        "idle_cpu_pct": round(100 * (cpu1 - cpu0) / (at1 - at0), 2),
        "no_connection_cpu_pct": round(100 * base, 2),
        "idle_presence_frames": counts["presence_frames"] - frames0,
        "open_at_end": counts["open"],
        **watch.figures(),
    }
    log(
        f"    idle: {before} -> {after} KiB RSS, {per:.1f} KiB per connection;"
        f" {result['idle_cpu_s']} CPU-s over {result['idle_s']} s idle ({result['idle_cpu_pct']}% of a core)"
    )
    await asyncio.sleep(sizes.settle)
    return result


async def storm(stack: Stack, sizes: Sizes, log: Log) -> dict[str, Any]:
    """N users log in, a few at a time; presence frames everyone received,
    with and without the `presence_batch` login option."""
    out: dict[str, Any] = {}
    for batch in (True, False):
        rows = []
        for n in sizes.storm:
            tracker = Tracker()
            clients = await open_many([f"u{i}" for i in range(1, n + 1)], stack.urls, tracker)
            seconds = await login_many(clients, concurrency=sizes.storm_concurrency, presence_batch=batch)
            # A batch goes out at most once a second (CHAT_PRESENCE_BATCH_SECONDS).
            await quiet(clients, seconds=(1.2 if batch else 0.3) + sizes.settle / 2, timeout=120)
            frames = sum(c.presence_frames for c in clients)
            row = {"users": n, "login_s": round(seconds, 2), "presence_frames": frames}
            rows.append({**row, "frames_per_user": round(frames / n, 2)})
            mode = "presence_batch" if batch else "presence"
            log(f"    {n} logins ({mode}): {seconds:.2f} s, {frames} presence frames")
            await close_many(clients)
            await asyncio.sleep(sizes.settle)  # the disconnects settle
        out["batch" if batch else "plain"] = rows
    return out


async def reconnect(stack: Stack, sizes: Sizes, log: Log) -> dict[str, Any]:
    """A restart with N terminal clients connected (chatclient.client.ChatClient:
    its backoff and jitter, its resume token, its login): the server is
    stopped as an upgrade stops it and started again; seconds from "it
    listens again" until each client is online again, the presence frames
    they got meanwhile, and anything they printed that is not about
    reconnecting. The bare app has no resume tokens: project only."""
    if stack.target != "project":
        return {"skipped": "the bare app has no resume tokens"}
    n = sizes.reconnect
    async with Crowd(sizes.client_processes) as crowd:
        stack.loadgen_pids = crowd.pids if crowd.procs else []
        login = await crowd.log_in([f"u{i}" for i in range(1, n + 1)], stack.urls, terminal=True)
        await asyncio.sleep(sizes.presence_quiet)
        await crowd.all("reset")
        async with CpuWatch(crowd.pids) as watch:
            stopped = time.perf_counter()
            listening = await asyncio.to_thread(stack.restart)
            answers = await crowd.all("back_online", since=stopped, timeout=sizes.reconnect_timeout)
        stack.loadgen_pids = []
    back = sorted(t - listening for a in answers for t in a["back"])
    frames = sum(a["presence_frames"] for a in answers)
    said = [line for a in answers for line in a["said"]]
    result = {
        "clients": n,
        "login_failed": login["failed"],
        "restart_s": round(listening - stopped, 2),
        "back": len(back),
        "missing": sum(a["missing"] for a in answers),
        "back_p50_s": round(back[len(back) // 2], 2) if back else None,
        "back_p99_s": round(back[min(len(back) - 1, int(len(back) * 0.99))], 2) if back else None,
        "back_max_s": round(back[-1], 2) if back else None,
        "presence_frames": frames,
        "presence_frames_per_user": round(frames / n, 2),
        "said_count": sum(a["said_count"] for a in answers),
        "said": said[:10],
        **watch.figures(),
    }
    bound = " (client-bound)" if watch.client_bound else ""
    log(
        f"    restart with {n} connected: {result['back']} back, last {result['back_max_s']} s after it listened"
        f" (p50 {result['back_p50_s']} s), {frames} presence frames, {result['said_count']} lines to a person{bound}"
    )
    return result


SCENARIOS: dict[str, Callable[[Stack, Sizes, Log], Awaitable[dict[str, Any]]]] = {
    "closed": closed_loop,
    "open": open_loop,
    "drain": drain,
    "idle": idle,
    "storm": storm,
    "fanout": fanout,
    "rooms": rooms,
    "reconnect": reconnect,
}
