"""What the terminal client does, apart from the terminal: commands,
rendering of events, acks and read marks, dedupe, and keeping the
connection (reconnecting, resending what had no answer).

`output` receives each line to show; the terminal UI prints it above the
input line, tests collect it. `on_change` is called when what `prompt()`
or `status()` return may have changed.
"""

from __future__ import annotations

import asyncio
import random
import re
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .connection import CLOSE_LOGIN_DEADLINE, CLOSE_REPLACED, ConnectFailed, Connection, ConnectionLost, NotAChatServer

EVERYONE = "*"


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    method: str
    names: bool = False  # its argument is a user name (Tab completes it)
    offline: bool = False  # works without the server


# The one list of commands: /help, Tab completion and `execute` read it.
COMMAND_LIST = [
    Command("/msg", "USER [TEXT]", "private message to USER; plain text then goes to USER", "cmd_msg", names=True),
    Command("/reply", "[TEXT]", "answer whoever wrote to you privately last", "cmd_reply"),
    Command("/all", "[TEXT]", "message to everyone; plain text then goes to everyone", "cmd_all"),
    Command("/online", "", "who is online now", "cmd_online"),
    Command("/recent", "", "who was around in the last hour", "cmd_recent"),
    Command("/history", "[USER]", "recent messages with USER (without USER: to everyone)", "cmd_history", names=True),
    Command("/block", "USER", "stop USER's messages reaching you", "cmd_block", names=True),
    Command("/unblock", "USER", "let USER's messages reach you again", "cmd_unblock", names=True),
    Command("/blocked", "", "whom you block", "cmd_blocked"),
    Command("/logout", "", "log out (ends the session) and quit", "cmd_logout"),
    Command("/quit", "", "quit (Ctrl-D and Ctrl-C do too)", "cmd_quit", offline=True),
    Command("/exit", "", "the same as /quit", "cmd_quit", offline=True),
    Command("/help", "", "this list", "cmd_help", offline=True),
]
COMMANDS = [c.name for c in COMMAND_LIST]
BY_NAME = {c.name: c for c in COMMAND_LIST}

HELP = (
    "Commands:\n"
    + "\n".join(f"  {(c.name + ' ' + c.usage).strip():<20}{c.help}" for c in COMMAND_LIST)
    + "\nPlain text goes where the prompt says (to bob >). Tab completes commands and names."
)

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
}

# Django's default username rule (UnicodeUsernameValidator), checked before
# asking for a password; the server checks again.
USERNAME_RULE = re.compile(r"^[\w.@+-]+\Z")


def username_problem(name: str) -> str | None:
    """Why `name` cannot be a username, or None."""
    if not USERNAME_RULE.match(name) or len(name) > 150:
        return "A username is letters, digits and @ . + - _ only (at most 150), without spaces."
    return None


def explain(reply: dict[str, Any], name: str = "") -> str:
    """A short human sentence for an error reply."""
    template = ERRORS.get(reply.get("code"))
    if template is None:
        return reply.get("message") or f"The server said {reply.get('code')}."
    return template.format(name=name, retry_after=reply.get("retry_after", "a few"))


def clock(iso: str) -> str:
    when = datetime.fromisoformat(iso).astimezone()
    now = datetime.now().astimezone()
    return when.strftime("%H:%M") if when.date() == now.date() else when.strftime("%b %d %H:%M")


def render_message(m: dict[str, Any], me: str | None = None) -> str:
    mark = " (waited while you were offline)" if m.get("stored") else ""
    who = "you" if m["from"] == me else m["from"]
    if m["kind"] == "broadcast":
        return f"[{clock(m['sent_at'])}] {who} → everyone: {m['body']}{mark}"
    if m["from"] == me:
        return f"[{clock(m['sent_at'])}] you → {m['to']}: {m['body']}"
    return f"[{clock(m['sent_at'])}] {who}: {m['body']}{mark}"


class Ended(Exception):
    """The session is over; `code` is the process exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class Outgoing:
    """A message the person sent that has no `ok` yet: it is sent again,
    with the same client_id, after a reconnect."""

    to: str  # a username or EVERYONE
    body: str
    client_id: str
    queued: bool = False  # typed while offline


class ChatClient:
    def __init__(
        self,
        url: str,
        output: Callable[[str], None],
        *,
        on_change: Callable[[], None] | None = None,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        timeout: float = 15.0,
    ):
        self.url = url
        self.output = output
        self.on_change = on_change or (lambda: None)
        self.first_delay, self.max_delay = first_delay, max_delay
        self.timeout = timeout  # for a reply; past it the connection counts as lost
        self.conn: Connection | None = None
        self.username: str | None = None
        self.credentials: dict[str, Any] | None = None  # what logs in again after a drop
        self.seen: set[int] = set()  # ids shown, so a re-push is not shown twice
        self.target: str | None = None  # where plain text goes: a username or EVERYONE
        self.last_writer: str | None = None  # who wrote privately last (/reply)
        self.known: set[str] = set()  # names for tab completion
        self.outbox: dict[str, Outgoing] = {}  # sent or typed, no ok yet; in order
        self.ended: Ended | None = None  # why this session is over, once it is
        self.finished = asyncio.Event()  # set with `ended`
        self.online = False  # logged in over a live connection, nothing left to resend
        self.link = ""  # what the status line says about the connection
        self.held: list[dict[str, Any]] | None = None  # events kept back while a login is answered
        self.marks: tuple[list[int], dict[str, int]] = ([], {})  # acks and read marks to send
        self.marks_task: asyncio.Task[None] | None = None
        self.keeper: asyncio.Task[None] | None = None
        self.wanted = asyncio.Event()  # a connection is needed (after the login deadline)
        self.up = asyncio.Event()  # a connection is open
        self.closing = False

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
            if self.ended is None and self.username is None:
                if conn.close_code == CLOSE_LOGIN_DEADLINE:
                    # Anonymous connections are closed after a while: open
                    # the next one when it is needed.
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
                wait = delay * random.uniform(0.75, 1.0)
                self._link(f"No connection: next try in {wait:.0f} s")
                self.output(
                    f"Still no connection ({tries} {'try' if tries == 1 else 'tries'}); next try in {wait:.0f} s."
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.max_delay)
            tries += 1
            self._link("Reconnecting…")
            try:
                await self._open()
                if self.username is not None:
                    await self._log_in_again()
            except (ConnectFailed, NotAChatServer, ConnectionLost, TimeoutError):
                continue
            except Ended as ended:
                self.ended = ended
                return
            if self.username is None and lost and tries > 1:
                self.output("Connected again.")
            return

    def _link(self, text: str) -> None:
        self.link = text
        self.on_change()

    async def _log_in_again(self) -> None:
        """Log in over a new connection, then send what had no answer."""
        assert self.conn is not None and self.credentials is not None
        self.held = []
        try:
            reply = await self.conn.request("login", **self.credentials, takeover=True)
        finally:
            held, self.held = self.held, None
        if reply["type"] != "ok":
            if reply.get("code") in ("invalid_credentials", "locked"):
                raise Ended(f"Could not log in again: {explain(reply)}", 4)
            raise ConnectionLost()  # the server is not ready: try again
        self._logged_in(reply, "Reconnected as")
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
        while True:
            while self.conn is None or self.conn.closed.is_set():
                self.wanted.set()
                self.up.clear()
                await self.up.wait()
            conn = self.conn
            try:
                return await conn.request(type, **fields)
            except ConnectionLost:
                continue
            except TimeoutError:
                # The server kept the connection but no longer answers it
                # (it has been anonymous too long): use a new one.
                await conn.close()

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
        """Log in; the error reply, or None when logged in."""
        # What waited is pushed right after the reply: show it after saying so.
        self.held = []
        try:
            reply = await self._anonymous("login", username=username, password=password, takeover=takeover)
        finally:
            held, self.held = self.held, None
        if reply["type"] != "ok":
            return reply
        # Kept in memory only, to log in again after a drop.
        self.credentials = {"username": username, "password": password}
        self._logged_in(reply, f"Account {reply['username']} created. Logged in as" if created else "Logged in as")
        self.online = True
        self.on_change()
        for frame in held:
            await self.on_event(frame)
        await self.refresh_names()
        return None

    def _logged_in(self, reply: dict[str, Any], lead: str) -> None:
        self.username = reply["username"]
        waiting = reply.get("pending", 0)
        self.output(
            f"{lead} {self.username}."
            + (f" {waiting} message(s) waited for you." if waiting else "")
            + (" Type /help for commands." if lead != "Reconnected as" else "")
        )

    async def refresh_names(self) -> None:
        try:
            online = await self.request("online")
            recent = await self.request("recent")
        except (ConnectionLost, TimeoutError):
            return
        self.known.update(online.get("users", []))
        self.known.update(u["username"] for u in recent.get("users", []))
        self.known.discard(self.username)

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

    # --- Events -----------------------------------------------------------------------

    async def on_event(self, frame: dict[str, Any]) -> None:
        if self.held is not None:
            self.held.append(frame)
            return
        kind = frame.get("type")
        if kind == "message":
            self._mark(frame)
            if frame["id"] in self.seen:
                return
            self.seen.add(frame["id"])
            sender = frame["from"]
            if sender != self.username:
                self.known.add(sender)
                if frame["kind"] == "private":
                    self.last_writer = sender
                    if self.target is None:
                        self.target = sender
                        self.on_change()
            self.output(render_message(frame, self.username))
        elif kind == "presence":
            if frame["username"] != self.username:
                self.known.add(frame["username"])
                self.output(f"* {frame['username']} is {'online' if frame['online'] else 'offline'}")
        elif kind == "session_replaced":
            self.ended = Ended("You logged in somewhere else, so this client stops.", 5)
        elif kind == "session_ended":
            reason = frame.get("reason") or ""
            if "reconnect" not in reason.lower():
                self.ended = Ended(f"The server ended your session: {reason}", 6)
        elif kind == "error" and "ref" not in frame:
            self.output(explain(frame))

    def _mark(self, message: dict[str, Any]) -> None:
        """Ack what arrived; mark as read what the person now sees."""
        acks, reads = self.marks
        acks.append(message["id"])
        if message["kind"] == "private" and message["from"] != self.username:
            reads[message["from"]] = max(reads.get(message["from"], 0), message["id"])
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
            await self.conn.notify("read", **{"with": peer, "up_to": up_to})

    # --- Commands -----------------------------------------------------------------------

    def prompt(self) -> str:
        if self.target is None:
            return "> "
        return "to everyone > " if self.target == EVERYONE else f"to {self.target} > "

    def status(self) -> str:
        """The status line below the input."""
        if self.ended is not None:
            return "Disconnected"
        if self.link:
            return self.link
        if self.username is None:
            return f"Connected to {self.url}" if self.up.is_set() else "Not connected"
        return f"{self.username} · connected"

    async def execute(self, line: str) -> bool:
        """Run one line the user typed. Returns False when the user is done."""
        line = line.strip()
        if not line:
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

    async def say(self, target: str, text: str) -> None:
        """Send, or keep to send once the connection is back."""
        item = Outgoing(target, text, uuid.uuid4().hex, queued=not self.online)
        self.outbox[item.client_id] = item
        if item.queued:
            self.output("(not connected: it goes when the connection is back)")
            return
        try:
            await self._send(item)
        except (ConnectionLost, TimeoutError):
            self.output("(the connection dropped: it is sent again when the connection is back)")

    async def _send(self, item: Outgoing, *, again: bool = False) -> None:
        """Send one message of the outbox; ConnectionLost leaves it there."""
        fields = {"body": item.body, "client_id": item.client_id}
        if item.to == EVERYONE:
            reply = await self.request("broadcast", **fields)
        else:
            reply = await self.request("send", to=item.to, **fields)
        if reply["type"] != "ok" and reply.get("code") == "rate_limited" and again:
            await asyncio.sleep(float(reply.get("retry_after") or 1))
            return  # still first in the outbox: tried again
        self.outbox.pop(item.client_id, None)
        if reply["type"] != "ok":
            self.output(f"Not sent{f' ({item.body!r})' if again else ''}: {explain(reply, item.to)}")
            return
        self.seen.add(reply["id"])
        if again or item.queued:
            self.output(f"(sent to {'everyone' if item.to == EVERYONE else item.to}: {item.body})")
        if item.to == EVERYONE:
            self.output(f"(to everyone: {reply['live']} online now, {reply['stored']} later)")
        elif reply["delivered"] == "stored":
            self.output(f"({item.to} is offline; they will get it when they log in)")

    def _aim(self, target: str) -> None:
        if target != EVERYONE:
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

    async def cmd_reply(self, rest: str) -> None:
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

    async def cmd_online(self, rest: str) -> None:
        self.need_online()
        reply = await self.request("online")
        users = reply.get("users", [])
        self.known.update(users)
        self.known.discard(self.username)
        self.output(f"Online now ({len(users)}): " + ", ".join(users))

    async def cmd_recent(self, rest: str) -> None:
        self.need_online()
        reply = await self.request("recent")
        users = reply.get("users", [])
        if not users:
            self.output("Nobody in the last hour.")
        for u in users:
            self.known.add(u["username"])
            state = "online" if u["online"] else f"last seen {clock(u['last_seen'])}"
            self.output(f"  {u['username']:<20} {state}")
        self.known.discard(self.username)

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
        self.output("You block: " + ", ".join(users) if users else "You block nobody.")

    async def cmd_history(self, rest: str) -> None:
        self.need_online()
        name = rest.split()[0] if rest.split() else None
        reply = await self.request("history", **{"with": name, "limit": 20})
        if reply["type"] != "ok":
            self.output(explain(reply, name or ""))
            return
        title = f"with {name}" if name else "to everyone"
        if not reply["messages"]:
            self.output(f"No messages {title} yet.")
        else:
            self.output(f"--- last {len(reply['messages'])} message(s) {title} ---")
            for m in reply["messages"]:
                self.output(render_message(m, self.username))

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
        if len(words) == 2 and command is not None and command.names:
            return sorted(n for n in self.known if n.startswith(words[1]))
        return []
