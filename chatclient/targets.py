"""How the terminal client names where a message goes and which message a
command is about; the session and the commands both speak it.

A target is a username, EVERYONE, or a room: "#" and its id (no username
has a "#"). A message is named by its id, typed "#57" (or "57").
"""

from __future__ import annotations

EVERYONE = "*"


def room_key(room: int) -> str:
    """A room as a target: "#" and its id."""
    return f"#{room}"


def room_id(target: str) -> int | None:
    """The room a target is, or None for a user or everyone."""
    return int(target[1:]) if target.startswith("#") and target[1:].isdigit() else None


def message_id(word: str) -> int | None:
    """#57 (or 57) as a message id."""
    word = word.removeprefix("#")
    return int(word) if word.isdigit() else None
