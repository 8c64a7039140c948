"""Reading the old socket server's files: nothing here touches the database.

`server_resources/user_pass.csv` (no header: `username,password`, plain-text
passwords, CSV quoting) and one `user_data/<username>.json` per user
(`signup_timestamp`, `to_be_delivered`, `blocked`). Either may start with a
UTF-8 byte order mark. What cannot be read is listed in `skipped`, with where
it is and why; a data file with one bad entry is skipped whole.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path

from messaging.models import Message

OPERATIONS = {6: Message.Kind.PRIVATE, 7: Message.Kind.BROADCAST}
STORED = 2


class LegacyError(Exception):
    """The folder cannot be imported at all (no CSV, not UTF-8)."""


class Malformed(Exception):
    pass


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class LegacyMessage:
    sender: str
    body: str
    kind: str
    sent_at: datetime


@dataclass(frozen=True)
class LegacyFile:
    signup_timestamp: datetime | None
    messages: list[LegacyMessage]
    blocked: list[str]


@dataclass
class Legacy:
    """What the files hold: users in CSV order, data files in name order."""

    # {username: (CSV line number, password)}: the first row of a name wins.
    users: dict[str, tuple[int, str]] = field(default_factory=dict)
    files: dict[str, LegacyFile] = field(default_factory=dict)
    # (where, why), in the order found.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def legacy_read(*, path: Path, zone: tzinfo) -> Legacy:
    """Read `path` (server_resources/ or the folder holding it); naive times
    are in `zone`. LegacyError when there is no readable user_pass.csv."""
    root = Path(path)
    if (root / "server_resources").is_dir():
        root = root / "server_resources"
    csv_path = root / "user_pass.csv"
    if not csv_path.is_file():
        raise LegacyError(f"No user_pass.csv in {root}")
    legacy = Legacy()
    _read_csv(legacy, csv_path)
    _read_data(legacy, root / "user_data", zone)
    return legacy


def _read_csv(legacy: Legacy, csv_path: Path) -> None:
    rows = legacy.users
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise LegacyError(f"user_pass.csv is not UTF-8: {e}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            legacy.skipped.append((f"user_pass.csv line {reader.line_num}", f"not CSV ({e})"))
            continue
        line = reader.line_num
        where = f"user_pass.csv line {line}"
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) == 1:
            legacy.skipped.append((where, f"{row[0]}: no password"))
            continue
        if len(row) != 2:
            legacy.skipped.append((where, f"expected 'username,password', got {len(row)} field(s)"))
            continue
        name, password = nfc(row[0].strip()), row[1]
        if not name or not password:
            legacy.skipped.append((where, "empty username or password"))
            continue
        if name in rows:
            legacy.skipped.append((where, f"{name} again (line {rows[name][0]} is kept)"))
            continue
        rows[name] = (line, password)


def _read_data(legacy: Legacy, data_dir: Path, zone: tzinfo) -> None:
    if not data_dir.is_dir():
        return
    for path in sorted(data_dir.glob("*.json")):
        name = nfc(path.stem)
        if name not in legacy.users:
            legacy.skipped.append((path.name, "no such user in user_pass.csv"))
            continue
        try:
            legacy.files[name] = _parse_file(path, zone)
        except Malformed as e:
            legacy.skipped.append((path.name, str(e)))


def _parse_file(path: Path, zone: tzinfo) -> LegacyFile:
    try:
        # utf-8-sig: files saved by editors on Windows start with a BOM.
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Malformed(f"not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise Malformed("not a JSON object")
    pending = raw.get("to_be_delivered", [])
    blocked = raw.get("blocked", [])
    if not isinstance(pending, list) or not isinstance(blocked, list):
        raise Malformed("'to_be_delivered' and 'blocked' must be lists")
    if not all(isinstance(b, str) for b in blocked):
        raise Malformed("'blocked' must list user names")
    messages = []
    for i, entry in enumerate(pending, start=1):
        if not isinstance(entry, dict):
            raise Malformed(f"message {i} is not an object")
        sender, body, op = entry.get("sender"), entry.get("message"), entry.get("operation")
        if not isinstance(sender, str) or not isinstance(body, str) or op not in OPERATIONS:
            raise Malformed(f"message {i} lacks sender, message or a known operation")
        if entry.get("status", STORED) != STORED:
            raise Malformed(f"message {i} has status {entry.get('status')!r}, not {STORED} (stored)")
        messages.append(
            LegacyMessage(
                sender=nfc(sender), body=body, kind=OPERATIONS[op], sent_at=_when(entry.get("timestamp"), i, zone)
            )
        )
    joined = raw.get("signup_timestamp")
    return LegacyFile(
        signup_timestamp=_when(joined, "signup", zone) if joined is not None else None,
        messages=messages,
        blocked=[nfc(b) for b in blocked],
    )


def _when(text: object, what: object, zone: tzinfo) -> datetime:
    if not isinstance(text, str):
        raise Malformed(f"timestamp of {what} is missing")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Malformed(f"timestamp of {what} is not a date: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=zone)
