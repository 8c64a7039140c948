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
