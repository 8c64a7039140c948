"""What the terminal client does, apart from the terminal: commands,
rendering of events, acks, dedupe and reconnecting.

`output` receives each line to show; the terminal UI prints it above the
input line, tests collect it.
"""

import asyncio
import shlex
from datetime import datetime

from .connection import Connection, ConnectionLost

EVERYONE = "*"

HELP = """Commands:
  /msg USER TEXT      private message to USER (then plain text goes to USER)
  /all TEXT           message to everyone (then plain text goes to everyone)
  /online             who is online now
  /recent             who was around in the last hour
  /block USER         stop USER's messages reaching you
  /unblock USER       let USER's messages reach you again
  /blocked            whom you block
  /history [USER]     recent messages with USER (without USER: to everyone)
  /logout             log out and quit
  /quit               quit (Ctrl-D does too)
  /help               this list
Plain text goes to the last conversation. Tab completes commands and names."""

COMMANDS = ["/msg", "/all", "/online", "/recent", "/block", "/unblock", "/blocked", "/history", "/logout", "/quit", "/help"]
NAME_COMMANDS = {"/msg", "/block", "/unblock", "/history"}

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


def explain(reply, name=""):
    """A short human sentence for an error reply."""
    template = ERRORS.get(reply.get("code"))
    if template is None:
        return reply.get("message") or f"The server said {reply.get('code')}."
    return template.format(name=name, retry_after=reply.get("retry_after", "a few"))


def clock(iso):
    when = datetime.fromisoformat(iso).astimezone()
    now = datetime.now().astimezone()
    return when.strftime("%H:%M") if when.date() == now.date() else when.strftime("%b %d %H:%M")


def render_message(m, me=None):
    mark = " (waited while you were offline)" if m.get("stored") else ""
    who = "you" if m["from"] == me else m["from"]
    if m["kind"] == "broadcast":
        return f"[{clock(m['sent_at'])}] {who} → everyone: {m['body']}{mark}"
    if m["from"] == me:
        return f"[{clock(m['sent_at'])}] you → {m['to']}: {m['body']}"
    return f"[{clock(m['sent_at'])}] {who}: {m['body']}{mark}"


class Ended(Exception):
    """The session is over; `code` is the process exit code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.message = message
        self.code = code


class ChatClient:
    def __init__(self, url, output):
        self.url = url
        self.output = output
        self.conn = None
        self.username = None
        self.password = None
        self.seen = set()  # ids shown, so a re-push is not shown twice
        self.target = None  # where plain text goes: a username or EVERYONE
        self.known = set()  # names for tab completion
        self.ended = None  # why the server ended this session, if it did
        self.held = None  # events kept back while a login is answered

    # --- Connection -------------------------------------------------------------

    async def connect(self):
        self.conn = Connection(self.url, self.on_event)
        await self.conn.open()

    async def reconnect(self, attempts=8, first_delay=1.0):
        """After a drop: connect again with backoff and log in again."""
        delay = first_delay
        for attempt in range(1, attempts + 1):
            lead = "Connection lost." if attempt == 1 else "Still no connection."
            self.output(f"{lead} Reconnecting in {delay:.0f} s (attempt {attempt} of {attempts})…")
            await asyncio.sleep(delay)
            try:
                await self.connect()
                reply = await self.conn.request("login", username=self.username, password=self.password, takeover=True)
            except Exception:
                delay = min(delay * 2, 30)
                continue
            if reply["type"] == "ok":
                self.output(f"Reconnected as {reply['username']}.")
                return True
            raise Ended(explain(reply), 4)
        raise Ended("Lost the connection to the server and could not get it back.", 4)

    async def close(self):
        if self.conn is not None:
            await self.conn.close()

    # --- Account --------------------------------------------------------------------

    async def signup(self, username, password):
        reply = await self.conn.request("signup", username=username, password=password)
        if reply["type"] == "ok":
            self.output(f"Account {reply['username']} created. Now log in.")
            return True
        self.output(explain(reply))
        return False

    async def login(self, username, password, takeover=False):
        """Log in; returns the error reply (or None when logged in)."""
        # What waited is pushed right after the reply: show it after saying so.
        self.held = []
        try:
            reply = await self.conn.request("login", username=username, password=password, takeover=takeover)
        finally:
            held, self.held = self.held, None
        if reply["type"] != "ok":
            return reply
        self.username, self.password = reply["username"], password
        waiting = reply["pending"]
        self.output(
            f"Logged in as {self.username}."
            + (f" {waiting} message(s) waited for you." if waiting else "")
            + " Type /help for commands."
        )
        for frame in held:
            await self.on_event(frame)
        await self.refresh_names()
        return None

    async def refresh_names(self):
        try:
            online = await self.conn.request("online")
            recent = await self.conn.request("recent")
        except ConnectionLost:
            return
        self.known.update(online.get("users", []))
        self.known.update(u["username"] for u in recent.get("users", []))
        self.known.discard(self.username)

    # --- Events -----------------------------------------------------------------------

    async def on_event(self, frame):
        if self.held is not None:
            self.held.append(frame)
            return
        kind = frame.get("type")
        if kind == "message":
            await self.conn.send("ack", ids=[frame["id"]])
            if frame["id"] in self.seen:
                return
            self.seen.add(frame["id"])
            if frame["from"] != self.username:
                self.known.add(frame["from"])
            self.output(render_message(frame, self.username))
        elif kind == "presence":
            if frame["username"] != self.username:
                self.known.add(frame["username"])
                self.output(f"* {frame['username']} is {'online' if frame['online'] else 'offline'}")
        elif kind == "session_replaced":
            self.ended = Ended("You logged in somewhere else, so this client stops.", 5)
        elif kind == "session_ended":
            self.ended = Ended(f"The server ended your session: {frame.get('reason', '')}", 6)
        elif kind == "error":
            self.output(explain(frame))

    # --- Commands -----------------------------------------------------------------------

    async def execute(self, line):
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
        command, _, rest = line.partition(" ")
        rest = rest.strip()
        handler = {
            "/msg": self.cmd_msg, "/all": self.cmd_all, "/online": self.cmd_online, "/recent": self.cmd_recent,
            "/block": self.cmd_block, "/unblock": self.cmd_unblock, "/blocked": self.cmd_blocked,
            "/history": self.cmd_history, "/logout": self.cmd_logout, "/quit": self.cmd_quit,
            "/exit": self.cmd_quit, "/help": self.cmd_help,
        }.get(command.lower())
        if handler is None:
            self.output(f"Unknown command {command}. Type /help for the list.")
            return True
        return await handler(rest) is not False

    def need_name(self, rest, usage):
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        if not words:
            self.output(f"Usage: {usage}")
            return None
        return words[0]

    async def say(self, target, text):
        if target == EVERYONE:
            reply = await self.conn.request("broadcast", body=text)
            if reply["type"] == "ok":
                self.seen.add(reply["id"])
                self.output(f"(to everyone: {reply['live']} online now, {reply['stored']} later)")
        else:
            reply = await self.conn.request("send", to=target, body=text)
            if reply["type"] == "ok":
                self.seen.add(reply["id"])
                if reply["delivered"] == "stored":
                    self.output(f"({target} is offline; they will get it when they log in)")
        if reply["type"] != "ok":
            self.output(f"Not sent: {explain(reply, target)}")

    async def cmd_msg(self, rest):
        name, _, text = rest.partition(" ")
        if not name or not text.strip():
            self.output("Usage: /msg USER TEXT")
            return
        self.target = name
        self.known.add(name)
        await self.say(name, text)

    async def cmd_all(self, rest):
        if not rest:
            self.output("Usage: /all TEXT")
            return
        self.target = EVERYONE
        await self.say(EVERYONE, rest)

    async def cmd_online(self, rest):
        reply = await self.conn.request("online")
        users = reply.get("users", [])
        self.known.update(users)
        self.known.discard(self.username)
        self.output(f"Online now ({len(users)}): " + ", ".join(users))

    async def cmd_recent(self, rest):
        reply = await self.conn.request("recent")
        users = reply.get("users", [])
        if not users:
            self.output("Nobody in the last hour.")
        for u in users:
            self.known.add(u["username"])
            state = "online" if u["online"] else f"last seen {clock(u['last_seen'])}"
            self.output(f"  {u['username']:<20} {state}")
        self.known.discard(self.username)

    async def cmd_block(self, rest):
        name = self.need_name(rest, "/block USER")
        if name:
            reply = await self.conn.request("block", username=name)
            self.output(f"You block {name} now." if reply["type"] == "ok" else explain(reply, name))

    async def cmd_unblock(self, rest):
        name = self.need_name(rest, "/unblock USER")
        if name:
            reply = await self.conn.request("unblock", username=name)
            self.output(f"You no longer block {name}." if reply["type"] == "ok" else explain(reply, name))

    async def cmd_blocked(self, rest):
        users = (await self.conn.request("blocked")).get("users", [])
        self.output("You block: " + ", ".join(users) if users else "You block nobody.")

    async def cmd_history(self, rest):
        name = rest.split()[0] if rest.split() else None
        reply = await self.conn.request("history", **{"with": name, "limit": 20})
        if reply["type"] != "ok":
            self.output(explain(reply, name or ""))
            return
        self.target = name or EVERYONE
        title = f"with {name}" if name else "to everyone"
        if not reply["messages"]:
            self.output(f"No messages {title} yet.")
        else:
            self.output(f"--- last {len(reply['messages'])} message(s) {title} ---")
            for m in reply["messages"]:
                self.output(render_message(m, self.username))

    async def cmd_logout(self, rest):
        try:
            await self.conn.request("logout")
        except ConnectionLost:
            pass
        self.output("Logged out. Bye!")
        return False

    async def cmd_quit(self, rest):
        self.output("Bye!")
        return False

    async def cmd_help(self, rest):
        self.output(HELP)

    # --- Completion ---------------------------------------------------------------------

    def completions(self, text):
        """Candidates for the word being typed at the end of `text`."""
        words = text.split(" ")
        if len(words) == 1:
            return [c for c in COMMANDS if c.startswith(words[0].lower())]
        if len(words) == 2 and words[0].lower() in NAME_COMMANDS:
            return sorted(n for n in self.known if n.startswith(words[1]))
        return []
