"""A copy of the old socket server's files, built by the tests themselves.

It holds every awkward case of the sample the old server's operators handed
over (see the chat_import command): CSV quoting, a duplicate and a
password-less row, a non-ASCII name, a user without a data file, a data file
without a user, a truncated file, a file with a UTF-8 byte order mark,
unknown users in blocks and as senders, and HTML in a body.
"""

import json
from pathlib import Path

USER_PASS_CSV = (
    "alice,wonderland42\n"
    "bob,builder-2017\n"
    'carol,"comma,inside"\n'
    'dave,"say ""hi"""\n'
    "eve,ev3-secret\n"
    "bob,a-second-bob-row\n"
    "mallory\n"
    "zoë,ünïcode-pass\n"
    "walt,windows-editor\n"
)


def _message(sender, body, timestamp, operation=6):
    return {"status": 2, "message": body, "operation": operation, "sender": sender, "timestamp": timestamp}


USER_DATA = {
    "alice": {
        "signup_timestamp": "2017-04-10 09:15:02.481516",
        "to_be_delivered": [
            _message("bob", "are you there?", "2017-04-12 18:22:03.123456"),
            _message("carol", "server maintenance tonight", "2017-04-12 18:25:41.000001", operation=7),
            _message("eve", '<b>bold?</b> & "quotes"', "2017-04-12 19:01:00.5"),
        ],
        "blocked": ["dave"],
    },
    "bob": {"signup_timestamp": "2017-04-10 09:16:40.002000", "to_be_delivered": [], "blocked": []},
    "carol": {
        "signup_timestamp": "2017-04-11 11:00:00.000000",
        "to_be_delivered": [_message("ghost", "hello from someone who no longer exists", "2017-04-11 12:00:00.000000")],
        "blocked": ["ghost", "bob"],
    },
    "frank": {"signup_timestamp": "2017-04-12 08:00:00.000000", "to_be_delivered": [], "blocked": []},
    "zoë": {
        "signup_timestamp": "2017-04-12 10:00:00.000000",
        "to_be_delivered": [_message("alice", "ça va? 👋", "2017-04-12 10:05:00.000000", operation=7)],
        "blocked": [],
    },
    "walt": {
        "signup_timestamp": "2017-04-13 10:00:00.000000",
        "to_be_delivered": [_message("alice", "saved on Windows", "2017-04-13 10:05:00.000000")],
        "blocked": [],
    },
}

# Written by hand: cut off in the middle, as a crash of the old server left it.
TRUNCATED = {
    "dave.json": '{"signup_timestamp": "2017-04-11 12:30:00.000000", "to_be_delivered": [{"status": 2, "message": "trunc'
}
# Files that editors on Windows saved with a byte order mark.
WITH_BOM = {"walt"}


def write_legacy_sample(root: Path) -> Path:
    """Write server_resources/ under `root` and return its path."""
    folder = root / "server_resources"
    data = folder / "user_data"
    data.mkdir(parents=True)
    (folder / "user_pass.csv").write_text(USER_PASS_CSV, encoding="utf-8")
    for name, content in USER_DATA.items():
        encoding = "utf-8-sig" if name in WITH_BOM else "utf-8"
        (data / f"{name}.json").write_text(json.dumps(content, ensure_ascii=False), encoding=encoding)
    for filename, text in TRUNCATED.items():
        (data / filename).write_text(text, encoding="utf-8")
    return folder


def write_legacy_copy(root: Path, *, users: int, messages: int, seed: int = 0) -> Path:
    """A realistic server_resources/ of `users` users holding `messages`
    pending messages in all, under `root`; its path. The benchmark's data
    (bench/import_bench.py), and a bigger test's.

    Deterministic for a seed. Besides plain names and passwords it has the
    sample's awkward cases, in proportion: non-ASCII names, passwords that
    need CSV quoting, a duplicate and a password-less row, data files with
    a byte order mark, one without a user and one cut off, broadcasts held
    for several recipients (one message each), senders and blocked users
    who do not exist, HTML and emoji in bodies, a message held twice.
    """
    import csv
    import io
    import random
    from datetime import datetime, timedelta

    rng = random.Random(seed)
    names = [f"zoë{i}" if i % 97 == 5 else f"user{i}" for i in range(1, users + 1)]
    folder = root / "server_resources"
    data = folder / "user_data"
    data.mkdir(parents=True)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for i, name in enumerate(names):
        password = f"pw-{i}-{rng.randrange(10**8)}"
        if i % 50 == 3:
            password = f'say "hi", {password}'
        writer.writerow([name, password])
    if users >= 2:
        writer.writerow([names[1], "a-second-row"])  # reported, the first row wins
    writer.writerow(["mallory"])  # no password
    (folder / "user_pass.csv").write_text(out.getvalue(), encoding="utf-8")

    start = datetime(2017, 4, 10, 9, 0, 0)
    bodies = ["hi!", "are you there?", '<b>bold?</b> & "quotes"', "ça va? 👋", "see you tomorrow", "lunch?"]
    pending: dict[str, list[dict]] = {name: [] for name in names}
    made = 0
    while made < messages:
        sender = "ghost" if rng.random() < 0.01 else rng.choice(names)
        when = str(start + timedelta(seconds=rng.randrange(10**7), microseconds=rng.randrange(10**6)))
        body = f"{rng.choice(bodies)} #{made}"
        if rng.random() < 0.1:  # a broadcast, held for up to 5 of those offline
            for name in rng.sample(names, min(len(names), rng.randint(1, 5))):
                if made < messages:
                    pending[name].append(_message(sender, body, when, operation=7))
                    made += 1
            continue
        pending[rng.choice(names)].append(_message(sender, body, when))
        made += 1
    for i, name in enumerate(names):
        blocked = rng.sample(names, 1) if i % 10 == 0 else []
        if i % 100 == 7:
            blocked.append("ghost")
        content = {
            "signup_timestamp": str(start + timedelta(minutes=i)),
            "to_be_delivered": pending[name],
            "blocked": blocked,
        }
        if i == 2 and pending[name]:
            content["to_be_delivered"] = [*pending[name], pending[name][0]]  # held twice: one delivery
        encoding = "utf-8-sig" if i % 40 == 9 else "utf-8"
        (data / f"{name}.json").write_text(json.dumps(content, ensure_ascii=False), encoding=encoding)
    (data / "frank.json").write_text(json.dumps(USER_DATA["frank"]), encoding="utf-8")  # no such user
    if users >= 5:  # cut off: reported, its user imported with nothing pending
        (data / f"{names[4]}.json").write_text('{"signup_timestamp": "2017-04-11 12:30:00", "to_be', encoding="utf-8")
    return folder
