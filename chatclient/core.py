"""What the terminal client does, apart from the terminal: commands,
events, acks and read marks, and keeping the connection (reconnecting with
the resume token, sending again what had no answer).

`output` receives each line to show; the terminal UI prints it above the
input line, tests collect it. `on_change` is called when what `prompt()`
or `status()` return may have changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.protocol import CLOSE_POLICY, CLOSE_REPLACED

from .connection import ConnectFailed, Connection, ConnectionLost, NotAChatServer
from .text import clean, clock, explain, file_size, names, receipt, render_message, username_problem
from .upload import PROGRESS_FROM, UploadFailed, http_base, upload

__all__ = ["COMMANDS", "HELP", "ChatClient", "Ended", "explain", "render_message", "username_problem"]

EVERYONE = "*"
TYPING_REPEAT = 3.0  # seconds between two `typing` frames while the person types
TYPING_SHOWN = 6.0  # how long another's "typing" lasts without a repeat
ANONYMOUS_FOR = 45.0  # an anonymous connection older than this is replaced before use
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


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    method: str
    names: bool = False  # its argument is a user name (Tab completes it)
    rooms: bool = False  # its argument is a room name (Tab completes it)
    many: int = 0  # with `names`: user names from this word on (0: only the first)


# The one list of commands: /help, Tab completion and `execute` read it.
COMMAND_LIST = [
    Command("/msg", "USER [TEXT]", "private message to USER; plain text then goes to USER", "cmd_msg", names=True),
    Command("/reply", "[#ID] TEXT", "answer message #ID (else whoever wrote privately last)", "cmd_reply"),
    Command("/all", "[TEXT]", "message to everyone; plain text then goes to everyone", "cmd_all"),
    Command("/rooms", "", "your rooms, with unread counts", "cmd_rooms"),
    Command("/room", "NAME-OR-ID", "talk in a room: plain text then goes there", "cmd_room", rooms=True),
    Command(
        "/create",
        "NAME [USER...]",
        "a new room with these members; you are its admin",
        "cmd_create",
        names=True,
        many=2,
    ),
    Command("/invite", "USER...", "add users to this room (admins)", "cmd_invite", names=True, many=1),
    Command("/kick", "USER", "remove USER from this room (admins)", "cmd_kick", names=True),
    Command("/leave", "", "leave this room", "cmd_leave"),
    Command("/members", "", "who is in this room", "cmd_members"),
    Command("/rename", "NAME", "rename this room (admins)", "cmd_rename"),
    Command("/react", "#ID EMOJI", "react to message #ID", "cmd_react"),
    Command("/unreact", "#ID EMOJI", "take your reaction back", "cmd_unreact"),
    Command("/send-file", "PATH [TEXT]", "upload a file and send it where plain text goes", "cmd_send_file"),
    Command("/edit", "[#ID] TEXT", "change your last message (or message #ID)", "cmd_edit"),
    Command("/delete", "[#ID]", "delete your last message (or message #ID)", "cmd_delete"),
    Command(
        "/history",
        "[USER|#ROOM]",
        "recent messages (default: this room, or to everyone)",
        "cmd_history",
        names=True,
    ),
    Command("/search", "[@USER|#ROOM] WORDS", "messages with these words (default: this room, or all)", "cmd_search"),
    Command("/online", "", "who is online now", "cmd_online"),
    Command("/recent", "", "who was around in the last hour", "cmd_recent"),
    Command("/block", "USER", "stop USER's messages reaching you", "cmd_block", names=True),
    Command("/unblock", "USER", "let USER's messages reach you again", "cmd_unblock", names=True),
    Command("/blocked", "", "whom you block", "cmd_blocked"),
    Command("/logout", "", "log out (ends the session) and quit", "cmd_logout"),
    Command("/quit", "", "quit (Ctrl-D and Ctrl-C do too)", "cmd_quit"),
    Command("/exit", "", "the same as /quit", "cmd_quit"),
    Command("/help", "", "this list", "cmd_help"),
]
COMMANDS = [c.name for c in COMMAND_LIST]
BY_NAME = {c.name: c for c in COMMAND_LIST}

USAGE_WIDTH = max(len(f"{c.name} {c.usage}") for c in COMMAND_LIST) + 2
HELP = (
    "Commands:\n"
    + "\n".join(f"  {(c.name + ' ' + c.usage).strip():<{USAGE_WIDTH}}{c.help}" for c in COMMAND_LIST)
    + "\nPlain text goes where the prompt says (to bob >, to #team >)."
    + "\nTab completes commands, names and room names."
)


def room_key(room: int) -> str:
    """A room as a target: "#" and its id (no username has a "#")."""
    return f"#{room}"


def room_id(target: str) -> int | None:
    """The room a target is, or None for a user or everyone."""
    return int(target[1:]) if target.startswith("#") and target[1:].isdigit() else None


def message_id(word: str) -> int | None:
    """#57 (or 57) as a message id."""
    word = word.removeprefix("#")
    return int(word) if word.isdigit() else None


UNAVAILABLE_TRIES = 15  # logins tried while the server says it is briefly unavailable


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


class ChatClient:
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
        self.held = []
        try:
            reply = await self.conn.request("login", token=self.token, takeover=True, presence_batch=True)
        finally:
            held, self.held = self.held, None
        if reply["type"] != "ok":
            if reply.get("code") == "invalid_credentials":
                raise Ended("Your session is over (logged out or expired): log in again.", 6, login_again=True)
            raise ConnectionLost()  # the server is not ready: try again
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
            # The server cannot complete a login just now (its Redis is
            # down): it says so, and says when to try again.
            wait = max(1, min(int(reply.get("retry_after") or 2), 30))
            self.output(f"The server is briefly unavailable; trying again in {wait} s.")
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
        to = self._typing_target(text)
        now = self.now()
        if self.typing_to is not None and (to is None or to != self.typing_to[0]):
            self._typing(self.typing_to[0], False)
        if to is not None and (self.typing_to is None or now - self.typing_to[1] >= TYPING_REPEAT):
            self._typing(to, True)

    def _typing_target(self, text: str) -> str | None:
        if text.startswith("/"):
            command, _, rest = text.partition(" ")
            if command == "/msg":
                name, space, body = rest.partition(" ")
                return name if space and body.strip() and name != self.username else None
            if command == "/reply" and rest.startswith("#"):
                word, _, body = rest.partition(" ")
                replied = message_id(word)
                return self._conversation_of(replied) if replied is not None and body.strip() else None
            if command == "/reply" and rest.strip():
                return self.last_writer
            return None
        if text.strip() and self.target not in (None, EVERYONE):
            return self.target
        return None

    def _typing(self, to: str, typing: bool) -> None:
        self.typing_to = (to, self.now()) if typing else None
        if self.online:
            room = room_id(to)
            where: dict[str, Any] = {"room": room} if room is not None else {"to": to}
            task = asyncio.get_running_loop().create_task(self.notify("typing", **where, typing=typing))
            self.chores.add(task)
            task.add_done_callback(self.chores.discard)

    # --- Commands -----------------------------------------------------------------------

    async def execute(self, line: str) -> bool:
        """Run one line the user typed. Returns False when the user is done."""
        line = line.strip()
        if self.typing_to is not None:
            self._typing(self.typing_to[0], False)
        if not line:
            if not self.up.is_set():
                self.retry.set()  # skip the wait: the server may be back
            return True
        if not line.startswith("/"):
            if self.target is None:
                self.output("Who is that for? Start with /msg USER TEXT or /all TEXT.")
                return True
            await self.say(self.target, line)
            return True
        name, _, rest = line.partition(" ")
        command = BY_NAME.get(name.lower())
        if command is None:
            self.output(f"Unknown command {name}. Type /help for the list.")
            return True
        try:
            return await getattr(self, command.method)(rest.strip()) is not False
        except (ConnectionLost, TimeoutError):
            self.output("Not connected to the server just now: try again once it is back.")
            return True

    def need_name(self, rest: str, usage: str) -> str | None:
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        if not words:
            self.output(f"Usage: {usage}")
            return None
        return words[0]

    def need_online(self) -> None:
        if not self.online:
            raise ConnectionLost()

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

    def _aim(self, target: str) -> None:
        if target != EVERYONE and room_id(target) is None:
            self.known.add(target)
        if self.target != target:
            self.target = target
            self.on_change()

    async def cmd_msg(self, rest: str) -> None:
        name, _, text = rest.partition(" ")
        if not name:
            self.output("Usage: /msg USER TEXT")
            return
        if name == self.username:
            self.output("That is you.")
            return
        self._aim(name)
        if text.strip():
            await self.say(name, text.strip())
        else:
            self.output(f"Plain text now goes to {name}.")

    async def cmd_send_file(self, rest: str) -> None:
        """Upload over HTTP with the resume token, then send the id where
        plain text goes. A path with spaces is quoted ("my file.pdf")."""
        try:
            words = shlex.split(rest)
        except ValueError:
            words = []
        if not words:
            self.output("Usage: /send-file PATH [TEXT]")
            return
        if self.target is None:
            self.output("Choose where it goes first: /msg USER, /room NAME or /all.")
            return
        if not self.online or self.token is None:
            self.output("Not connected: send the file when the connection is back.")
            return
        path = words[0]
        text = " ".join(words[1:])
        loop = asyncio.get_running_loop()
        shown = [0]

        def progress(sent: int, size: int) -> None:
            # Big files get a line at every quarter.
            if size < PROGRESS_FROM:
                return
            quarter = sent * 4 // size
            if quarter > shown[0]:
                shown[0] = quarter
                line = f"(uploading {os.path.basename(path)}: {quarter * 25}% of {file_size(size)})"
                loop.call_soon_threadsafe(self.output, line)

        try:
            attachment = await asyncio.to_thread(upload, self.http_base, self.token, path, progress=progress)
        except UploadFailed as e:
            self.output(f"Not sent: {clean(str(e))}")
            return
        await self.say(self.target, text, (attachment["id"],))

    async def cmd_reply(self, rest: str) -> None:
        word, _, text = rest.partition(" ")
        if word.startswith("#"):
            await self.reply_to(word, text.strip())
            return
        if self.last_writer is None:
            self.output("Nobody has written to you privately yet.")
            return
        await self.cmd_msg(f"{self.last_writer} {rest}")

    async def cmd_all(self, rest: str) -> None:
        self._aim(EVERYONE)
        if rest:
            await self.say(EVERYONE, rest)
        else:
            self.output("Plain text now goes to everyone.")

    async def reply_to(self, word: str, text: str) -> None:
        """/reply #ID TEXT: an answer to message #ID, in its conversation
        (the current one if the client has not seen that message)."""
        replied = message_id(word)
        if replied is None or not text:
            self.output("Usage: /reply #ID TEXT (/history shows the ids)")
            return
        target = self._conversation_of(replied) or self.target
        if target is None:
            self.output("Which conversation is that in? Go there first (/msg USER, /room NAME).")
            return
        await self.say(target, text, reply_to=replied)

    def _conversation_of(self, message: int) -> str | None:
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

    def here(self, usage: str) -> int | None:
        """The room plain text goes to, or None after saying to pick one."""
        room = room_id(self.target or "")
        if room is None:
            self.output(f"Go to a room first (/room NAME, /rooms lists them). Usage: {usage}")
        return room

    async def room_request(self, type: str, doing: str, **fields: Any) -> dict[str, Any] | None:
        """A room op: the ok reply, or None after saying why not."""
        self.need_online()
        reply = await self.request(type, **fields)
        if reply["type"] == "ok":
            return reply
        name = fields.get("username") or ", ".join(fields.get("usernames") or fields.get("members") or ())
        self.output(f"Not {doing}: {explain(reply, name)}")
        return None

    async def cmd_rooms(self, rest: str) -> None:
        self.need_online()
        rooms = await self.load_rooms()
        if not rooms:
            self.output("You are in no room. /create NAME [USER...] makes one.")
            return
        self.output(f"--- {len(rooms)} room(s) ---")
        for r in rooms:
            notes = [f"{r['member_count']} member{'s' if r['member_count'] != 1 else ''}"]
            if r["unread"]:
                notes.append(f"{r['unread']} unread")
            if r["admin"]:
                notes.append("admin")
            last = f": last {clock(r['last']['sent_at'])}" if r.get("last") else ""
            label = "#" + clean(r["name"])
            self.output(f"  {label:<24} ({', '.join(notes)}, id {r['id']}){last}")

    def find_room(self, wanted: str) -> dict[str, Any] | None:
        """A room by its name (any case, with or without "#"), else by id."""
        for name in (wanted, wanted.removeprefix("#")):
            for r in self.rooms.values():
                if r["name"].lower() == name.lower():
                    return r
        number = message_id(wanted)
        return self.rooms.get(number) if number is not None else None

    async def cmd_room(self, rest: str) -> None:
        if not rest:
            self.output("Usage: /room NAME-OR-ID (/rooms lists them)")
            return
        room = self.find_room(rest)
        if room is None:
            self.need_online()
            await self.load_rooms()  # one made or joined elsewhere
            room = self.find_room(rest)
        if room is None:
            self.output(f"You are in no room called {clean(rest)}. /rooms lists yours.")
            return
        self._aim(room_key(room["id"]))
        unread = f" ({room['unread']} unread: /history shows them)" if room.get("unread") else ""
        self.output(f"Plain text now goes to #{clean(room['name'])}.{unread}")

    async def cmd_create(self, rest: str) -> None:
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        if not words:
            self.output('Usage: /create NAME [USER...] (quote a name with spaces: /create "team lunch" bob)')
            return
        name, members = words[0], words[1:]
        reply = await self.room_request("room_create", "created", name=name, members=members)
        if reply is None:
            return
        room = reply["room"]
        self.rooms[room["id"]] = room
        self._aim(room_key(room["id"]))
        refused = f" Not added (they block you): {names(reply['refused'])}." if reply.get("refused") else ""
        self.output(f"Created #{clean(room['name'])} with {room['member_count']} member(s).{refused}")

    async def cmd_invite(self, rest: str) -> None:
        room = self.here("/invite USER...")
        users = rest.split()
        if room is None:
            return
        if not users:
            self.output("Usage: /invite USER...")
            return
        reply = await self.room_request("room_add", "added", room=room, usernames=users)
        if reply is not None and not reply["added"]:
            self.output("Nobody added: " + ("they block you." if reply["refused"] else "they are members already."))
        elif reply is not None and reply["refused"]:
            self.output(f"Not added (they block you): {names(reply['refused'])}.")

    async def cmd_kick(self, rest: str) -> None:
        room = self.here("/kick USER")
        name = self.need_name(rest, "/kick USER") if room is not None else None
        if room is not None and name:
            await self.room_request("room_remove", "removed", room=room, username=name)

    async def cmd_leave(self, rest: str) -> None:
        room = self.here("/leave")
        if room is not None and await self.room_request("room_leave", "left", room=room) is not None:
            self.output(f"You left {self.room_label(room)}.")
            self.rooms.pop(room, None)
            if self.target == room_key(room):
                self.target = None
                self.on_change()

    async def cmd_members(self, rest: str) -> None:
        room = self.here("/members")
        reply = await self.room_request("room_members", "listed", room=room) if room is not None else None
        if reply is None:
            return
        members = reply["members"]
        self.known.update(m["username"] for m in members)
        self.known.discard(self.username or "")
        shown = [
            clean(m["username"]) + (" (admin)" if m["admin"] else "") + (" (online)" if m["online"] else "")
            for m in members
        ]
        self.output(f"Members of {self.room_label(room)} ({len(members)}): " + ", ".join(shown))

    async def cmd_rename(self, rest: str) -> None:
        room = self.here("/rename NAME")
        if room is not None and not rest:
            self.output("Usage: /rename NAME")
        elif room is not None:
            await self.room_request("room_rename", "renamed", room=room, name=rest)

    async def cmd_react(self, rest: str, on: bool = True) -> None:
        word, _, emoji = rest.partition(" ")
        message, usage = message_id(word), f"/{'' if on else 'un'}react #ID EMOJI"
        if message is None or not emoji.strip():
            self.output(f"Usage: {usage} (/history shows the ids)")
            return
        reply = await self.room_request("react", "done", id=message, emoji=emoji.strip(), on=on)
        if reply is not None:
            self.on_change()

    async def cmd_unreact(self, rest: str) -> None:
        await self.cmd_react(rest, on=False)

    def _which(self, rest: str, usage: str) -> tuple[Sent | int, str] | None:
        """The message `/edit` or `/delete` is about: #ID, or one's last."""
        word, _, text = rest.partition(" ")
        if word.startswith("#") and word[1:].isdigit():
            return self.sent.get(int(word[1:]), int(word[1:])), text.strip()
        if not self.sent:
            self.output(f"You have sent nothing yet in this session. Usage: {usage} (/history shows the ids).")
            return None
        return next(reversed(self.sent.values())), rest

    async def cmd_edit(self, rest: str) -> None:
        which = self._which(rest, "/edit [#ID] TEXT")
        if which is None:
            return
        message, text = which
        if not text:
            self.output("Usage: /edit [#ID] TEXT")
            return
        self.need_online()
        message_id = message.id if isinstance(message, Sent) else message
        reply = await self.request("edit", id=message_id, body=text)
        if reply["type"] != "ok":
            self.output(f"Not edited: {explain(reply)}")
            return
        if isinstance(message, Sent):
            message.body = text
        self.output(f"(edited #{message_id}: {text})")

    async def cmd_delete(self, rest: str) -> None:
        which = self._which(rest, "/delete [#ID]")
        if which is None:
            return
        message, _ = which
        self.need_online()
        message_id = message.id if isinstance(message, Sent) else message
        reply = await self.request("delete", id=message_id)
        if reply["type"] != "ok":
            self.output(f"Not deleted: {explain(reply)}")
            return
        self.sent.pop(message_id, None)
        about = f": {message.body}" if isinstance(message, Sent) else ""
        self.output(f"(deleted #{message_id}{about})")
        self.on_change()

    async def cmd_online(self, rest: str) -> None:
        self.need_online()
        reply = await self.request("online")
        users = reply.get("users", [])
        self.known.update(users)
        self.known.discard(self.username or "")
        self.output(f"Online now ({len(users)}): " + ", ".join(map(clean, users)))

    async def cmd_recent(self, rest: str) -> None:
        self.need_online()
        reply = await self.request("recent")
        users = reply.get("users", [])
        if not users:
            self.output("Nobody in the last hour.")
        for u in users:
            self.known.add(u["username"])
            state = "online" if u["online"] else f"last seen {clock(u['last_seen'])}"
            self.output(f"  {clean(u['username']):<20} {state}")
        self.known.discard(self.username or "")

    async def cmd_block(self, rest: str) -> None:
        name = self.need_name(rest, "/block USER")
        if name:
            self.need_online()
            reply = await self.request("block", username=name)
            self.output(f"You block {name} now." if reply["type"] == "ok" else explain(reply, name))

    async def cmd_unblock(self, rest: str) -> None:
        name = self.need_name(rest, "/unblock USER")
        if name:
            self.need_online()
            reply = await self.request("unblock", username=name)
            self.output(f"You no longer block {name}." if reply["type"] == "ok" else explain(reply, name))

    async def cmd_blocked(self, rest: str) -> None:
        self.need_online()
        users = (await self.request("blocked")).get("users", [])
        self.output("You block: " + ", ".join(map(clean, users)) if users else "You block nobody.")

    def _room_or_here(self, word: str | None) -> int | None:
        """A room named by `#NAME` (or #ID), else without a word the room
        one talks in; None for a user or everyone."""
        if word is not None:
            room = self.find_room(word) if word.startswith("#") else None
            return room["id"] if room is not None else None
        return room_id(self.target or "")

    async def cmd_history(self, rest: str) -> None:
        self.need_online()
        name = rest.split()[0] if rest.split() else None
        room = self._room_or_here(name)
        if room is not None:
            reply = await self.request("history", room=room, limit=20)
            title = f"in {self.room_label(room)}"
        else:
            reply = await self.request("history", **{"with": name, "limit": 20})
            title = f"with {name}" if name else "to everyone"
        if reply["type"] != "ok":
            self.output(explain(reply, name or ""))
            return
        self._list(reply["messages"], title)

    async def cmd_search(self, rest: str) -> None:
        words = rest.split()
        fields: dict[str, Any] = {}
        if words and words[0].startswith("@"):
            fields["with"] = words.pop(0)[1:]
        elif words and words[0].startswith("#") and self.find_room(words[0]) is not None:
            fields["room"] = self._room_or_here(words.pop(0))
        elif room_id(self.target or "") is not None:
            fields["room"] = room_id(self.target or "")  # in a room: its messages
        if not words:
            self.output("Usage: /search [@USER or #ROOM] WORDS")
            return
        self.need_online()
        query = " ".join(words)
        reply = await self.request("search", query=query, **fields)
        if reply["type"] != "ok":
            self.output(explain(reply, fields.get("with", "")))
            return
        title = f"with “{query}”" + (f" (with {fields['with']})" if "with" in fields else "")
        title += f" (in {self.room_label(fields['room'])})" if "room" in fields else ""
        self._list(list(reversed(reply["messages"])), title)

    def _list(self, messages: list[dict[str, Any]], title: str) -> None:
        if not messages:
            self.output(f"No messages {title}.")
            return
        self.output(f"--- {len(messages)} message(s) {title} ---")
        for m in messages:
            self.output(render_message(m, self.username, ids=True, base=self.http_base, rooms=self.room_names()))

    async def cmd_logout(self, rest: str) -> bool:
        self.need_online()
        self.closing = True  # the server closes the connection next
        try:
            await self.request("logout")
        except (ConnectionLost, TimeoutError):
            self.output("The connection dropped before the server could log you out.")
            return False
        self.output("Logged out.")
        return False

    async def cmd_quit(self, rest: str) -> bool:
        if self.outbox:
            self.output(f"{len(self.outbox)} message(s) could not be sent.")
        return False

    async def cmd_help(self, rest: str) -> None:
        self.output(HELP)

    # --- Completion ---------------------------------------------------------------------

    def completions(self, text: str) -> list[str]:
        """Candidates for the word being typed at the end of `text`."""
        words = text.split(" ")
        if len(words) == 1:
            return [c for c in COMMANDS if c.startswith(words[0].lower())]
        command = BY_NAME.get(words[0].lower())
        if command is None:
            return []
        if command.names and (len(words) == 2 if not command.many else len(words) > command.many):
            return sorted(n for n in self.known if n.startswith(words[-1]))
        if command.rooms and len(words) == 2:
            return sorted(r["name"] for r in self.rooms.values() if r["name"].lower().startswith(words[1].lower()))
        return []
