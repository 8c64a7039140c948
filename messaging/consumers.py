"""The WebSocket endpoint: decode a frame, call a service, reply.

Every request gets exactly one reply, in the order the requests came;
events from the channel layer and the process hub are forwarded. Nothing a
client sends can take down the connection, let alone another one: every
failure becomes an error frame.

Each connection is bounded: a few requests in flight (frames beyond that
are not read until one is answered), a request rate, a cap on what it has
been sent and not read (past it, the connection is closed with 1008), and a
deadline to log in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from accounts import selectors as account_selectors
from accounts import services as accounts
from accounts.models import User as UserModel
from core.errors import ServiceError

from . import events, frames, selectors, services, wire
from .frames import PASSWORD_MAX, USERNAME_MAX, Request
from .hub import hub
from .pump import pump
from .transport import Transport, transport_for
from .writer import writer

log = logging.getLogger("chat")

MAX_IN_FLIGHT = 8
INBOUND_PAUSE_AT = 16  # frames read by the server and not yet taken
INBOUND_RESUME_AT = 4
PENDING_PAGE = 500
CLOSE_POLICY = 1008
TOKEN_MAX = 200
CLIENT_ID_MAX = 64


@dataclass(frozen=True)
class Reply:
    """An op's ok result, and what to do once it is written (pushing what
    waited, closing): a reply never waits for that work."""

    result: dict[str, Any]
    then: Callable[[], Awaitable[None]] | None = None


Handler = Callable[["ChatConsumer", Request], Awaitable[dict[str, Any] | Reply]]


@dataclass(frozen=True)
class Op:
    handler: Handler
    login: bool  # answers not_logged_in while anonymous
    invalid: str  # the error code for a field of the wrong type or value
    exclusive: bool  # changes who the connection is: runs alone


OPS: dict[str, Op] = {}


def op(
    name: str, *, login: bool = True, invalid: str = "invalid", exclusive: bool = False
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        OPS[name] = Op(handler, login, invalid, exclusive)
        return handler

    return register


async def read(func: Callable[..., Any], **kwargs: Any) -> Any:
    """Run a selector in the thread pool, beside the writer's thread."""
    return await database_sync_to_async(func, thread_sensitive=False)(**kwargs)


_hashing: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


async def hash_password(func: Callable[..., Any], **kwargs: Any) -> Any:
    """Run a service that hashes a password in the thread pool, at most
    CHAT_HASHING_CONCURRENCY at once in this process: each Argon2 hash takes
    ~100 MiB and a core for ~0.1 s, so a crowd of logins queues here instead
    of exhausting memory."""
    loop = asyncio.get_running_loop()
    if loop not in _hashing:
        _hashing.clear()
        _hashing[loop] = asyncio.Semaphore(max(1, settings.CHAT_HASHING_CONCURRENCY))
    async with _hashing[loop]:
        return await database_sync_to_async(func, thread_sensitive=False)(**kwargs)


class ChatConsumer(AsyncJsonWebsocketConsumer):
    user: UserModel | None = None  # set once the connection holds the user's presence
    user_id: int | None = None  # the user it holds or is claiming (the hub's filter)
    presence_batched = False
    joining: list[str] | None = None  # hub frames held while a login claims presence
    transport: Transport

    # --- Connection lifecycle ------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However the socket ended (a close frame, a dropped TCP
            # connection, an error, daphne cancelling us), the user goes
            # offline here; shielded, so a cancellation cannot cut it short.
            await asyncio.shield(self.end_session())

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch closes "old" database connections before every
        # message, a thread hop each time; this consumer touches the database
        # only through services and selectors, which do that themselves.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.transport = transport_for(self.base_send)
        self.transport.limit_message_size(settings.CHAT_MAX_MESSAGE_BYTES)
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.last_reply: asyncio.Future[None] | None = None
        self.tokens, self.tokens_at = float(settings.CHAT_CONNECTION_BURST), asyncio.get_running_loop().time()
        self.closing = False
        self.login_session_key = ""  # the session a logout ends (cookie's or token's)
        self.typing_sent: dict[str, float] = {}
        await self.accept()
        self.login_deadline = asyncio.get_running_loop().call_later(
            settings.CHAT_LOGIN_DEADLINE_SECONDS, self.login_overdue
        )
        # A page logged in by its cookie sends no login: it asks for batched
        # presence in the URL (/ws/chat/?presence_batch=1).
        self.presence_batched = b"presence_batch=1" in (self.scope.get("query_string") or b"").split(b"&")
        scope_user = self.scope.get("user")
        if scope_user is not None and scope_user.is_authenticated:
            try:
                await self.start_session(scope_user, takeover=False, session_key=self.session_key())
                self.login_session_key = self.session_key()
            except ServiceError as e:
                self.write_event(wire.error(e.code, e.message, **e.extra))
            except Exception:
                log.exception("session login failed")
                self.write_event(wire.error("internal_error", "Log in again."))
            else:
                self.track(self.push_pending())

    async def disconnect(self, code: int) -> None:
        self.transport.closed()
        for task in list(self.in_flight):
            task.cancel()
        await self.end_session()

    def login_overdue(self) -> None:
        if self.user is None and not self.closing:
            self.track(self.close_for("Log in sooner: anonymous connections are closed after a while."))

    async def start_session(self, user: UserModel, *, takeover: bool, session_key: str) -> None:
        """Claim the user's one connection and listen for what is theirs.

        Joining the user's group and the hub before the claim means this
        connection hears any message accepted meanwhile: at worst pushed
        twice, never missed. Frames are only forwarded once the claim holds.
        """
        await pump.startup()
        await events.subscribe(self.channel_layer, self.channel_name, user.pk)
        self.joining, self.user_id = [], user.pk
        await hub.join(self)
        try:
            await events.run_then_push(
                services.presence_claim,
                user=user,
                channel_name=self.channel_name,
                takeover=takeover,
                session_key=session_key,
                auth_hash=user.get_session_auth_hash(),
            )
        except BaseException:
            self.joining, self.user_id = None, None
            hub.leave(self)
            await events.unsubscribe(self.channel_layer, self.channel_name, user.pk)
            raise
        self.user = user
        self.login_deadline.cancel()
        waiting, self.joining = self.joining, None
        self.deliver(waiting)

    async def end_session(self) -> None:
        user, self.user, self.user_id = self.user, None, None
        if user is None:
            return
        hub.leave(self)
        try:
            await events.run_then_push(services.presence_release, user=user, channel_name=self.channel_name)
        except Exception:
            # The presence row stays until its heartbeat, which nothing
            # refreshes now, expires.
            log.exception("could not release the presence of %s", user.username)
        try:
            await events.unsubscribe(self.channel_layer, self.channel_name, user.pk)
        except Exception:
            log.warning("could not leave the group of %s", user.username, exc_info=True)

    @property
    def logged_in(self) -> bool:
        return self.user is not None

    @property
    def me(self) -> UserModel:
        """The logged-in user, for ops that require one (checked before they run)."""
        if self.user is None:
            raise ServiceError("not_logged_in", "Log in first.")
        return self.user

    def session_key(self) -> str:
        session = self.scope.get("session")
        return (session.session_key or "") if session is not None else ""

    # --- Writing -------------------------------------------------------------------------

    def write(self, frame: Mapping[str, Any]) -> None:
        self.write_text(frames.encode(dict(frame)))

    def write_text(self, text: str) -> None:
        self.transport.write(text)
        if self.transport.unsent_bytes() > settings.CHAT_MAX_UNSENT_BYTES and not self.closing:
            self.track(self.close_for("You are not reading what the server sends.", log_it=True))

    def write_event(self, frame: Mapping[str, Any]) -> None:
        """An event: no `ref`."""
        event = dict(frame)
        event.pop("ref", None)
        self.write(event)

    def deliver(self, texts: list[str]) -> None:
        """Frames the hub hands to every connection (encoded once for all).

        While the login that joined the hub is still claiming presence, they
        wait: they go out if the claim holds, and nowhere if it fails."""
        if self.user is not None:
            for text in texts:
                self.write_text(text)
        elif self.joining is not None:
            self.joining.extend(texts)

    async def close_for(self, reason: str, *, log_it: bool = False) -> None:
        """Close with 1008 (policy violation), telling the client why."""
        if self.closing:
            return
        self.closing = True
        if log_it:
            log.warning("closing %s: %s", self.user.username if self.user else "an anonymous connection", reason)
        await self.end_session()
        await self.transport.close(CLOSE_POLICY, reason)

    def track(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run work beside the connection's loop; it ends with the connection."""
        task = asyncio.ensure_future(work)
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return task

    # --- Reading -------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        self.watch_inbound()
        await self.pace()
        try:
            content = await self.decode_json(text_data) if text_data is not None else frames.decode(None, bytes_data)
        except ServiceError as e:
            await self.settle(MAX_IN_FLIGHT - 1)
            self.track(self.respond(e.ref if isinstance(e, frames.FrameError) else None, e))
            return
        await self.receive_json(content)

    @classmethod
    async def decode_json(cls, text_data: str) -> dict[str, Any]:
        return frames.decode(text_data, None)

    @classmethod
    async def encode_json(cls, content: dict[str, Any]) -> str:
        return frames.encode(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        spec = OPS.get(content["type"]) if isinstance(content.get("type"), str) else None
        work = self.run(spec, content)
        if spec is not None and spec.exclusive:
            await self.settle(0)
            await self.respond(content.get("ref"), work)
        else:
            await self.settle(MAX_IN_FLIGHT - 1)
            self.track(self.respond(content.get("ref"), work))

    async def settle(self, at_most: int) -> None:
        """Wait until no more than `at_most` requests are in flight. While
        this waits, the connection reads no further frames."""
        while len(self.in_flight) > at_most:
            await asyncio.wait(set(self.in_flight), return_when=asyncio.FIRST_COMPLETED)

    def watch_inbound(self) -> None:
        """Stop reading the socket while frames pile up unread, so a flood
        waits in the client's TCP buffers, not in our memory."""
        backlog = self.transport.inbound_backlog()
        if backlog >= INBOUND_PAUSE_AT:
            self.transport.pause_reading()
        elif backlog <= INBOUND_RESUME_AT:
            self.transport.resume_reading()

    async def pace(self) -> None:
        """At most CHAT_CONNECTION_RATE requests a second (bursts of
        CHAT_CONNECTION_BURST): a faster client is served more slowly."""
        rate = settings.CHAT_CONNECTION_RATE
        if rate <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.tokens = min(float(settings.CHAT_CONNECTION_BURST), self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens < 1:
            await asyncio.sleep((1 - self.tokens) / rate)
            self.tokens, self.tokens_at = 1.0, loop.time()
        self.tokens -= 1

    async def run(self, spec: Op | None, content: dict[str, Any]) -> dict[str, Any] | Reply:
        if spec is None:
            raise ServiceError("bad_request", f"Unknown type {content.get('type')!r}.")
        if spec.login and self.user is None:
            raise ServiceError("not_logged_in", "Log in first.")
        return await spec.handler(self, Request(content, spec.invalid))

    async def respond(self, ref: Any, work: Awaitable[dict[str, Any] | Reply] | ServiceError) -> None:
        """Write the reply to one request, after the replies to earlier ones."""
        previous, mine = self.last_reply, asyncio.get_running_loop().create_future()
        self.last_reply = mine
        then = None
        try:
            try:
                if isinstance(work, ServiceError):
                    raise work
                result = await work
                reply = result if isinstance(result, Reply) else Reply(result)
                frame: dict[str, Any] = {"type": "ok", "ref": ref, **reply.result}
                then = reply.then
            except ServiceError as e:
                frame = dict(wire.error(e.code, e.message, ref=ref, **e.extra))
            except Exception:
                log.exception("request failed")
                frame = dict(wire.error("internal_error", "The server failed; try again.", ref=ref))
            if previous is not None:
                await previous
            self.write(frame)
        finally:
            mine.set_result(None)
        if then is not None:
            self.track(then())

    # --- Channel-layer events (types named in events.py) ---------------------------------

    async def chat_frames(self, event: dict[str, Any]) -> None:
        if self.user is not None:
            for frame in event["frames"]:
                self.write(frame)

    async def chat_end(self, event: dict[str, Any]) -> None:
        self.write(event["frame"])
        self.closing = True
        await self.end_session()
        await self.close(code=event["code"])

    # --- Pushing what waited ------------------------------------------------------------

    async def push_pending(self) -> None:
        """Push every message pending for the user, oldest first, a page at a
        time, waiting for the client to read each page before the next."""
        user, after = self.user, 0
        while user is not None and self.user is user:
            page = await events.run_then_push(services.delivery_flush_page, user=user, after=after, limit=PENDING_PAGE)
            if not page:
                return
            for event in page:
                self.write(event)
            after = page[-1]["id"]
            if not await self.drained():
                return  # what is left is pushed again later, or at the next login

    async def drained(self) -> bool:
        """Wait until the client has read most of what it was sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.CHAT_PENDING_STALL_SECONDS
        while self.transport.unsent_bytes() > settings.CHAT_PENDING_HIGH_WATER_BYTES:
            if loop.time() > deadline or self.closing:
                return False
            await asyncio.sleep(0.01)
        return True

    # --- Ops -----------------------------------------------------------------------------

    def client_ip(self) -> str:
        # chatsite.proxies.ClientAddress has made it a valid address.
        client = self.scope.get("client")
        return str(client[0]) if client else "0.0.0.0"

    @op("whoami", login=False, invalid="bad_request")
    async def op_whoami(self, request: Request) -> dict[str, Any]:
        return {"username": self.user.username if self.user else None}

    @op("signup", login=False)
    async def op_signup(self, request: Request) -> dict[str, Any]:
        username = request.text("username", max_length=USERNAME_MAX)
        password = request.text("password", max_length=PASSWORD_MAX)
        user = await hash_password(accounts.user_signup, username=username, password=password, ip=self.client_ip())
        return {"username": user.username}

    @op("login", login=False, invalid="bad_request", exclusive=True)
    async def op_login(self, request: Request) -> Reply:
        if self.user is not None:
            raise ServiceError("already_logged_in", f"You are already logged in as {self.user.username}.")
        takeover = request.flag("takeover", default=False)
        token = None
        if request.has("token"):
            # A resume token: no password, no lockout, no hash to compute.
            session_key = request.text("token", max_length=frames.MAX_ID)
            user = await read(account_selectors.user_for_session, session_key=session_key[:TOKEN_MAX])
            if user is None or len(session_key) > TOKEN_MAX:
                raise ServiceError("invalid_credentials", "That token is not valid (any more); log in with a password.")
            token = session_key
        elif takeover and not request.has("username") and not request.has("password"):
            session_key = self.session_key()
            user = await read(account_selectors.user_for_session, session_key=session_key)
            if user is None:
                raise ServiceError("bad_request", "No logged-in session to take over from; send username and password.")
        else:
            username = request.text("username", max_length=frames.MAX_ID)
            password = request.text("password", max_length=frames.MAX_ID)
            if len(username) > USERNAME_MAX or len(password) > PASSWORD_MAX:
                raise ServiceError("invalid_credentials", "Wrong username or password.")
            user = await hash_password(
                accounts.user_authenticate, username=username, password=password, ip=self.client_ip()
            )
            session_key = token = await read(accounts.session_create, user=user)
        self.presence_batched = request.flag("presence_batch", default=False)
        await self.start_session(user, takeover=takeover, session_key=session_key)
        self.login_session_key = session_key
        pending = await read(selectors.pending_count, user=user)
        result: dict[str, Any] = {"username": user.username, "pending": pending}
        if token is not None:
            result["token"] = token
        return Reply(result, then=self.push_pending)

    @op("logout", invalid="bad_request", exclusive=True)
    async def op_logout(self, request: Request) -> Reply:
        session_key = self.login_session_key
        await self.end_session()
        await read(accounts.session_end, session_key=session_key)
        self.closing = True
        return Reply({}, then=lambda: self.close(code=1000))

    @op("send")
    async def op_send(self, request: Request) -> dict[str, Any]:
        to = request.username("to")
        body = request.text("body", max_length=settings.CHAT_MAX_FRAME_BYTES)
        client_id = request.optional_text("client_id", min_length=1, max_length=CLIENT_ID_MAX)
        sent = await writer.submit(services.SendRequest(sender=self.me, to_username=to, body=body, client_id=client_id))
        return {
            "id": sent.message.id,
            "delivered": "live" if sent.live else "stored",
            "sent_at": wire.timestamp(sent.message.sent_at),
        }

    @op("broadcast")
    async def op_broadcast(self, request: Request) -> dict[str, Any]:
        body = request.text("body", max_length=settings.CHAT_MAX_FRAME_BYTES)
        client_id = request.optional_text("client_id", min_length=1, max_length=CLIENT_ID_MAX)
        done = await writer.submit(services.BroadcastRequest(sender=self.me, body=body, client_id=client_id))
        return {
            "id": done.message.id,
            "live": done.live,
            "stored": done.stored,
            "sent_at": wire.timestamp(done.message.sent_at),
        }

    @op("edit")
    async def op_edit(self, request: Request) -> dict[str, Any]:
        message_id = request.integer("id", low=1)
        body = request.text("body", max_length=settings.CHAT_MAX_FRAME_BYTES)
        message = await events.run_then_push(services.message_edit, user=self.me, message_id=message_id, body=body)
        return {"edited_at": wire.timestamp(message.edited_at)}

    @op("delete", invalid="unknown_message")
    async def op_delete(self, request: Request) -> dict[str, Any]:
        message_id = request.integer("id", low=1)
        await events.run_then_push(services.message_delete, user=self.me, message_id=message_id)
        return {}

    @op("typing")
    async def op_typing(self, request: Request) -> dict[str, Any]:
        to = request.username("to")
        typing = request.flag("typing", default=True)
        # Repeats more often than once a second for a pair are dropped
        # unanswered by a query; stopping always goes through.
        now = asyncio.get_running_loop().time()
        if typing and now - self.typing_sent.get(to, -1.0) < 1.0:
            return {}
        recipient_id = await read(selectors.typing_recipient, sender=self.me, username=to)
        if typing:
            if len(self.typing_sent) > 64:
                self.typing_sent.clear()
            self.typing_sent[to] = now
        if recipient_id is not None:
            await events.send_typing(recipient_id, sender=self.me.username, typing=typing)
        return {}

    @op("search")
    async def op_search(self, request: Request) -> dict[str, Any]:
        query = request.text("query", min_length=1, max_length=200)
        peer = await self.peer(request) if request.has("with") else selectors.EVERY_CONVERSATION
        before = request.optional_integer("before")
        limit = request.optional_integer("limit", low=1, high=100) or 20
        messages = await read(
            selectors.message_search, user=self.me, query=query, peer=peer, before=before, limit=limit
        )
        return {"messages": messages}

    @op("block")
    async def op_block(self, request: Request) -> dict[str, Any]:
        username = request.username("username")
        await events.run_then_push(services.block_create, blocker=self.me, username=username)
        return {}

    @op("unblock", invalid="bad_request")
    async def op_unblock(self, request: Request) -> dict[str, Any]:
        username = request.username("username")
        await events.run_then_push(services.block_delete, blocker=self.me, username=username)
        return {}

    @op("blocked", invalid="bad_request")
    async def op_blocked(self, request: Request) -> dict[str, Any]:
        return {"users": await read(selectors.blocked_usernames, user=self.me)}

    @op("online", invalid="bad_request")
    async def op_online(self, request: Request) -> dict[str, Any]:
        return {"users": await read(selectors.online_usernames)}

    @op("recent", invalid="bad_request")
    async def op_recent(self, request: Request) -> dict[str, Any]:
        return {"users": await read(selectors.recent_users)}

    @op("ack")
    async def op_ack(self, request: Request) -> dict[str, Any]:
        ids = request.id_list("ids")
        if ids:
            await writer.submit(services.AckRequest(user=self.me, ids=ids))
        return {}

    @op("history")
    async def op_history(self, request: Request) -> dict[str, Any]:
        peer = await self.peer(request)
        before = request.optional_integer("before")
        limit = request.optional_integer("limit", low=1, high=100) or 50
        messages = await read(selectors.message_history, user=self.me, peer=peer, before=before, limit=limit)
        return {"messages": messages}

    @op("conversations", invalid="bad_request")
    async def op_conversations(self, request: Request) -> dict[str, Any]:
        return {"conversations": await read(selectors.conversation_list, user=self.me)}

    @op("read")
    async def op_read(self, request: Request) -> dict[str, Any]:
        peer = await self.peer(request)
        up_to = request.integer("up_to")
        await writer.submit(services.ReadRequest(user=self.me, peer=peer, up_to=up_to))
        return {}

    async def peer(self, request: Request) -> UserModel | None:
        """The `with` field: a user, or None for the broadcast conversation."""
        username = request.optional_username("with", required=True, nullable=True)
        if username is None:
            return None
        return await read(selectors.user_by_name, username=username)
