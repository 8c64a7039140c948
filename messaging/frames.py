"""What the server receives: decoding a frame and checking its fields.

A frame that is not a JSON object, lacks `type` or a field is
``bad_request``; a field that is present but of the wrong type or value is
the op's own ``invalid`` code (``bad_request`` for ops that have none).
Every string a client can send is checked for length here, before it gets
near the database.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings

from accounts.names import USERNAME_MAX
from core.errors import ServiceError

MAX_ID = 2**63 - 1
MAX_ACK_IDS = 1000
MAX_DEPTH = 32
PASSWORD_MAX = 1024


class FrameError(ServiceError):
    """A frame refused as a whole, with the `ref` it carried where that
    could still be read (the reply echoes it, as every reply does)."""

    def __init__(self, code: str, message: str, *, ref: Any = None) -> None:
        super().__init__(code, message)
        self.ref = ref


def _loads(text: str) -> Any:
    """JSON as the protocol allows it: every value must be one we can send
    back (a `ref` is echoed), so NaN, Infinity and numbers that overflow a
    float (``1e99999``) are refused like a syntax error. Integers over
    4,300 digits are refused by Python itself (ValueError)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def _ref_of(text: str) -> Any:
    """The `ref` of a frame too large to serve, if it is a JSON object:
    the frame is bounded by the server's message limit, so this is cheap."""
    try:
        content = _loads(text)
    except (ValueError, RecursionError):
        return None
    return content.get("ref") if isinstance(content, dict) else None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _depth(value: Any) -> int:
    """How deeply lists and objects nest (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in item)
    return deepest


def decode(text: str | None, data: bytes | None) -> dict[str, Any]:
    """One text frame into a request object, or ServiceError."""
    if text is None:
        raise ServiceError("bad_request", "Send JSON in text frames, not binary ones.")
    limit = settings.CHAT_MAX_FRAME_BYTES
    if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
        raise FrameError("too_large", f"A frame may be at most {limit} bytes.", ref=_ref_of(text))
    try:
        content = _loads(text)
    except (ValueError, RecursionError):
        raise ServiceError("bad_request", "The frame is not valid JSON.") from None
    if not isinstance(content, dict):
        raise ServiceError("bad_request", "A frame must be a JSON object.")
    if _depth(content) > MAX_DEPTH:
        raise ServiceError("bad_request", f"The frame nests deeper than {MAX_DEPTH} levels.")
    return content


def encode(frame: dict[str, Any]) -> str:
    """A frame as UTF-8-safe JSON text (a lone surrogate echoed in a `ref`
    is escaped rather than failing the send)."""
    text = json.dumps(frame, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(frame, allow_nan=False)
    return text


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\\ud800" escapes
        return False
    return True


class Request:
    """Typed access to the fields of one request."""

    def __init__(self, content: dict[str, Any], invalid_code: str):
        self.content = content
        self.invalid_code = invalid_code

    def has(self, name: str) -> bool:
        return name in self.content

    def _get(self, name: str, required: bool) -> tuple[Any, bool]:
        if name not in self.content:
            if required:
                raise ServiceError("bad_request", f"The field {name!r} is missing.")
            return None, False
        return self.content[name], True

    def bad(self, name: str, what: str) -> ServiceError:
        return ServiceError(self.invalid_code, f"The field {name!r} must be {what}.")

    def text(self, name: str, *, min_length: int = 0, max_length: int) -> str:
        """A required string field."""
        value = self.optional_text(name, required=True, min_length=min_length, max_length=max_length)
        assert value is not None
        return value

    def optional_text(
        self, name: str, *, required: bool = False, nullable: bool = False, min_length: int = 0, max_length: int
    ) -> str | None:
        """A string field that may be absent (None) or, if `nullable`, null."""
        value, present = self._get(name, required)
        if not present or (value is None and nullable):
            return None
        what = f"a string of {min_length} to {max_length} characters" + (" or null" if nullable else "")
        if not isinstance(value, str) or "\x00" in value or not _utf8(value):
            raise self.bad(name, what)
        if not min_length <= len(value) <= max_length:
            raise self.bad(name, what)
        return value

    def username(self, name: str) -> str:
        """A user's name (required). One too long to exist is an unknown user."""
        value = self.optional_username(name, required=True)
        assert value is not None
        return value

    def optional_username(self, name: str, *, required: bool = False, nullable: bool = False) -> str | None:
        value, present = self._get(name, required)
        if not present or (value is None and nullable):
            return None
        if isinstance(value, str) and len(value) > USERNAME_MAX:
            raise ServiceError("unknown_user", "There is no user by that name.")
        return self.optional_text(name, nullable=nullable, max_length=USERNAME_MAX)

    def integer(self, name: str, *, low: int = 0, high: int = MAX_ID) -> int:
        """A required whole-number field."""
        value = self.optional_integer(name, required=True, low=low, high=high)
        assert value is not None
        return value

    def optional_integer(self, name: str, *, required: bool = False, low: int = 0, high: int = MAX_ID) -> int | None:
        value, present = self._get(name, required)
        if not present:
            return None
        if type(value) is not int or not low <= value <= high:
            raise self.bad(name, f"a whole number from {low} to {high}")
        return value

    def flag(self, name: str, *, default: bool | None) -> bool:
        """A true/false field; without a `default`, a required one."""
        value, present = self._get(name, default is None)
        if not present:
            assert default is not None
            return default
        if type(value) is not bool:
            raise self.bad(name, "true or false")
        return value

    def object_id(self, name: str, *, unknown: str) -> int:
        """The id of a room or message (required)."""
        value = self.optional_object_id(name, unknown=unknown, required=True)
        assert value is not None
        return value

    def optional_object_id(
        self, name: str, *, unknown: str, required: bool = False, nullable: bool = False
    ) -> int | None:
        """The id of a room or message: a whole number, else the op's invalid
        code; one that cannot be an id (0, negative, too large) is `unknown`,
        like any id that does not exist. Absent (or null, if `nullable`): None."""
        value, present = self._get(name, required)
        if not present or (value is None and nullable):
            return None
        if type(value) is not int:
            raise self.bad(name, "an id")
        if not 0 < value <= MAX_ID:
            raise ServiceError(unknown, f"There is nothing with the id {value}.")
        return value

    def username_list(self, name: str, *, min_items: int, max_items: int) -> list[str]:
        """A list of user names, without repeats. Names too long to exist
        are an unknown user, as for one name."""
        value, present = self._get(name, True)
        what = f"a list of {min_items} to {max_items} user names"
        if not isinstance(value, list) or not min_items <= len(value) <= max_items:
            raise self.bad(name, what)
        if not all(isinstance(v, str) and "\x00" not in v and _utf8(v) for v in value):
            raise self.bad(name, what)
        if any(len(v) > USERNAME_MAX for v in value):
            raise ServiceError("unknown_user", "There is no user by that name.")
        return list(dict.fromkeys(value))

    def id_list(self, name: str) -> list[int]:
        value, _ = self._get(name, True)
        if (
            not isinstance(value, list)
            or len(value) > MAX_ACK_IDS
            or any(type(v) is not int or not 0 < v <= MAX_ID for v in value)
        ):
            raise self.bad(name, f"a list of at most {MAX_ACK_IDS} message ids")
        return value
