"""Benchmark: `manage.py chat_import` at size, against hashing alone.

    .venv/bin/python bench/import_bench.py --users 2000 --messages 20000 --rounds 3
    .venv/bin/python bench/import_bench.py --database-url postgres://postgres@127.0.0.1:5432/postgres

Each round writes a fresh legacy copy (tests.legacy.write_legacy_copy: N
users, M pending messages, with the sample's awkward cases) in a temporary
folder, and a fresh database (an SQLite file there, or with --database-url
a new PostgreSQL database on that server, dropped at the end), migrated.
Then it times, each as wall-clock time:

- hash: N passwords through make_password, on all cores (a process pool,
  --jobs processes): the floor an import of N users cannot go below;
- dry run: `chat_import PATH` (hashes and writes nothing);
- commit: `chat_import PATH --commit --jobs J`, the whole command (process
  start-up included);
- again: the same --commit a second time (imports nothing twice);

and prints the ratio commit / hash (the goal: at most 1.25). It also gives
the CPU time of each (user + system, the process and its workers; not the
PostgreSQL server's) and their ratio, which other load on the machine moves
much less than wall-clock time. The figures are the median of --rounds. The
dry run's counts must equal the commit's.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from tests.legacy import write_legacy_copy  # noqa: E402


def children_cpu() -> float:
    """CPU seconds (user + system) of the child processes waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def hash_all(passwords: list[str], jobs: int) -> tuple[float, float]:
    """(seconds, CPU seconds) to hash `passwords` with make_password on `jobs` processes."""
    from django.contrib.auth.hashers import make_password

    start, cpu = time.perf_counter(), children_cpu()
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(make_password, passwords, chunksize=max(1, len(passwords) // (jobs * 8))))
    return time.perf_counter() - start, children_cpu() - cpu


def manage(env: dict[str, str], *args: str) -> tuple[float, float, str]:
    """Run manage.py; (seconds, CPU seconds of it and its workers, its summary line)."""
    start, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    seconds, cpu = time.perf_counter() - start, children_cpu() - cpu
    lines = done.stdout.strip().splitlines()
    return seconds, cpu, next((line for line in lines if "Imported:" in line or "Would import:" in line), "")


def counts(summary: str) -> str:
    return re.sub(r"^.*?(\d+ users,)", r"\1", summary).rstrip(".") if summary else "(no summary)"


class Database:
    """A fresh database for one round: an SQLite file in `folder`, or a new
    PostgreSQL database on the server of `url`."""

    def __init__(self, folder: Path, url: str | None):
        self.server = url
        if url is None:
            self.url = f"sqlite:///{folder / 'import-bench.sqlite3'}"
            return
        import psycopg

        self.name = f"import_bench_{os.getpid()}_{int(time.time())}"
        parts = urlsplit(url)
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        if self.server is None:
            return
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def one_round(args: argparse.Namespace, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        folder = write_legacy_copy(Path(tmp), users=args.users, messages=args.messages, seed=n)
        db = Database(Path(tmp), args.database_url)
        try:
            env = {**os.environ, "DATABASE_URL": db.url}
            env.pop("REDIS_URL", None)
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            passwords = [f"bench-{n}-{i}" for i in range(args.users)]
            hashed, hashed_cpu = hash_all(passwords, args.jobs)
            dry, _, dry_summary = manage(env, "chat_import", str(folder))
            commit, commit_cpu, summary = manage(env, "chat_import", str(folder), "--commit", "--jobs", str(args.jobs))
            again, _, again_summary = manage(env, "chat_import", str(folder), "--commit", "--jobs", str(args.jobs))
        finally:
            db.drop()
    if counts(dry_summary) != counts(summary):
        raise SystemExit(f"The dry run's counts differ:\n  {dry_summary}\n  {summary}")
    print(f"round {n}: {summary}")
    print(f"  again: {again_summary}")
    figures = {
        "hash": hashed,
        "dry run": dry,
        "commit": commit,
        "again": again,
        "ratio": commit / hashed,
        "hash CPU": hashed_cpu,
        "commit CPU": commit_cpu,
        "CPU ratio": commit_cpu / hashed_cpu,
    }
    print("  " + ", ".join(f"{k} {v:.2f}" + ("" if "ratio" in k else " s") for k, v in figures.items()), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL server to make each round's database on")
    args = parser.parse_args()
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"chat_import of {args.users} users, {args.messages} messages on {backend}, "
        f"{args.jobs} jobs, {os.cpu_count()} cores, {args.rounds} round(s)",
        flush=True,
    )
    rounds = [one_round(args, n) for n in range(1, args.rounds + 1)]
    print("median:")
    for what in rounds[0]:
        value = statistics.median(r[what] for r in rounds)
        print(f"  {what}: {value:.2f}" + ("" if "ratio" in what else " s"))


if __name__ == "__main__":
    main()
