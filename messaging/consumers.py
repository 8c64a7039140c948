"""The WebSocket endpoint of protocol v1: parse a frame, call a service, reply.

Every request gets exactly one reply; events from the channel layer are
forwarded. Nothing a client sends can take down the connection, let alone
another one: every failure becomes an error frame.
"""

import ipaddress
import json
import logging

from channels.auth import logout as session_logout
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model

from accounts import services as accounts
from chatsite.errors import ServiceError

from . import events, selectors, services
from .pump import pump

User = get_user_model()
log = logging.getLogger("chat")
db = database_sync_to_async

MAX_ID = 2**63 - 1
MAX_ACK_IDS = 1000


class BadFrame(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Frame:
    """Typed access to a request's fields.

    A missing field is ``bad_request``; a present field of the wrong type or
    value is the op's ``invalid`` code (``bad_request`` for ops without one).
    """

    def __init__(self, data, invalid_code):
        self.data = data
        self.invalid_code = invalid_code

    def _get(self, name, required):
        if name not in self.data:
            if required:
                raise BadFrame("bad_request", f"The field {name!r} is missing.")
            return None, False
        return self.data[name], True

    def _bad(self, name, what):
        return BadFrame(self.invalid_code, f"The field {name!r} must be {what}.")

    def text(self, name, *, required=True, nullable=False):
        value, present = self._get(name, required)
        if not present or (value is None and nullable):
            return None
        if not isinstance(value, str) or "\x00" in value or not _encodable(value):
            raise self._bad(name, "a string" + (" or null" if nullable else ""))
        return value

    def integer(self, name, *, required=True, low=0, high=MAX_ID):
        value, present = self._get(name, required)
        if not present:
            return None
        if type(value) is not int or not low <= value <= high:
            raise self._bad(name, f"a whole number from {low} to {high}")
        return value

    def boolean(self, name, *, required=True):
        value, present = self._get(name, required)
        if not present:
            return None
        if type(value) is not bool:
            raise self._bad(name, "true or false")
        return value

    def id_list(self, name):
        value, _ = self._get(name, True)
        if (
            not isinstance(value, list)
            or len(value) > MAX_ACK_IDS
            or any(type(v) is not int or not 0 < v <= MAX_ID for v in value)
        ):
            raise self._bad(name, f"a list of at most {MAX_ACK_IDS} message ids")
        return value


def _encodable(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\\ud800" escapes
        return False
    return True


# op -> (handler name, needs login, error code for a bad field value)
OPS = {
    "signup": ("op_signup", False, "invalid"),
    "login": ("op_login", False, "bad_request"),
    "logout": ("op_logout", True, "bad_request"),
    "send": ("op_send", True, "invalid"),
    "broadcast": ("op_broadcast", True, "invalid"),
    "block": ("op_block", True, "invalid"),
    "unblock": ("op_unblock", True, "bad_request"),
    "blocked": ("op_blocked", True, "bad_request"),
    "online": ("op_online", True, "bad_request"),
    "recent": ("op_recent", True, "bad_request"),
    "ack": ("op_ack", True, "invalid"),
    "history": ("op_history", True, "invalid"),
    "conversations": ("op_conversations", True, "bad_request"),
    "read": ("op_read", True, "invalid"),
    "whoami": ("op_whoami", False, "bad_request"),
}


class ChatConsumer(AsyncWebsocketConsumer):
    user = None  # the logged-in chat user; None while anonymous

    # --- Connection lifecycle ----------------------------------------------

    async def connect(self):
        self.user = None
        self.after_reply = []
        await self.accept()
        scope_user = self.scope.get("user")
        if scope_user is not None and scope_user.is_authenticated:
            try:
                pending = await self.start_session(scope_user, takeover=False)
            except ServiceError as e:
                await self.send_json({"type": "error", "code": e.code, "message": e.message, **e.extra})
            except Exception:
                log.exception("session login failed")
                await self.send_json({"type": "error", "code": "internal_error", "message": "Log in again."})
            else:
                await self.send_frames(self.pending_frames(pending))

    async def disconnect(self, code):
        await self.end_session()

    async def start_session(self, user, *, takeover):
        """Claim the user's one connection, subscribe, return pending messages.

        Subscribing first means this connection hears its own presence event
        and any message accepted meanwhile: at worst pushed twice, never missed.
        Frames are only forwarded once `self.user` is set, after the claim.
        """
        await pump.startup()
        await events.subscribe(self.channel_layer, self.channel_name, user.pk)
        try:
            await events.call(services.presence_claim, user=user, channel_name=self.channel_name, takeover=takeover)
        except Exception:
            await events.unsubscribe(self.channel_layer, self.channel_name, user.pk)
            raise
        self.user = user
        pump.register(self.channel_name, user.pk)
        return await events.call(services.delivery_flush, user=user)

    async def end_session(self):
        user, self.user = self.user, None
        if user is None:
            return
        pump.unregister(self.channel_name)
        await events.unsubscribe(self.channel_layer, self.channel_name, user.pk)
        await events.call(services.presence_release, user=user, channel_name=self.channel_name)

    # --- Frames -------------------------------------------------------------

    async def send_json(self, data):
        text = json.dumps(data, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. in an echoed ref
            text = json.dumps(data)
        await self.send(text_data=text)

    async def send_frames(self, frames):
        for frame in frames:
            await self.send_json(frame)

    @staticmethod
    def pending_frames(messages):
        return [events.message_frame(m, stored=True) for m in messages]

    async def receive(self, text_data=None, bytes_data=None):
        ref = None
        try:
            if text_data is None:
                raise BadFrame("bad_request", "Send JSON in text frames, not binary ones.")
            if len(text_data) > settings.CHAT_MAX_FRAME_BYTES or (
                len(text_data.encode("utf-8", "surrogatepass")) > settings.CHAT_MAX_FRAME_BYTES
            ):
                raise BadFrame("too_large", f"A frame may be at most {settings.CHAT_MAX_FRAME_BYTES} bytes.")
            try:
                data = json.loads(text_data)
            except (ValueError, RecursionError):
                raise BadFrame("bad_request", "The frame is not valid JSON.") from None
            if not isinstance(data, dict):
                raise BadFrame("bad_request", "A frame must be a JSON object.")
            ref = data.get("ref")
            op = data.get("type")
            if not isinstance(op, str) or op not in OPS:
                raise BadFrame("bad_request", f"Unknown type {op!r}.")
            handler, needs_login, invalid_code = OPS[op]
            if needs_login and self.user is None:
                raise ServiceError("not_logged_in", "Log in first.")
            result = await getattr(self, handler)(Frame(data, invalid_code))
        except (BadFrame, ServiceError) as e:
            await self.send_json(
                {"type": "error", "ref": ref, "code": e.code, "message": e.message, **getattr(e, "extra", {})}
            )
            return
        except Exception:
            log.exception("request failed")
            await self.send_json(
                {"type": "error", "ref": ref, "code": "internal_error", "message": "The server failed; try again."}
            )
            return
        await self.send_json({"type": "ok", "ref": ref, **(result or {})})
        if self.after_reply:
            then, self.after_reply = self.after_reply, []
            for step in then:
                await step()

    # --- Channel-layer events (types named in events.py) ----------------------

    async def chat_frames(self, event):
        if self.user is None or self.user.pk in event.get("exclude", ()):
            return
        await self.send_frames(event["frames"])

    async def chat_end(self, event):
        await self.send_json(event["frame"])
        await self.end_session()
        await self.close(code=event["code"])

    # --- Ops ----------------------------------------------------------------

    def client_ip(self):
        client = self.scope.get("client") or ()
        try:
            return str(ipaddress.ip_address(client[0]))
        except (IndexError, TypeError, ValueError):
            return "0.0.0.0"

    async def op_whoami(self, frame):
        return {"username": self.user.username if self.user else None}

    async def op_signup(self, frame):
        username, password = frame.text("username"), frame.text("password")
        user = await events.call(accounts.user_signup, parallel=True, username=username, password=password)
        return {"username": user.username}

    async def op_login(self, frame):
        if self.user is not None:
            raise ServiceError("already_logged_in", f"You are already logged in as {self.user.username}.")
        takeover = frame.boolean("takeover", required=False) or False
        if takeover and "username" not in frame.data and "password" not in frame.data:
            user = await self.session_user()
        else:
            username, password = frame.text("username"), frame.text("password")
            user = await events.call(accounts.user_authenticate, parallel=True, username=username, password=password, ip=self.client_ip())
        pending = await self.start_session(user, takeover=takeover)
        self.after_reply.append(lambda: self.send_frames(self.pending_frames(pending)))
        return {"username": user.username, "pending": len(pending)}

    @db
    def session_user(self):
        scope_user = self.scope.get("user")
        user = User.objects.filter(pk=getattr(scope_user, "pk", None), is_active=True).first()
        if user is None:
            raise BadFrame("bad_request", "No logged-in session to take over from; send username and password.")
        return user

    async def op_logout(self, frame):
        await self.end_session()
        session = self.scope.get("session")
        if session is not None and session.session_key:
            await session_logout(self.scope)
        self.after_reply.append(lambda: self.close(code=1000))
        return {}

    async def op_send(self, frame):
        to, body = frame.text("to"), frame.text("body")
        message, live = await events.call(services.message_send, sender=self.user, to_username=to, body=body)
        return {"id": message.id, "delivered": "live" if live else "stored"}

    async def op_broadcast(self, frame):
        body = frame.text("body")
        message, live, stored = await events.call(services.message_broadcast, sender=self.user, body=body)
        return {"id": message.id, "live": live, "stored": stored}

    async def op_block(self, frame):
        await events.call(services.block_create, blocker=self.user, username=frame.text("username"))
        return {}

    async def op_unblock(self, frame):
        await events.call(services.block_delete, blocker=self.user, username=frame.text("username"))
        return {}

    async def op_blocked(self, frame):
        return {"users": await db(selectors.blocked_usernames)(user=self.user)}

    async def op_online(self, frame):
        return {"users": await db(selectors.online_usernames)()}

    async def op_recent(self, frame):
        return {"users": await db(selectors.recent_users)()}

    async def op_ack(self, frame):
        await events.call(services.delivery_ack, user=self.user, ids=frame.id_list("ids"))
        return {}

    async def op_history(self, frame):
        peer = await self.peer(frame)
        before = frame.integer("before", required=False)
        limit = frame.integer("limit", required=False, low=1, high=100) or 50
        return {"messages": await db(selectors.message_history)(user=self.user, peer=peer, before=before, limit=limit)}

    async def op_conversations(self, frame):
        return {"conversations": await db(selectors.conversation_list)(user=self.user)}

    async def op_read(self, frame):
        peer = await self.peer(frame)
        up_to = frame.integer("up_to")
        await events.call(services.conversation_read, user=self.user, peer=peer, up_to=up_to)
        return {}

    async def peer(self, frame):
        """The `with` field: a user, or None for the broadcast conversation."""
        username = frame.text("with", nullable=True)
        if username is None:
            return None
        return await db(services.user_by_name)(username)
