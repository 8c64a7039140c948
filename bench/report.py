"""Results as text tables (project against bare), JSON, and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Results = dict[str, Any]  # {"meta": {...}, "scenarios": {scenario: {target: figures}}}
TARGETS = ("project", "bare")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title] + [
        "  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    return "\n".join(lines)


def _get(results: Results, scenario: str, target: str) -> dict[str, Any]:
    return results["scenarios"].get(scenario, {}).get(target) or {}


def _cpu_rows(label: str, cpu: dict[str, Any]) -> list[list[Any]]:
    return [[f"{label} CPU-ms/msg {k}", v] for k, v in sorted(cpu.items())]


def text(results: Results) -> str:
    """Every scenario's figures, the project beside the bare reference."""
    meta = results["meta"]
    out = [
        f"{meta['stack']} stack, {meta['server']}, layer {meta['layer']}, {meta['processes']} process(es);"
        f" {meta['date']}; {meta['machine']}"
    ]
    sc = results["scenarios"]
    header = ["", *TARGETS]

    if "closed" in sc:
        p, b = _get(results, "closed", "project"), _get(results, "closed", "bare")
        rows = [[k, p.get(k), b.get(k)] for k in ("delivered_per_s", "sent", "delivered", "errors", "p50_ms", "p99_ms")]
        for comp in sorted(set(p.get("cpu_ms_per_msg", {})) | set(b.get("cpu_ms_per_msg", {}))):
            rows.append(
                [f"CPU-ms/msg {comp}", p.get("cpu_ms_per_msg", {}).get(comp), b.get("cpu_ms_per_msg", {}).get(comp)]
            )
        out.append(_table("\nClosed loop, private messages at saturation", header, rows))
    if "open" in sc:
        rows = []
        for target in TARGETS:
            for pt in _get(results, "open", target).get("points", []):
                cpu = pt.get("cpu_ms_per_msg", {})
                figures = [pt[k] for k in ("rate", "achieved_offered_per_s", "p50_ms", "p90_ms", "p99_ms")]
                figures += [pt["undelivered_after_grace"], cpu.get("server"), cpu.get("postgres"), cpu.get("redis")]
                rows.append([target, *figures])
        head = ["", "rate", "offered", "p50 ms", "p90 ms", "p99 ms", "undelivered", "cpu srv", "cpu pg", "cpu redis"]
        out.append(_table("\nOpen loop, private messages: latency send -> recipient (CPU-ms per message)", head, rows))
    if "fanout" in sc:
        p, b = _get(results, "fanout", "project"), _get(results, "fanout", "bare")
        rows = [
            [f"{n} online: median ms", p.get(n, {}).get("median_ms"), b.get(n, {}).get("median_ms")]
            for n in sorted(set(p) | set(b), key=int)
        ]
        rows += [
            [f"{n} online: sockets open", p.get(n, {}).get("online"), b.get(n, {}).get("online")]
            for n in sorted(set(p) | set(b), key=int)
        ]
        rows += [
            [f"{n} online: client-bound", _bound(p.get(n, {})), _bound(b.get(n, {}))]
            for n in sorted(set(p) | set(b), key=int)
        ]
        out.append(_table("\nFan-out: one broadcast until every online user has it", header, rows))
    if "rooms" in sc:
        out.append(_rooms(results))
    if "drain" in sc:
        p, b = _get(results, "drain", "project"), _get(results, "drain", "bare")
        rows = [[k, p.get(k), b.get(k)] for k in ("pending", "received", "seconds", "from_login_request_s", "per_s")]
        out.append(_table("\nDrain: messages waiting at login, login ok -> last arrived", header, rows))
    if "idle" in sc:
        p, b = _get(results, "idle", "project"), _get(results, "idle", "bare")
        keys: tuple[str, ...] = (
            "connections", "logged_in", "rss_before_kib", "rss_after_kib", "kib_per_conn", "idle_s", "idle_cpu_s",
            "idle_cpu_pct", "no_connection_cpu_pct", "idle_presence_frames", "open_at_end", "client_cpu_peak",
        )  # fmt: skip
        rows = [[k, p.get(k), b.get(k)] for k in keys]
        rows.append(["client-bound", _bound(p), _bound(b)])
        out.append(_table("\nIdle logged-in connections: server RSS, and server CPU while nobody talks", header, rows))
    if "reconnect" in sc:
        r = _get(results, "reconnect", "project")
        keys = ("clients", "login_failed", "restart_s", "back", "missing", "back_p50_s", "back_p99_s", "back_max_s",
                "presence_frames", "presence_frames_per_user", "said_count", "client_cpu_peak")  # fmt: skip
        rows = [[k, r.get(k)] for k in keys] + [["client-bound", _bound(r)]]
        out.append(_table("\nRestart with terminal clients connected: back online by resume token (s after it"
                          " listens again)", ["", "project"], rows))  # fmt: skip
        for line in r.get("said", []):
            out.append(f"  a client said: {line}")
    if "storm" in sc:
        rows = []
        for target in TARGETS:
            for mode, mode_rows in _get(results, "storm", target).items():
                for r in mode_rows:
                    # A batch goes to each connection at most once a second while
                    # the storm lasts (and once more after): per user-second.
                    per_s = r["presence_frames"] / (r["users"] * (r["login_s"] + 1))
                    figures = [r["users"], r["login_s"], r["presence_frames"], r["frames_per_user"], round(per_s, 2)]
                    rows.append([target, mode, *figures])
        head = ["", "presence", "users", "login s", "frames", "frames/user", "per user-s"]
        out.append(_table("\nLogin storm: presence frames received by all clients", head, rows))
    return "\n".join(out)


def _bound(figures: dict[str, Any]) -> str | None:
    """Whether a client process was busier than 90% of a core while the
    figure was taken: then the load generator may have set the pace."""
    if "client_bound" not in figures:
        return None
    return "CLIENT-BOUND" if figures["client_bound"] else "no"


ROOM_TARGET = 1.5  # issue 20: project room p50 at most this times the bare app's broadcast p50


def _rooms(results: Results) -> str:
    """Room fan-out beside the bare app's broadcast to as many (the target)."""
    p, b = _get(results, "rooms", "project"), _get(results, "rooms", "bare")
    rows = []
    for n in sorted((set(p) | set(b)) - {"list"}, key=int):
        room, bare_room = p.get(n, {}).get("room", {}), b.get(n, {}).get("room", {})
        bare_broadcast = b.get(n, {}).get("broadcast", {}).get("p50_ms")
        ratio = room.get("p50_ms") / bare_broadcast if room.get("p50_ms") and bare_broadcast else None
        verdict = None if ratio is None else "met" if ratio <= ROOM_TARGET else "missed"
        broadcast = p.get(n, {}).get("broadcast", {}).get("p50_ms")
        shown = None if ratio is None else round(ratio, 2)
        rows.append([f"{n} members", room.get("p50_ms"), room.get("p99_ms"), broadcast, bare_room.get("p50_ms"),
                     bare_room.get("p99_ms"), bare_broadcast, shown, verdict])  # fmt: skip
    head = ["", "room p50", "p99", "broadcast p50", "bare room p50", "p99", "bare broadcast p50", "ratio", "<= 1.5x"]
    text = _table("\nRooms: a room message until every member online has it (ms; ratio: project room p50 /"
                  " bare broadcast p50)", head, rows)  # fmt: skip
    listed = p.get("list")
    if listed:
        text += (
            f"\n  `rooms` for a user in {listed['rooms']} rooms: p50 {listed['p50_ms']} ms, p99 {listed['p99_ms']} ms"
        )
    return text


def write_json(results: Results, path: str) -> None:
    Path(path).write_text(json.dumps(results, indent=2))


def plot(results: Results, path: str) -> None:
    """Latency curve (p50/p99 against offered rate) and the sizes (fan-out, drain)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for target, color in zip(TARGETS, ("tab:blue", "tab:orange"), strict=True):
        points = _get(results, "open", target).get("points", [])
        rates = [p["rate"] for p in points]
        for key, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
            values = [p[key] if p[key] is not None else float("nan") for p in points]
            if rates:
                ax.plot(rates, values, style, color=color, label=f"{target} {key[:3]}")
    ax.set(xlabel="offered messages/s", ylabel="send -> recipient (ms)", title="Private latency", yscale="log")
    ax.legend()
    ax = axes[1]
    sizes = sorted({n for t in TARGETS for n in _get(results, "fanout", t)}, key=int)
    width = 0.38
    for i, target in enumerate(TARGETS):
        data = _get(results, "fanout", target)
        values = [data.get(n, {}).get("median_ms") or 0 for n in sizes]
        ax.bar([j + i * width for j in range(len(sizes))], values, width, label=target)
    ax.set_xticks([j + width / 2 for j in range(len(sizes))], [f"{n} online" for n in sizes])
    ax.set(ylabel="median ms until all have it", title="Broadcast fan-out")
    ax.legend()
    ax = axes[2]
    values = [_get(results, "drain", t).get("seconds") or 0 for t in TARGETS]
    ax.bar(list(TARGETS), values, color=["tab:blue", "tab:orange"])
    pending = _get(results, "drain", "project").get("pending") or _get(results, "drain", "bare").get("pending")
    ax.set(ylabel="seconds from login ok to last", title=f"Drain of {pending} waiting messages")
    meta = results["meta"]
    fig.suptitle(f"{meta['stack']}, {meta['server']}, layer {meta['layer']}, {meta['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
