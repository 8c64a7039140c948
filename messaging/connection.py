"""One WebSocket connection: its lifecycle, its socket, who it is.

The ops (``messaging.ops``) say what each request does; this module runs
them: every request gets exactly one reply, in the order the requests
came, and events from the channel layer and the process hub are
forwarded. Nothing a client sends can take down the connection, let alone
another one: every failure becomes an error frame.

It stays a Channels consumer, an ``AsyncConsumer``: Channels gives it a
channel name, dispatches channel-layer events (``chat.frames``,
``chat.end``) to its methods, routes it (``as_asgi``) and tests it
(``WebsocketCommunicator``). It handles the ``websocket.*`` events itself
rather than through ``AsyncJsonWebsocketConsumer`` because everything it
writes goes through ``messaging.transport``, which knows what the client
has not read yet and can stop reading a client that floods: the JSON
consumer's ``send`` can do neither.

Each connection is bounded: a few requests in flight (frames beyond that
are not read until one is answered), a request rate, a cap on what it has
been sent and not read (past it, the connection is closed with 1008), a
deadline to log in, and what waited for it goes out a page at a time,
paced by the client's acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import StopConsumer
from django.conf import settings

from accounts.models import User as UserModel
from core import metrics
from core.errors import ServiceError
from core.protocol import CLOSE_POLICY, CLOSE_RESTART, CLOSE_TRY_LATER

from . import events, frames, services, wire
from .frames import Request
from .ops import OPS, Identity, Op, Reply
from .runtime import runtime
from .transport import Transport, transport_for

log = logging.getLogger("chat")

MAX_IN_FLIGHT = 8
INBOUND_PAUSE_AT = 16  # frames read by the server and not yet taken
INBOUND_RESUME_AT = 4
PENDING_PAGE = 500  # messages of one page of what waited
PENDING_PAGE_BYTES = 256 * 1024  # and their bodies' bytes, at most
# What was pushed from what waited and not acked yet, at most, before the
# next page waits for acks: small mailboxes go out at once, big ones at the
# pace of the client's acks.
PENDING_WINDOW_MESSAGES = 2000
PENDING_WINDOW_BYTES = 1024 * 1024
PENDING_ACK_GRACE_SECONDS = 5.0  # a client that acks nothing by then is paced by its reading alone
# Live messages held while what waited goes out, at most (in count and in
# bytes); past it they are dropped here, still pending: a later page or the
# re-push brings them.
HELD_MAX = 1000
HELD_MAX_BYTES = 256 * 1024
UNAVAILABLE_RETRY_SECONDS = 2  # what a client is told to wait when the channel layer is down


def unavailable() -> ServiceError:
    """A login that cannot complete because the channel layer (Redis) is
    down: the trouble is temporary, and clients try again by themselves."""
    return ServiceError(
        "unavailable",
        "The chat cannot reach its message service just now; trying again shortly.",
        retry_after=UNAVAILABLE_RETRY_SECONDS,
    )


class ChatConsumer(AsyncConsumer):  # type: ignore[misc]  # no type hints in channels: its classes are Any
    transport: Transport
    identity: Identity

    # --- Lifecycle ---------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.identity = Identity()
        self.claiming_id: int | None = None  # the user a login is claiming presence for
        self.joining: list[tuple[str, int | None]] | None = None  # hub frames held while that claim runs
        self.closing = False
        self.draining = False  # ending: no new request is served
        self.flushing = False  # from the claim until what waited is out: the re-push leaves it alone
        # The login's count found nothing waiting: push_pending has no page to
        # read (what is stored since comes live, and is held until it ends).
        self.nothing_waited = False
        # Live messages (id, text) that arrive meanwhile, written after what waited.
        self.held: list[tuple[int, str]] | None = None
        self.held_bytes = 0
        self.held_dropped = False  # some were past the cap: the pages must find them
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.last_reply: asyncio.Future[None] | None = None
        self.unacked: dict[int, int] = {}  # pushed from what waited, not acked yet: id -> bytes
        self.unacked_bytes = 0
        self.ack_seen: asyncio.Event | None = None  # made while what waited is pushed
        self.client_acks: bool | None = None  # unknown until it acks or the grace ends
        self.asgi_receive = receive
        self.ahead: dict[str, Any] | None = None  # read while a login ran: handled next
        try:
            await super().__call__(scope, receive, send)
        except Exception:
            if hasattr(self, "transport"):
                raise
            # Channels could not give the socket a channel (Redis is down):
            # refuse the handshake, and the client tries again. The layer
            # logs the outage once; no traceback per connection.
            log.info("refused a WebSocket: the channel layer is unavailable")
            await send({"type": "websocket.close", "code": CLOSE_TRY_LATER})
        finally:
            if self in runtime.connections:
                metrics.open_sockets.dec()
            runtime.connections.discard(self)
            # However the socket ended (a close frame, a dropped TCP
            # connection, an error, the server cancelling us), the user goes
            # offline here; shielded, so a cancellation cannot cut it short.
            await asyncio.shield(self.end_session())

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch closes "old" database connections before every
        # message, a thread hop each time; this consumer touches the database
        # only through services and selectors, which do that themselves.
        while True:
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {message['type']}")
            await handler(message)
            if self.ahead is None:
                return
            message, self.ahead = self.ahead, None  # read by unless_gone: next in line

    async def unless_gone(self, work: Awaitable[None]) -> None:
        """Run work that holds up the socket's reading (a login: the cookie's,
        or an exclusive request) while reading what the socket says next. If
        it closed, the work is cancelled: nobody waits for it. In a restart's
        storm, a client whose login waited past its timeout drops the socket
        and tries again elsewhere, and its token lookup, claim and release
        were still served, for nobody, while the clients that waited queued
        behind them. Anything else read meanwhile is handled after the work,
        in order (dispatch)."""
        task = asyncio.ensure_future(work)
        peek = asyncio.ensure_future(self.asgi_receive())
        try:
            await asyncio.wait((task, peek), return_when=asyncio.FIRST_COMPLETED)
            if peek.done() and peek.result().get("type") == "websocket.disconnect":
                task.cancel()
            await asyncio.wait((task,))
        finally:
            task.cancel()  # only if this was cancelled itself
            if not peek.done():
                peek.cancel()
                await asyncio.wait((peek,))  # a queue's get gives its item back when cancelled
        if not peek.cancelled():
            self.ahead = peek.result()
        if not task.cancelled():
            task.result()  # its failure, if any, is this one's

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.transport = transport_for(self.base_send)
        self.transport.limit_message_size(settings.CHAT_MAX_MESSAGE_BYTES)
        loop = asyncio.get_running_loop()
        self.tokens, self.tokens_at = float(settings.CHAT_CONNECTION_BURST), loop.time()
        # What the cookie login and the query string below need, read first:
        # the handshake's headers are let go once the socket is accepted.
        batched = b"presence_batch=1" in (self.scope.get("query_string") or b"").split(b"&")
        await self.base_send({"type": "websocket.accept"})
        self.transport.forget_handshake()
        metrics.open_sockets.inc()
        runtime.connections.add(self)
        if runtime.stopping:
            self.login_deadline = loop.call_later(0, lambda: None)
            await self.restart()
            return
        self.login_deadline = loop.call_later(settings.CHAT_LOGIN_DEADLINE_SECONDS, self.login_overdue)
        # A page logged in by its cookie sends no login: it asks for batched
        # presence in the URL (/ws/chat/?presence_batch=1), read above.
        scope_user = self.scope.get("user")
        if scope_user is not None and scope_user.is_authenticated:
            await self.unless_gone(self.cookie_log_in(scope_user, batched))
        self.identity.presence_batched = batched

    async def cookie_log_in(self, user: UserModel, batched: bool) -> None:
        """A page's login, by its session cookie, as the socket opens."""
        try:
            async with runtime.logins.slot():
                key = self.cookie_session_key()
                await self.log_in(user, takeover=False, session_key=key, presence_batched=batched)
        except ServiceError as e:
            self.write_event(wire.error(e.code, e.message, **e.extra))
            if e.code == "unavailable":
                await self.close(CLOSE_TRY_LATER, e.message)  # the page reconnects, and logs in then
        except Exception:
            log.exception("session login failed")
            self.write_event(wire.error("internal_error", "Log in again."))
        else:
            self.track(self.push_pending())

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self.transport.closed()
        for task in list(self.in_flight):
            task.cancel()
        await self.end_session()
        raise StopConsumer()

    def login_later(self, seconds: float) -> None:
        """The client was told to log in again in `seconds` (`unavailable`):
        its anonymous connection is not closed for doing as told; the
        deadline starts again from then."""
        if self.identity.user is None and not self.closing:
            self.login_deadline.cancel()
            deadline = seconds + settings.CHAT_LOGIN_DEADLINE_SECONDS
            self.login_deadline = asyncio.get_running_loop().call_later(deadline, self.login_overdue)

    def login_overdue(self) -> None:
        if self.identity.user is None:
            self.track(self.close(CLOSE_POLICY, "Log in sooner: anonymous connections are closed after a while."))

    async def close(self, code: int, reason: str = "") -> None:
        """The one way a connection ends from this side: the user goes
        offline, then the socket closes with `code`, after what is queued."""
        if self.closing:
            return
        self.closing = self.draining = True
        if code == CLOSE_POLICY:
            who = self.identity.user.username if self.identity.user else "an anonymous connection"
            log.warning("closing %s: %s", who, reason)
        await self.end_session()
        await self.transport.close(code, reason)

    async def restart(self) -> None:
        """The process is stopping: let the requests in flight finish (their
        replies go out), then tell the client to reconnect and close 1012."""
        self.draining = True
        await self.settle(0)
        self.write_event(events.session_ended_frame("The server is restarting.", action="reconnect"))
        await self.close(CLOSE_RESTART, "The server is restarting.")

    # --- Who the connection is -------------------------------------------------------

    @property
    def user_id(self) -> int | None:
        """The user it holds or is claiming (the hub's filter)."""
        return self.identity.user.pk if self.identity.user is not None else self.claiming_id

    @property
    def logged_in(self) -> bool:
        return self.identity.user is not None

    @property
    def presence_batched(self) -> bool:
        return self.identity.presence_batched

    @property
    def me(self) -> UserModel:
        if self.identity.user is None:
            raise ServiceError("not_logged_in", "Log in first.")
        return self.identity.user

    @property
    def client_ip(self) -> str:
        # chatsite.proxies.ClientAddress has made it a valid address.
        client = self.scope.get("client")
        return str(client[0]) if client else "0.0.0.0"

    def cookie_session_key(self) -> str:
        session = self.scope.get("session")
        return (session.session_key or "") if session is not None else ""

    async def log_in(self, user: UserModel, *, takeover: bool, session_key: str, presence_batched: bool) -> int:
        """Claim the user's one connection and listen for what is theirs;
        how many messages wait for them (the login's `pending`).

        Joining the user's group and the hub before the claim means this
        connection hears any message accepted meanwhile: at worst pushed
        twice, never missed. Frames are only forwarded once the claim holds.
        """
        await runtime.start()
        try:
            await events.subscribe(self.channel_layer, self.channel_name, user.pk)
        except Exception:
            raise unavailable() from None
        self.joining, self.claiming_id = [], user.pk
        self.identity.presence_batched = presence_batched
        try:
            await runtime.hub.join(self)
        except Exception:
            self.joining, self.claiming_id = None, None
            runtime.hub.leave(self)
            raise unavailable() from None

        # The writer claims the logins that wait together (a restart's crowd
        # comes back at once); nothing is claimed for a socket that closed
        # meanwhile.
        claim = services.ClaimRequest(
            user=user,
            channel_name=self.channel_name,
            takeover=takeover,
            session_key=session_key,
            gone=self.transport.peer_gone,
        )
        try:
            _, pending = await runtime.writer.submit(claim)
        except BaseException:
            self.joining, self.claiming_id = None, None
            runtime.hub.leave(self)
            await events.unsubscribe(self.channel_layer, self.channel_name, user.pk)
            raise
        self.identity.user, self.identity.session_key, self.claiming_id = user, session_key, None
        self.login_deadline.cancel()
        # What waited goes first (push_pending, after the login's `ok`):
        # until then live messages are held, so none overtakes an older one.
        self.flushing, self.held, self.held_bytes, self.held_dropped = True, [], 0, False
        self.nothing_waited = pending == 0
        waiting, self.joining = self.joining, None
        for text, message_id in waiting:
            self.write_live(text, message_id)
        return int(pending)

    async def log_out(self) -> None:
        await self.end_session()

    async def end_session(self) -> None:
        user = self.identity.user
        self.identity = Identity(presence_batched=self.identity.presence_batched)
        self.held = None
        if user is None:
            return
        runtime.hub.leave(self)
        try:
            # At a graceful stop the process released every row at once
            # (and releases what was claimed since once more at the end).
            if not runtime.presence_released:
                await events.run_then_push(services.presence_release, user=user, channel_name=self.channel_name)
        except Exception:
            # The presence row stays until its heartbeat, which nothing
            # refreshes now, expires.
            log.exception("could not release the presence of %s", user.username)
        try:
            await events.unsubscribe(self.channel_layer, self.channel_name, user.pk)
        except Exception:
            log.warning("could not leave the group of %s", user.username, exc_info=True)

    # --- Writing -----------------------------------------------------------------------

    def write(self, frame: Mapping[str, Any]) -> None:
        self.write_text(frames.encode(dict(frame)))

    def write_text(self, text: str) -> None:
        self.transport.write(text)
        if self.transport.unsent_bytes() > settings.CHAT_MAX_UNSENT_BYTES and not self.closing:
            self.track(self.close(CLOSE_POLICY, "You are not reading what the server sends."))

    def write_event(self, frame: Mapping[str, Any]) -> None:
        """An event: no `ref`."""
        event = dict(frame)
        event.pop("ref", None)
        self.write(event)

    def deliver(self, texts: list[str], message_ids: Sequence[int | None] | None = None) -> None:
        """Frames the hub hands to every connection (encoded once for all);
        `message_ids` names the `message` events among them.

        While the login that joined the hub is still claiming presence, they
        wait: they go out if the claim holds, and nowhere if it fails."""
        ids = message_ids if message_ids is not None else [None] * len(texts)
        if self.identity.user is not None:
            for text, message_id in zip(texts, ids, strict=True):
                self.write_live(text, message_id)
        elif self.joining is not None:
            self.joining.extend(zip(texts, ids, strict=True))

    def write_live(self, text: str, message_id: int | None) -> None:
        """A frame pushed as it happened. A message waits while what waited
        at login goes out (oldest first, as the protocol says); past
        HELD_MAX (or HELD_MAX_BYTES) it is left to the pages, which find it
        still pending."""
        if message_id is None or self.held is None:
            self.write_text(text)
        elif len(self.held) < HELD_MAX and self.held_bytes + len(text) <= HELD_MAX_BYTES:
            self.held.append((message_id, text))
            self.held_bytes += len(text)
        else:
            self.held_dropped = True

    def track(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run work beside the connection's loop; it ends with the connection."""
        task = asyncio.ensure_future(work)
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return task

    # --- Reading -----------------------------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self.draining or runtime.stopping:
            # This side is ending the connection (or the process stopping,
            # whose presence is released before each socket is told): a
            # request now would find the user gone ("Log in first") and be
            # refused for good. Dropped
            # unanswered instead, the client sends it again once reconnected
            # (exactly once, by its client_id).
            return
        gone = self.transport.peer_gone()
        if not gone:
            self.watch_inbound()
            await self.pace()
        try:
            content = frames.decode(message.get("text"), message.get("bytes"))
        except ServiceError as e:
            if not gone:
                await self.settle(MAX_IN_FLIGHT - 1)
                self.track(self.respond(e.ref if isinstance(e, frames.FrameError) else None, e))
            return
        spec = OPS.get(content["type"]) if isinstance(content.get("type"), str) else None
        if gone and (spec is None or not spec.lasting):
            # The client has gone: what it asked for before leaving (a flood
            # of typing, reads) is dropped at once, not served at its pace;
            # only changes it still expects (sends, acks) are made.
            return
        work = self.run(spec, content)
        if spec is not None and spec.exclusive:
            await self.settle(0)
            answer = self.respond(content.get("ref"), work, op=content["type"])
            # A login nobody waits for any more is cancelled; a logout is
            # made even so (the client expects it done).
            await (answer if spec.lasting else self.unless_gone(answer))
        else:
            await self.settle(MAX_IN_FLIGHT - 1)
            self.track(self.respond(content.get("ref"), work, op=content.get("type")))

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
        if spec.login and self.identity.user is None:
            raise ServiceError("not_logged_in", "Log in first.")
        return await spec.handler(self, Request(content, spec.invalid))

    async def respond(
        self, ref: Any, work: Awaitable[dict[str, Any] | Reply] | ServiceError, *, op: Any = None
    ) -> None:
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
            except asyncio.CancelledError:
                raise
            except Exception:
                # The op's name only: an exception's text may quote what was sent.
                log.exception("request %s failed", op if isinstance(op, str) and op in OPS else "?")
                frame = dict(wire.error("internal_error", "The server failed; try again.", ref=ref))
            if previous is not None:
                await previous
            self.write(frame)
        finally:
            if not mine.done():
                mine.set_result(None)
        if then is not None:
            self.track(then())

    # --- Channel-layer events (types named in events.py) -----------------------------

    async def chat_frames(self, event: dict[str, Any]) -> None:
        if self.identity.user is not None:
            for frame in event["frames"]:
                self.write_live(frames.encode(dict(frame)), wire.message_id_of(frame))

    async def chat_end(self, event: dict[str, Any]) -> None:
        self.write(event["frame"])
        await self.close(event["code"])

    # --- What waited -------------------------------------------------------------------

    def acked(self, ids: Collection[int]) -> None:
        for message_id in ids:
            self.unacked_bytes -= self.unacked.pop(message_id, 0)
        if self.ack_seen is not None:
            self.ack_seen.set()

    async def push_pending(self) -> None:
        """Push every message pending for the user, oldest first, a page at a
        time (bounded in count and bytes). The next page goes once the
        client has read most of what it was sent and what it has not acked
        fits in the window (PENDING_WINDOW_*): a mailbox of any size
        arrives whole, at the client's pace, and the server holds little
        for it. A client that acks nothing is paced by its reading alone."""
        user, after, complete = self.identity.user, 0, False
        self.flushing, self.client_acks = True, None
        self.ack_seen = ack_seen = self.ack_seen or asyncio.Event()
        nothing_waited, self.nothing_waited = self.nothing_waited, False
        try:
            if nothing_waited and not self.held_dropped:
                # Counted in the claim's transaction: every row stored since
                # was pushed live to this connection (it listened before it
                # claimed), and is held; no page would find anything older.
                complete = True
                return
            while user is not None and self.identity.user is user and not self.closing:
                page = await events.run_then_push(
                    services.delivery_flush_page,
                    user=user,
                    after=after,
                    limit=PENDING_PAGE,
                    max_bytes=PENDING_PAGE_BYTES,
                )
                if not page:
                    complete = True
                    return
                for event in page:
                    text = frames.encode(dict(event))
                    self.unacked[event["id"]] = len(text)
                    self.unacked_bytes += len(text)
                    self.write_text(text)
                after = page[-1]["id"]
                if not await self.paced(user):
                    return  # stalled: what is left goes out again later, or at the next login
        finally:
            self.flushing = False
            held, self.held = self.held, None
            # Held messages past the last page were accepted after it was
            # read; the others went out in a page (or, committed late with a
            # lower id, go with the re-push). A flush cut short leaves them
            # all to the re-push, which keeps the order.
            if complete and held:
                for message_id, text in held:
                    if message_id > after:
                        self.write_text(text)
            self.unacked, self.unacked_bytes = {}, 0
            if self.ack_seen is ack_seen:
                self.ack_seen = None

    def window_open(self) -> bool:
        return (
            len(self.unacked) + PENDING_PAGE <= PENDING_WINDOW_MESSAGES
            and self.unacked_bytes + PENDING_PAGE_BYTES <= PENDING_WINDOW_BYTES
        )

    async def paced(self, user: UserModel) -> bool:
        """Wait until the client has read most of what it was sent and, if
        it acks at all, the window has room for another page. False if the
        connection ended or the client stalled for CHAT_PENDING_STALL_SECONDS."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        ack_seen = self.ack_seen
        assert ack_seen is not None, "paced() runs inside push_pending()"
        while not self.closing and self.identity.user is user:
            if ack_seen.is_set():
                ack_seen.clear()
                self.client_acks = True
            elif self.client_acks is None and loop.time() - start > PENDING_ACK_GRACE_SECONDS:
                self.client_acks = False
            drained = self.transport.unsent_bytes() <= settings.CHAT_PENDING_HIGH_WATER_BYTES
            if drained and (self.client_acks is False or self.window_open()):
                return True
            if loop.time() - start > settings.CHAT_PENDING_STALL_SECONDS:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ack_seen.wait(), 0.02)
        return False
