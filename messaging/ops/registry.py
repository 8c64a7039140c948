"""The op table: what an op is, and what it may ask of its connection.

An op parses its request's fields (``frames.Request``), calls a service or
a selector, and formats the result; errors are ServiceError, which the
connection turns into the error reply. Adding an op is writing one
function in a module of this package with ``@op``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from accounts.models import User as UserModel

from ..frames import Request


@dataclass(frozen=True)
class Reply:
    """An op's ok result, and what to do once it is written (pushing what
    waited, closing): a reply never waits for that work."""

    result: dict[str, Any]
    then: Callable[[], Awaitable[None]] | None = None


@dataclass
class Identity:
    """Who the connection is. `user` is set once the connection holds the
    user's presence; `session_key` is the Django session a logout ends (the
    cookie's, or the one behind a resume token)."""

    user: UserModel | None = None
    session_key: str = ""
    presence_batched: bool = False  # presence as presence_batch frames
    # to -> (state last passed on, when, start of its one-second window, events in it)
    typing_sent: dict[str, tuple[bool, float, float, int]] = field(default_factory=dict)


class Connection(Protocol):
    """What ops may use of the connection that received the request."""

    identity: Identity

    @property
    def me(self) -> UserModel:
        """The logged-in user (ops with login=True run only when there is one)."""

    @property
    def client_ip(self) -> str: ...

    def cookie_session_key(self) -> str:
        """The session the connection's cookie carried ("" if none)."""

    async def log_in(self, user: UserModel, *, takeover: bool, session_key: str, presence_batched: bool) -> int:
        """Claim the user's one connection (ServiceError already_online) and
        count what waits for them (the login's `pending`); live messages
        wait until push_pending has sent what waited."""

    def login_later(self, seconds: float) -> None:
        """The client was told to try its login again in `seconds`: the
        anonymous connection is kept until then (and the usual deadline)."""

    async def log_out(self) -> None:
        """Release the user's presence; the connection stays open, anonymous."""

    async def push_pending(self) -> None:
        """Push what waited for the user, paced by the client's acks."""

    def acked(self, ids: Collection[int]) -> None:
        """The client acked these message ids (they were committed)."""

    async def close(self, code: int, reason: str = "") -> None:
        """End the connection, after what is queued for it."""


Handler = Callable[[Connection, Request], Awaitable[dict[str, Any] | Reply]]


@dataclass(frozen=True)
class Op:
    handler: Handler
    login: bool  # answers not_logged_in while anonymous
    invalid: str  # the error code for a field of the wrong type or value
    exclusive: bool  # changes who the connection is: runs alone
    # A change the client still expects once it has gone (a send, an ack):
    # served even if the socket closed meanwhile. Other ops then are dropped.
    lasting: bool


OPS: dict[str, Op] = {}


def op(
    name: str, *, login: bool = True, invalid: str = "invalid", exclusive: bool = False, lasting: bool = False
) -> Callable[[Handler], Handler]:
    """Register `handler` as the op `name`."""

    def register(handler: Handler) -> Handler:
        assert name not in OPS, f"op {name!r} registered twice"
        OPS[name] = Op(handler, login, invalid, exclusive, lasting)
        return handler

    return register
