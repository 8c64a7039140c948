"""What the terminal client says: error sentences, times, message lines."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from core.protocol import USERNAME_MAX

ERRORS = {
    "invalid_credentials": "Wrong username or password.",
    "locked": "Too many failed logins: try again in {retry_after} seconds.",
    "already_online": "You are already logged in somewhere else.",
    "already_logged_in": "You are already logged in.",
    "username_taken": "That username is taken.",
    "unknown_user": "There is no user called {name}.",
    "blocked": "{name} does not accept your messages.",
    "rate_limited": "Slow down: try again in {retry_after} seconds.",
    "already_blocked": "You already block {name}.",
    "not_blocked": "You do not block {name}.",
    "not_logged_in": "Log in first.",
    "unknown_message": "You have no such message (it may be deleted).",
}

# Django's default username rule (UnicodeUsernameValidator), checked before
# asking for a password; the server checks again, with its own rules.
USERNAME_RULE = re.compile(r"^[\w.@+-]+\Z")


def username_problem(name: str) -> str | None:
    """Why `name` cannot be a username, or None."""
    if not USERNAME_RULE.match(name) or len(name) > USERNAME_MAX:
        return f"A username is letters, digits and @ . + - _ only (at most {USERNAME_MAX}), without spaces."
    return None


# What another user's text must not do to the terminal: control characters
# (escape sequences, carriage returns) and the bidi overrides that reorder
# what is shown. A newline stays, but the lines after it are indented, so a
# message cannot pass for lines of its own.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(text: Any) -> str:
    """Someone else's words, safe to print."""
    return UNSAFE.sub("�", str(text)).replace("\n", "\n    ")


def explain(reply: dict[str, Any], name: str = "") -> str:
    """A short human sentence for an error reply."""
    template = ERRORS.get(reply.get("code", ""))
    if reply.get("attempts_left") in (0, 1) and reply.get("message"):
        return clean(reply["message"])  # the server's words say how long the lock is
    if template is None:
        return clean(reply.get("message") or f"The server said {reply.get('code')}.")
    return template.format(name=name, retry_after=reply.get("retry_after", "a few"))


def clock(iso: str) -> str:
    when = datetime.fromisoformat(iso).astimezone()
    now = datetime.now().astimezone()
    return when.strftime("%H:%M") if when.date() == now.date() else when.strftime("%b %d %H:%M")


def receipt(m: dict[str, Any]) -> str:
    """How far a private message one sent got: sent, delivered or read."""
    return "read" if m.get("read") else "delivered" if m.get("delivered") else "sent"


QUOTE = 40  # characters of a replied-to message shown


def file_size(n: int) -> str:
    """As the page says it: 12 bytes, 840 KB, 2.1 MB."""
    if n < 1000:
        return f"{n} byte{'' if n == 1 else 's'}"
    if n < 1000 * 1000:
        return f"{round(n / 1000)} KB"
    return f"{n / (1000 * 1000):.1f} MB"


def render_files(attachments: list[dict[str, Any]] | None, base: str = "") -> list[str]:
    """`[file: beach.jpg, 2.1 MB] http://host/files/7/` per attachment."""
    return [
        f"[file: {clean(a['name'])}, {file_size(int(a['size']))}] {base}{clean(a['url'])}" for a in attachments or []
    ]


def render_message(
    m: dict[str, Any],
    me: str | None = None,
    *,
    ids: bool = False,
    base: str = "",
    rooms: Mapping[int, str] | None = None,
) -> str:
    """One line for a message event or message object (and one more per
    attachment, indented; `base` makes their URLs whole). With `ids`, one's
    own messages show their id (for /edit and /delete) and receipt; and
    every message its id, which /reply and /react name. `rooms`: room
    names by id, for room messages."""
    notes = []
    if m.get("edited_at"):
        notes.append("edited")
    if m.get("stored"):
        notes.append("waited while you were offline")
    mine = m["from"] == me
    for emoji, users in (m.get("reactions") or {}).items():
        notes.append(f"{clean(emoji)} {len(users)}")
    if ids and mine and m["kind"] == "private":
        notes.append(receipt(m))
    if ids or m.get("kind") == "room" or m.get("reply_to"):
        notes.append(f"#{m['id']}")
    tail = f" ({', '.join(notes)})" if notes else ""
    when, body = clock(m["sent_at"]), clean(m["body"])
    quoted = m.get("reply_to")
    if quoted:
        excerpt = quoted["excerpt"] or "(deleted)"
        excerpt = excerpt if len(excerpt) <= QUOTE else excerpt[: QUOTE - 1] + "…"
        body = f"↪ {clean(quoted['from'])} #{quoted['id']} “{clean(excerpt)}” {body}"
    files = render_files(m.get("attachments"), base)
    if files and not body:
        body, files = files[0], files[1:]
    if m["kind"] == "room":
        room: int = m["room"]
        where = f"#{clean(rooms[room])}" if rooms and room in rooms else f"room #{room}"
        line = f"[{when}] {where} {'you' if mine else clean(m['from'])}: {body}{tail}"
    elif m["kind"] == "broadcast":
        line = f"[{when}] {'you' if mine else clean(m['from'])} → everyone: {body}{tail}"
    elif mine:
        line = f"[{when}] you → {clean(m['to'])}: {body}{tail}"
    else:
        line = f"[{when}] {clean(m['from'])}: {body}{tail}"
    return "\n    ".join([line, *files])


# A line names this many people at most, then counts the rest: a presence
# batch in a community of thousands names thousands (after a restart, all
# of them), which is a screenful nobody reads, cleaned name by name.
NAMES_SHOWN = 5


def names(users: list[str], *, most: int | None = NAMES_SHOWN) -> str:
    """alice; alice and bob; alice, bob and carol; past `most` (at least
    one; None: no limit), alice, bob, carol, dave, erin and 9,995 others."""
    if most is not None and len(users) > most + 1:
        others = len(users) - most
        return ", ".join(clean(u) for u in users[:most]) + f" and {others:,} others"
    shown = [clean(u) for u in users]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
