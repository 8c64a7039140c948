"""The terminal client's session, apart from the terminal: the connection
kept open (reconnecting with the resume token, with backoff), login and
signup, what had no answer sent again, acks and read marks, incoming
events, and the lines and status they make. The slash commands are in
chatclient.commands; `execute` hands them the lines that start with "/".

`output` receives each line to show; the terminal UI prints it above the
input line, tests collect it. `on_change` is called when what `prompt()`
or `status()` return may have changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.protocol import CLOSE_POLICY, CLOSE_REPLACED

from . import commands
from .connection import ConnectFailed, Connection, ConnectionLost, NotAChatServer
from .targets import EVERYONE, room_id, room_key
from .text import clean, clock, explain, names, receipt, render_message
from .upload import http_base

__all__ = ["ChatClient", "Ended"]

TYPING_REPEAT = 3.0  # seconds between two `typing` frames while the person types
TYPING_SHOWN = 6.0  # how long another's "typing" lasts without a repeat
ANONYMOUS_FOR = 45.0  # an anonymous connection older than this is replaced before use
UNAVAILABLE_TRIES = 15  # logins tried while the server says it is briefly unavailable
EVENTS = {
    "message", "presence", "presence_batch", "receipt", "typing", "message_edited", "message_deleted",
    "session_replaced", "session_ended", "error", "room", "reaction",
}  # fmt: skip
ROOM_TOLD = {
    "added": "{who} {was} added to {room}",
    "removed": "{who} {was} removed from {room}",
    "left": "{who} left {room}",
    "admin": "{who}'s admin rights in {room} changed",
    "renamed": "the room is now called {room}",
    "created": "you were added to the new room {room}",
}


class Ended(Exception):
    """The session is over; `code` is the process exit code. With
    `login_again`, the person may log in again (the menu comes back)."""

    def __init__(self, message: str, code: int, *, login_again: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.login_again = login_again


@dataclass
class Outgoing:
    """A message the person sent that has no `ok` yet: it is sent again,
    with the same client_id, after a reconnect."""

    to: str  # a username, EVERYONE or a room ("#" and its id)
    body: str
    client_id: str
    queued: bool = False  # typed while offline
    reply_to: int | None = None
    attachments: tuple[int, ...] = ()  # ids of files uploaded for it


@dataclass
class Sent:
    """One of one's own messages of this session."""

    id: int
    to: str | None  # None: everyone; "#ID": a room
    body: str
    delivered: bool = False
    read: bool = False


def retry_wait(delay: float) -> float:
    """Somewhere in the second half of `delay`: clients that lost the server
    together come back spread over seconds, not all in the same one
    (bench/reconnect_bench.py measures it)."""
    return delay * random.uniform(0.5, 1.0)


def retry_after_wait(retry_after: Any) -> float:
    """How long to wait when the server says `unavailable` with
    `retry_after`: at least that, and up to a tenth (and a second) more,
    so that clients told the same second do not all come back in it (a
    busy server gives each its own time already)."""
    told = max(1.0, min(float(retry_after or 2), 300.0))
    return told + random.uniform(0, 1 + told / 10)


class ChatClient:
    """One person's session with a chat server; the commands use it as
    `commands.Client` (mypy checks that it is one)."""

    def __init__(
        self,
        url: str,
        output: Callable[[str], None],
        *,
        on_change: Callable[[], None] | None = None,
        first_delay: float = 1.0,
        max_delay: float = 5.0,
        timeout: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        self.http_base = http_base(url)  # where files are uploaded and downloaded
        self.output = output
        self.on_change = on_change or (lambda: None)
        self.first_delay, self.max_delay = first_delay, max_delay
        self.timeout = timeout  # for a reply; past it the connection counts as lost
        self.now = clock
        self.conn: Connection | None = None
        self.opened_at = 0.0
        self.closing = False
        self.keeper: asyncio.Task[None] | None = None
        self.wanted = asyncio.Event()  # a connection is needed (after the login deadline)
        self.up = asyncio.Event()  # a connection is open
        self.retry = asyncio.Event()  # the person asked to try again now
        self.link = ""  # what the status line says about the connection
        self.ended: Ended | None = None  # why this session is over, once it is
        self.finished = asyncio.Event()  # set with `ended`
        self.chores: set[asyncio.Task[None]] = set()  # frames sent without waiting
        self._forget()

    def _forget(self) -> None:
        """Everything about one user's session."""
        self.username: str | None = None
        # A resume token, never the password: what logs in again after a drop.
        self.token: str | None = None
        self.online = False  # logged in over a live connection, nothing left to resend
        self.seen: set[int] = set()  # ids shown, so a re-push is not shown twice
        self.shown: dict[int, dict[str, Any]] = {}  # what others' edits and deletes refer to
        self.deleted: set[int] = set()  # a delete may overtake the message it deletes
        self.target: str | None = None  # where plain text goes: a username, EVERYONE or room_key(id)
        self.rooms: dict[int, dict[str, Any]] = {}  # room objects by id, kept by `rooms` and room events
        self.last_writer: str | None = None  # who wrote privately last (/reply)
        self.known: set[str] = set()  # names for tab completion
        self.outbox: dict[str, Outgoing] = {}  # sent or typed, no ok yet; in order
        self.sent: dict[int, Sent] = {}  # one's own messages, for receipts, /edit and /delete
        self.typing: dict[tuple[str, int | None], float] = {}  # (who, room) typing to me, until when
        self.typing_to: tuple[str, float] | None = None  # whom I told I type, when
        self.held: list[dict[str, Any]] | None = None  # events kept back while a login is answered
        self.marks: tuple[list[int], dict[str, int]] = ([], {})  # acks and read marks to send
        self.marks_task: asyncio.Task[None] | None = None

    # --- Connection -------------------------------------------------------------

    async def connect(self) -> None:
        """The first connection: ConnectFailed or NotAChatServer if there is
        no chat server there. Afterwards the connection is kept open."""
        await self._open()
        self.keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _open(self) -> None:
        conn = Connection(self.url, self.on_event, timeout=self.timeout)
        await conn.open()
        if self.closing:
            await conn.close()
            raise ConnectionLost()
        self.conn = conn
        self.opened_at = asyncio.get_running_loop().time()
        self.wanted.clear()
        self.up.set()
        self._link("")

    async def _keep(self) -> None:
        """Whenever the connection ends: find out why, and get it back."""
        while True:
            conn = self.conn
            assert conn is not None
            await conn.closed.wait()
            self.up.clear()
            self.online = False
            if self.closing:
                return
            if self.ended is None and conn.close_code == CLOSE_REPLACED:
                self.ended = Ended("You logged in somewhere else, so this client stops.", 5)
            if self.ended is None and self.token is None:
                if conn.close_code == CLOSE_POLICY:
                    # Anonymous connections are closed after a while
                    # (CHAT_LOGIN_DEADLINE_SECONDS): open the next one when
                    # it is needed.
                    await self.wanted.wait()
                # Tried once at once, quietly: most likely the server is there.
                await self._reconnect(lost="Lost the connection to the server. Reconnecting…")
            elif self.ended is None:
                self.output("Connection lost. Reconnecting… (what you send meanwhile goes when it is back)")
                await self._reconnect()
            if self.ended is not None:
                self.finished.set()
                self.on_change()
                return

    async def _reconnect(self, *, lost: str = "") -> None:
        """Try until it works, waiting longer each time up to `max_delay`.
        `lost` is said once the first (quiet) try failed."""
        delay, tries = self.first_delay, 0
        while not self.closing:
            if tries:
                if tries == 1 and lost:
                    self.output(lost)
                wait = retry_wait(delay)
                self._link(f"No connection: next try in {wait:.0f} s")
                self.output(
                    f"Still no connection ({tries} {'try' if tries == 1 else 'tries'}); "
                    f"next try in {wait:.0f} s (Enter on an empty line: now)."
                )
                self.retry.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.retry.wait(), wait)
                delay = min(delay * 2, self.max_delay)
            tries += 1
            self._link("Reconnecting…")
            try:
                await self._open()
                if self.token is not None:
                    await self._log_in_again()
            except (ConnectFailed, NotAChatServer, ConnectionLost, TimeoutError):
                continue
            except Ended as ended:
                self.ended = ended
                return
            if self.token is None and lost and tries > 1:
                self.output("Connected again.")
            return

    def _link(self, text: str) -> None:
        self.link = text
        self.on_change()

    async def _log_in_again(self) -> None:
        """Log in with the resume token over a new connection, then send
        what had no answer."""
        assert self.conn is not None
        while True:
            self.held = []
            try:
                reply = await self.conn.request("login", token=self.token, takeover=True, presence_batch=True)
            finally:
                held, self.held = self.held, None
            if reply["type"] == "ok":
                break
            if reply.get("code") == "invalid_credentials":
                raise Ended("Your session is over (logged out or expired): log in again.", 6, login_again=True)
            if reply.get("code") != "unavailable":
                raise ConnectionLost()  # the server is not ready: try again
            # Busy (a restart's crowd logging in again) or its Redis down:
            # the same connection, later, and quietly: nothing is wrong
            # that a person should read about, the status says "Reconnecting…".
            await asyncio.sleep(retry_after_wait(reply.get("retry_after")))
        await self._logged_in(reply, "Reconnected as", held)

    async def _logged_in(self, reply: dict[str, Any], lead: str, held: list[dict[str, Any]]) -> None:
        self.username = reply["username"]
        self.token = reply.get("token") or self.token
        # The rooms' names before any room message is shown; what arrives
        # meanwhile waits behind what waited already, in order.
        self.held = held
        try:
            await self.load_rooms()
        finally:
            held, self.held = self.held, None
        waiting = reply.get("pending", 0)
        self.output(
            f"{lead} {self.username}."
            + (f" {waiting} message(s) waited for you." if waiting else "")
            + (" Type /help for commands." if lead != "Reconnected as" else "")
        )
        for frame in held:
            await self.on_event(frame)
        await self._resend()
        if lead != "Reconnected as":
            # Names for Tab completion, once: each list is everyone online
            # (700 KB at 10,000), and after a restart every client asking
            # again moves N² names. Presence frames keep them since.
            await self.refresh_names()

    async def _resend(self) -> None:
        """Send again, in order, what had no answer; only then is the client
        `online`, so nothing typed meanwhile overtakes it."""
        while self.outbox:
            await self._send(next(iter(self.outbox.values())), again=True)
        self.online = True
        self.on_change()

    async def _anonymous(self, type: str, **fields: Any) -> dict[str, Any]:
        """A request before login (signup, login), over the connection kept
        open, or a new one if it ended (it waits for one)."""
        loop = asyncio.get_running_loop()
        while True:
            while self.conn is None or self.conn.closed.is_set():
                self.wanted.set()
                self.up.clear()
                await self.up.wait()
            conn = self.conn
            if loop.time() - self.opened_at > ANONYMOUS_FOR:
                # Near the server's login deadline, which could close it
                # while the login is on its way: a new one, quietly.
                await conn.close()
                continue
            try:
                return await conn.request(type, **fields)
            except ConnectionLost:
                continue
            except TimeoutError:
                # The server kept the connection but does not answer: a new one.
                await conn.close()

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        if self.conn is None:
            raise ConnectionLost()
        try:
            return await self.conn.request(type, **fields)
        except TimeoutError:
            # A server that does not answer is as good as gone: drop the
            # connection, so it is made again and what had no answer resent.
            await self.conn.close()
            raise

    async def notify(self, type: str, **fields: Any) -> None:
        if self.online and self.conn is not None:
            await self.conn.notify(type, **fields)

    async def close(self) -> None:
        self.closing = True
        if self.conn is not None and not self.conn.closed.is_set():
            await self._send_marks()
        if self.marks_task is not None:
            self.marks_task.cancel()
        if self.keeper is not None:
            # `closing` ends it too: a cancel can be lost inside a timeout
            # that expires at the same moment (Python 3.11).
            self.keeper.cancel()
            self.wanted.set()
        if self.conn is not None:
            await self.conn.close()
        if self.keeper is not None:
            await asyncio.gather(self.keeper, return_exceptions=True)

    def restart(self) -> None:
        """After Ended with login_again: back to an anonymous connection,
        keeping what was typed and not yet sent."""
        self.ended = None
        self.finished.clear()
        self.token = None
        self.online = False
        self.keeper = asyncio.get_running_loop().create_task(self._keep())

    # --- Account --------------------------------------------------------------------

    async def signup(self, username: str, password: str) -> dict[str, Any] | None:
        """Create the account and log in; the error reply, or None."""
        reply = await self._anonymous("signup", username=username, password=password)
        if reply["type"] != "ok":
            return reply
        return await self.login(reply["username"], password, created=True)

    async def login(
        self, username: str, password: str, takeover: bool = False, *, created: bool = False
    ) -> dict[str, Any] | None:
        """Log in; the error reply, or None when logged in. The password is
        not kept: the reply's resume token logs in again after a drop."""
        # What waited is pushed right after the reply: show it after saying so.
        for tries in range(UNAVAILABLE_TRIES):
            self.held = []
            try:
                reply = await self._anonymous(
                    "login", username=username, password=password, takeover=takeover, presence_batch=True
                )
            finally:
                held, self.held = self.held, None
            if reply.get("code") != "unavailable" or tries == UNAVAILABLE_TRIES - 1:
                break
            # The server cannot complete a login just now (it is busy, or
            # its Redis is down): it says so, and says when to try again.
            wait = min(retry_after_wait(reply.get("retry_after")), 30)
            self.output(f"The server is briefly unavailable; trying again in {wait:.0f} s.")
            await asyncio.sleep(wait)
        if reply["type"] != "ok":
            return reply
        if reply["username"] != self.username:
            self._forget()  # someone else than before: nothing of theirs is kept
        lead = f"Account {reply['username']} created. Logged in as" if created else "Logged in as"
        try:
            await self._logged_in(reply, lead, held)
        except (ConnectionLost, TimeoutError):
            pass  # logged in, then dropped: the token logs in again, and resends
        return None

    async def load_rooms(self) -> list[dict[str, Any]]:
        """The rooms one is in (latest message first), kept for names and
        completion; a server older than 1.2 has none."""
        reply = await self.request("rooms")
        if reply["type"] == "ok":
            self.rooms = {r["id"]: r for r in reply["rooms"]}
            if self.target is not None and room_id(self.target) not in (None, *self.rooms):
                self.target = None  # removed from that room while away
        return list(self.rooms.values())

    def room_label(self, room: int | None) -> str:
        known = self.rooms.get(room or 0)
        return f"#{clean(known['name'])}" if known is not None else f"room #{room}"

    async def refresh_names(self) -> None:
        try:
            online = await self.request("online")
            recent = await self.request("recent")
        except (ConnectionLost, TimeoutError):
            return
        self.known.update(online.get("users", []))
        self.known.update(u["username"] for u in recent.get("users", []))
        self.known.discard(self.username or "")

    # --- Events -----------------------------------------------------------------------

    async def on_event(self, frame: dict[str, Any]) -> None:
        if self.held is not None:
            self.held.append(frame)
            return
        kind = frame.get("type")
        if kind in EVENTS and "ref" not in frame:  # replies to notify() have a ref
            getattr(self, f"on_{kind}")(frame)

    def on_message(self, m: dict[str, Any]) -> None:
        self._mark(m)
        if m["id"] in self.seen or m["id"] in self.deleted:
            return
        self.seen.add(m["id"])
        self.shown[m["id"]] = m
        sender = m["from"]
        if sender != self.username:
            self.known.add(sender)
            self.typing.pop((sender, m.get("room")), None)
            if m["kind"] == "private":
                self.last_writer = sender
                if self.target is None:
                    self.target = sender
        self.output(render_message(m, self.username, base=self.http_base, rooms=self.room_names()))
        self.on_change()

    def room_names(self) -> dict[int, str]:
        return {i: r["name"] for i, r in self.rooms.items()}

    def on_room(self, frame: dict[str, Any]) -> None:
        """A change to one of one's rooms: keep the room, say what changed."""
        room, change, who = frame["room"], frame.get("change", ""), frame.get("username")
        gone = change in ("removed", "left") and who == self.username
        before = self.rooms.get(room["id"])
        if gone:
            self.rooms.pop(room["id"], None)
            if self.target == room_key(room["id"]):
                self.target = None
        else:
            self.rooms[room["id"]] = room
        label = f"#{clean(room['name'])}"
        if change == "renamed" and before is not None:
            line = f"{self.room_label_of(before)} is now called {label}"
        elif change == "added" and who == self.username:
            line = f"you were added to {label}"
        elif change == "admin" and who == self.username:
            line = f"you are {'now' if room.get('admin') else 'no longer'} an admin of {label}"
        else:
            template = ROOM_TOLD.get(change, "{room} changed")
            mine = who == self.username
            line = template.format(who="you" if mine else clean(who or ""), room=label, was="were" if mine else "was")
        self.output(f"* {line}")
        self.on_change()

    @staticmethod
    def room_label_of(room: dict[str, Any]) -> str:
        return f"#{clean(room['name'])}"

    def on_reaction(self, frame: dict[str, Any]) -> None:
        who = "you" if frame["by"] == self.username else clean(frame["by"])
        if frame.get("on", True):
            self.output(f"({who} reacted {clean(frame['emoji'])} to #{frame['id']})")
        else:
            self.output(f"({who} took back {clean(frame['emoji'])} on #{frame['id']})")

    def on_presence(self, frame: dict[str, Any]) -> None:
        online = [frame["username"]] if frame["online"] else []
        self.on_presence_batch({"online": online, "offline": [] if online else [frame["username"]]})

    def on_presence_batch(self, frame: dict[str, Any]) -> None:
        for state in ("online", "offline"):
            users = [u for u in frame.get(state, []) if u != self.username]
            self.known.update(users)
            if users:
                self.output(f"* {names(users)} {'is' if len(users) == 1 else 'are'} {state}")

    def on_receipt(self, frame: dict[str, Any]) -> None:
        if frame.get("status") == "delivered":
            sent = self.sent.get(frame.get("id", 0))
            if sent is not None:
                sent.delivered = True
        elif frame.get("status") == "read":
            for sent in self.sent.values():
                if sent.to == frame.get("by") and sent.id <= frame.get("up_to", 0):
                    sent.delivered = sent.read = True
        self.on_change()

    def on_typing(self, frame: dict[str, Any]) -> None:
        key = (frame["from"], frame.get("room"))
        if frame.get("typing", True):
            self.typing[key] = self.now() + TYPING_SHOWN
        else:
            self.typing.pop(key, None)
        self.on_change()

    def on_message_edited(self, frame: dict[str, Any]) -> None:
        m = self.shown.get(frame["id"])
        if m is None or m["from"] == self.username:
            return
        m["body"] = frame["body"]
        where = f"{self.room_label(m['room'])} " if m.get("room") else ""
        self.output(f"[{clock(frame['edited_at'])}] {where}{clean(m['from'])} edited: {clean(frame['body'])}")

    def on_message_deleted(self, frame: dict[str, Any]) -> None:
        self.deleted.add(frame["id"])
        m = self.shown.pop(frame["id"], None)
        if m is not None and m["from"] != self.username:
            self.output(f"* {clean(m['from'])} deleted their message of {clock(m['sent_at'])}")

    def on_session_replaced(self, frame: dict[str, Any]) -> None:
        self.ended = Ended("You logged in somewhere else, so this client stops.", 5)

    def on_session_ended(self, frame: dict[str, Any]) -> None:
        reason = clean(frame.get("reason") or "no reason given.")
        # The server says what to do next; older servers only said it in words.
        action = frame.get("action")
        if action not in ("reconnect", "login", "stop"):
            lowered = reason.lower()
            action = "reconnect" if "reconnect" in lowered else "login" if "log in" in lowered else "stop"
        if action != "reconnect":
            self.ended = Ended(f"The server ended your session: {reason}", 6, login_again=action == "login")

    def on_error(self, frame: dict[str, Any]) -> None:
        self.output(explain(frame))

    def _mark(self, message: dict[str, Any]) -> None:
        """Ack what arrived; mark as read what the person now sees."""
        acks, reads = self.marks
        acks.append(message["id"])
        if message["from"] != self.username and message["kind"] in ("private", "room"):
            peer = room_key(message["room"]) if message["kind"] == "room" else message["from"]
            reads[peer] = max(reads.get(peer, 0), message["id"])
        if self.marks_task is None or self.marks_task.done():
            self.marks_task = asyncio.get_running_loop().create_task(self._send_marks(soon=True))

    async def _send_marks(self, soon: bool = False) -> None:
        if soon:
            await asyncio.sleep(0.05)  # one frame for a burst of messages
        (acks, reads), self.marks = self.marks, ([], {})
        if self.conn is None:
            return
        for i in range(0, len(acks), 1000):
            await self.conn.notify("ack", ids=acks[i : i + 1000])
        for peer, up_to in reads.items():
            room = room_id(peer)
            where: dict[str, Any] = {"room": room} if room is not None else {"with": peer}
            await self.conn.notify("read", **where, up_to=up_to)

    # --- What the terminal shows ---------------------------------------------------------

    def prompt(self) -> str:
        if self.target is None:
            return "> "
        if self.target == EVERYONE:
            return "to everyone > "
        room = room_id(self.target)
        return f"to {self.room_label(room)} > " if room is not None else f"to {self.target} > "

    def status(self) -> str:
        """The status line below the input."""
        if self.ended is not None:
            return "Disconnected"
        if self.link:
            return self.link
        if self.token is None or self.username is None:
            return "Not logged in" if self.up.is_set() else "Not connected"
        parts = [self.username]
        now = self.now()
        places: dict[int | None, list[str]] = {}
        for (user, room), until in sorted(self.typing.items()):
            if until > now and (room is None or room in self.rooms):
                places.setdefault(room, []).append(user)
        for room, typing in sorted(places.items(), key=lambda p: p[0] != room_id(self.target or "")):
            where = f" in {self.room_label(room)}" if room is not None else ""
            parts.append(f"{names(typing)} {'is' if len(typing) == 1 else 'are'} typing{where}…")
        last = next((s for s in reversed(self.sent.values()) if s.to == self.target), None)
        if last is not None and last.to is not None and room_id(last.to) is None:
            parts.append(f"your last message to {last.to}: {receipt(vars(last))}")
        return "  ·  ".join(parts)

    def typed(self, text: str) -> None:
        """The input line changed: tell its recipient that the person types,
        at most every TYPING_REPEAT seconds, and when they stop."""
        to = commands.typing_target(self, text)
        now = self.now()
        if self.typing_to is not None and (to is None or to != self.typing_to[0]):
            self._typing(self.typing_to[0], False)
        if to is not None and (self.typing_to is None or now - self.typing_to[1] >= TYPING_REPEAT):
            self._typing(to, True)

    def _typing(self, to: str, typing: bool) -> None:
        self.typing_to = (to, self.now()) if typing else None
        if self.online:
            room = room_id(to)
            where: dict[str, Any] = {"room": room} if room is not None else {"to": to}
            task = asyncio.get_running_loop().create_task(self.notify("typing", **where, typing=typing))
            self.chores.add(task)
            task.add_done_callback(self.chores.discard)

    # --- What the person types ----------------------------------------------------------

    async def execute(self, line: str) -> bool:
        """Run one line the user typed. Returns False when the user is done."""
        line = line.strip()
        if self.typing_to is not None:
            self._typing(self.typing_to[0], False)
        if not line:
            if not self.up.is_set():
                self.retry.set()  # skip the wait: the server may be back
            return True
        if line.startswith("/"):
            return await commands.run(self, line)
        if self.target is None:
            self.output("Who is that for? Start with /msg USER TEXT or /all TEXT.")
            return True
        await self.say(self.target, line)
        return True

    def completions(self, text: str) -> list[str]:
        """Candidates for the word being typed at the end of `text`."""
        return commands.completions(self, text)

    # --- Sending -----------------------------------------------------------------------

    async def say(
        self, target: str, text: str, attachments: tuple[int, ...] = (), *, reply_to: int | None = None
    ) -> None:
        """Send, or keep to send once the connection is back."""
        item = Outgoing(
            target, text, uuid.uuid4().hex, queued=not self.online, reply_to=reply_to, attachments=attachments
        )
        self.outbox[item.client_id] = item
        if item.queued:
            self.output("(not connected: it goes when the connection is back)")
            return
        try:
            await self._send(item)
        except (ConnectionLost, TimeoutError):
            self.output("(the connection dropped: it is sent again when the connection is back)")

    async def _send(self, item: Outgoing, *, again: bool = False) -> None:
        """Send one message of the outbox; ConnectionLost leaves it there.
        The same client_id every time: the server stores it once."""
        fields: dict[str, Any] = {"body": item.body, "client_id": item.client_id}
        if item.reply_to is not None:
            fields["reply_to"] = item.reply_to
        room = room_id(item.to)
        if item.attachments:
            fields["attachments"] = list(item.attachments)
        if item.to == EVERYONE:
            reply = await self.request("broadcast", **fields)
        elif room is not None:
            reply = await self.request("send", room=room, **fields)
        else:
            reply = await self.request("send", to=item.to, **fields)
        if reply["type"] != "ok" and reply.get("code") == "rate_limited" and again:
            await asyncio.sleep(float(reply.get("retry_after") or 1))
            return  # still first in the outbox: tried again
        self.outbox.pop(item.client_id, None)
        if reply["type"] != "ok":
            self.output(f"Not sent{f' ({item.body!r})' if again else ''}: {explain(reply, self.place(item.to))}")
            return
        self.seen.add(reply["id"])
        self.sent[reply["id"]] = Sent(reply["id"], None if item.to == EVERYONE else item.to, item.body)
        if again or item.queued:
            self.output(f"(sent to {self.place(item.to)}: {item.body})")
        if item.to == EVERYONE:
            self.output(f"(to everyone: {reply['live']} online now, {reply['stored']} later)")
        elif room is not None:
            pass  # the room's members see it; no line for each message sent
        elif item.reply_to is not None and reply["delivered"] != "stored":
            self.output(f"(you → {item.to}, in reply to #{item.reply_to}: {item.body})")
        elif reply["delivered"] == "stored":
            self.output(f"({item.to} is offline; they will get it when they log in)")
        self.on_change()

    def place(self, target: str) -> str:
        """A target in words: everyone, #team or bob."""
        if target == EVERYONE:
            return "everyone"
        room = room_id(target)
        return self.room_label(room) if room is not None else target

    def aim(self, target: str) -> None:
        """Plain text goes to `target` from now on."""
        if target != EVERYONE and room_id(target) is None:
            self.known.add(target)
        if self.target != target:
            self.target = target
            self.on_change()

    def conversation_of(self, message: int) -> str | None:
        """The target a shown or sent message belongs to (None: unknown)."""
        m = self.shown.get(message)
        if m is None:
            sent = self.sent.get(message)
            return (sent.to or EVERYONE) if sent is not None else None
        if m["kind"] == "room":
            return room_key(m["room"])
        if m["kind"] == "broadcast":
            return EVERYONE
        peer: str = m["to"] if m["from"] == self.username else m["from"]
        return peer
