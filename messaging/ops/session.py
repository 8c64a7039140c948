"""Who the connection is: sign up, log in (password, resume token or the
page's session), log out."""

from __future__ import annotations

from typing import Any

from accounts import services as accounts
from accounts.names import USERNAME_MAX
from accounts.selectors import TOKEN_MAX
from core.errors import ServiceError
from core.protocol import CLOSE_NORMAL

from .. import frames
from ..frames import PASSWORD_MAX, Request
from ..lookups import read
from ..runtime import runtime
from .registry import Connection, Reply, op

EMAIL_MAX = 254


@op("whoami", login=False, invalid="bad_request")
async def whoami(conn: Connection, request: Request) -> dict[str, Any]:
    user = conn.identity.user
    return {"username": user.username if user else None}


@op("signup", lasting=True, login=False)
async def signup(conn: Connection, request: Request) -> dict[str, Any]:
    username = request.text("username", max_length=USERNAME_MAX)
    password = request.text("password", max_length=PASSWORD_MAX)
    email = request.optional_text("email", max_length=EMAIL_MAX) or ""  # only for a forgotten password
    user = await runtime.hash_password(
        accounts.user_signup, username=username, password=password, ip=conn.client_ip, email=email
    )
    return {"username": user.username}


@op("login", login=False, invalid="bad_request", exclusive=True)
async def login(conn: Connection, request: Request) -> Reply:
    if conn.identity.user is not None:
        raise ServiceError("already_logged_in", f"You are already logged in as {conn.identity.user.username}.")
    # A login that checks no password (a resume token, a session: how a
    # restart's crowd comes back) takes its turn first, or is told
    # `unavailable` + retry_after with nothing looked up or claimed. A
    # password login keeps the contract's answers: the hashing pool bounds
    # what it costs, and a crowd does not come back with passwords.
    if request.has("password"):
        return await _login(conn, request)
    try:
        async with runtime.logins.slot():
            return await _login(conn, request)
    except ServiceError as e:
        if e.code == "unavailable":
            conn.login_later(float(e.extra.get("retry_after", 0)))
        raise


async def _login(conn: Connection, request: Request) -> Reply:
    takeover = request.flag("takeover", default=False)
    token = None
    if request.has("token"):
        # A resume token: no password, no lockout, no hash to compute.
        session_key = request.text("token", max_length=frames.MAX_ID)
        too_long = len(session_key) > TOKEN_MAX  # no such token: not worth a query
        user = None if too_long else await runtime.sessions.user_for(session_key)
        if user is None:
            raise ServiceError("invalid_credentials", "That token is not valid (any more); log in with a password.")
        token = session_key
    elif takeover and not request.has("username") and not request.has("password"):
        session_key = conn.cookie_session_key()
        user = await runtime.sessions.user_for(session_key)
        if user is None:
            raise ServiceError("bad_request", "No logged-in session to take over from; send username and password.")
    else:
        username = request.text("username", max_length=frames.MAX_ID)
        password = request.text("password", max_length=frames.MAX_ID)
        if len(username) > USERNAME_MAX or len(password) > PASSWORD_MAX:
            raise ServiceError("invalid_credentials", "Wrong username or password.")
        user = await runtime.hash_password(
            accounts.user_authenticate, username=username, password=password, ip=conn.client_ip
        )
        session_key = token = await read(accounts.session_create, user=user)
    presence_batched = request.flag("presence_batch", default=False)
    # The claim and the count of what waits, in one transaction: if either
    # fails, no `ok` and no login, nothing is left half done.
    pending = await conn.log_in(user, takeover=takeover, session_key=session_key, presence_batched=presence_batched)
    result: dict[str, Any] = {"username": user.username, "pending": pending}
    if token is not None:
        result["token"] = token
    return Reply(result, then=conn.push_pending)


@op("logout", lasting=True, invalid="bad_request", exclusive=True)
async def logout(conn: Connection, request: Request) -> Reply:
    session_key = conn.identity.session_key
    await conn.log_out()
    await read(accounts.session_end, session_key=session_key)
    return Reply({}, then=lambda: conn.close(CLOSE_NORMAL))
