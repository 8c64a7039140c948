"""The terminal client's slash commands: each parses its words, asks the
server through the session, and says the answer.

Adding a command is writing one function here with ``@command(...)``:
the dispatcher (`run`), /help and Tab completion read the registry, and
/help lists the commands in the order of this file. A command that gets
the wrong words raises `Usage`, and `run` answers with its usage line; one
that needs the server and finds it gone raises ConnectionLost (as
`need_online` does), and `run` says so. What a command may use of the
session is `Client` below (chatclient.client.ChatClient is the real one).
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .connection import ConnectionLost
from .targets import EVERYONE, message_id, room_id, room_key
from .text import clean, clock, explain, file_size, names, render_message
from .upload import PROGRESS_FROM, UploadFailed, upload

if TYPE_CHECKING:
    from .client import Outgoing, Sent


class Client(Protocol):
    """What commands may use of the session."""

    output: Callable[[str], None]  # shows a line
    on_change: Callable[[], None]  # the prompt or the status line may have changed
    username: str | None
    token: str | None  # the resume token (uploads carry it)
    http_base: str  # where files are uploaded and downloaded
    online: bool  # logged in over a live connection
    closing: bool  # set before a request after which the server closes
    target: str | None  # where plain text goes (chatclient.targets)
    last_writer: str | None  # who wrote privately last
    rooms: dict[int, dict[str, Any]]  # room objects by id
    known: set[str]  # names Tab completes
    sent: dict[int, Sent]  # one's own messages of this session, oldest first
    outbox: dict[str, Outgoing]  # messages with no `ok` yet

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        """The server's reply (ConnectionLost or TimeoutError without one)."""

    async def say(
        self, target: str, text: str, attachments: tuple[int, ...] = (), *, reply_to: int | None = None
    ) -> None:
        """Send a message, or keep it until the connection is back."""

    def aim(self, target: str) -> None:
        """Plain text goes to `target` from now on."""

    async def load_rooms(self) -> list[dict[str, Any]]:
        """One's rooms, asked again of the server (and kept in `rooms`)."""

    def room_label(self, room: int | None) -> str:
        """A room in words: #team."""

    def room_names(self) -> dict[int, str]: ...

    def conversation_of(self, message: int) -> str | None:
        """The target a shown or sent message belongs to (None: unknown)."""


# What a command does with the rest of its line. False: the person is done
# (the client quits); None (or True): go on.
Handler = Callable[[Client, str], Awaitable[bool | None]]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    handler: Handler
    names: bool = False  # its argument is a user name (Tab completes it)
    rooms: bool = False  # its argument is a room name (Tab completes it)
    many: int = 0  # with `names`: user names from this word on (0: only the first)


BY_NAME: dict[str, Command] = {}


def command(
    name: str, usage: str, help: str, *, names: bool = False, rooms: bool = False, many: int = 0
) -> Callable[[Handler], Handler]:
    """Register `handler` as the command `name` ("/msg")."""

    def register(handler: Handler) -> Handler:
        assert name not in BY_NAME, f"command {name!r} registered twice"
        BY_NAME[name] = Command(name, usage, help, handler, names=names, rooms=rooms, many=many)
        return handler

    return register


class Usage(Exception):
    """The command's words are wrong: `run` shows its usage line, with
    `hint` after it in brackets and `before` ahead of it."""

    def __init__(self, hint: str = "", *, before: str = ""):
        super().__init__(hint)
        self.hint = hint
        self.before = before

    def line(self, command: Command) -> str:
        line = f"Usage: {command.name} {command.usage}".rstrip()
        line += f" ({self.hint})" if self.hint else ""
        return f"{self.before} {line}" if self.before else line


async def run(client: Client, line: str) -> bool:
    """Run a line that starts with "/". False when the person is done."""
    name, _, rest = line.partition(" ")
    command = BY_NAME.get(name.lower())
    if command is None:
        client.output(f"Unknown command {name}. Type /help for the list.")
        return True
    try:
        return await command.handler(client, rest.strip()) is not False
    except Usage as usage:
        client.output(usage.line(command))
    except (ConnectionLost, TimeoutError):
        client.output("Not connected to the server just now: try again once it is back.")
    return True


def completions(client: Client, text: str) -> list[str]:
    """Candidates for the word being typed at the end of `text`."""
    words = text.split(" ")
    if len(words) == 1:
        return [c for c in BY_NAME if c.startswith(words[0].lower())]
    command = BY_NAME.get(words[0].lower())
    if command is None:
        return []
    if command.names and (len(words) == 2 if not command.many else len(words) > command.many):
        return sorted(n for n in client.known if n.startswith(words[-1]))
    if command.rooms and len(words) == 2:
        return sorted(r["name"] for r in client.rooms.values() if r["name"].lower().startswith(words[1].lower()))
    return []


def typing_target(client: Client, text: str) -> str | None:
    """Whom the line being typed is for, to tell them that one types: the
    conversation of plain text, or of /msg and /reply with some text."""
    if text.startswith("/"):
        name, _, rest = text.partition(" ")
        if name == "/msg":
            user, space, body = rest.partition(" ")
            return user if space and body.strip() and user != client.username else None
        if name == "/reply" and rest.startswith("#"):
            word, _, body = rest.partition(" ")
            replied = message_id(word)
            return client.conversation_of(replied) if replied is not None and body.strip() else None
        if name == "/reply" and rest.strip():
            return client.last_writer
        return None
    if text.strip() and client.target not in (None, EVERYONE):
        return client.target
    return None


# --- What commands share ---------------------------------------------------------------


def need_online(client: Client) -> None:
    if not client.online:
        raise ConnectionLost()


def words_of(rest: str) -> list[str]:
    """The words, quotes grouping ("team lunch"); split at spaces when a
    quote is left open."""
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def need_name(rest: str) -> str:
    """The first word, a user name."""
    words = words_of(rest)
    if not words:
        raise Usage()
    return words[0]


def here(client: Client) -> int:
    """The room plain text goes to."""
    room = room_id(client.target or "")
    if room is None:
        raise Usage(before="Go to a room first (/room NAME, /rooms lists them).")
    return room


def find_room(client: Client, wanted: str) -> dict[str, Any] | None:
    """A room by its name (any case, with or without "#"), else by id."""
    for name in (wanted, wanted.removeprefix("#")):
        for r in client.rooms.values():
            if r["name"].lower() == name.lower():
                return r
    number = message_id(wanted)
    return client.rooms.get(number) if number is not None else None


def room_or_here(client: Client, word: str | None) -> int | None:
    """A room named by `#NAME` (or #ID), else without a word the room one
    talks in; None for a user or everyone."""
    if word is not None:
        room = find_room(client, word) if word.startswith("#") else None
        return room["id"] if room is not None else None
    return room_id(client.target or "")


async def room_request(client: Client, type: str, doing: str, **fields: Any) -> dict[str, Any] | None:
    """A room op: the ok reply, or None after saying why not."""
    need_online(client)
    reply = await client.request(type, **fields)
    if reply["type"] == "ok":
        return reply
    name = fields.get("username") or ", ".join(fields.get("usernames") or fields.get("members") or ())
    client.output(f"Not {doing}: {explain(reply, name)}")
    return None


def which_message(client: Client, rest: str) -> tuple[int, Sent | None, str]:
    """The message `/edit` or `/delete` is about (#ID, or one's last), it
    if it was sent in this session, and the words after it."""
    word, _, text = rest.partition(" ")
    if word.startswith("#") and word[1:].isdigit():
        number = int(word[1:])
        return number, client.sent.get(number), text.strip()
    if not client.sent:
        raise Usage("/history shows the ids", before="You have sent nothing yet in this session.")
    last = next(reversed(client.sent.values()))
    return last.id, last, rest


def show_list(client: Client, messages: list[dict[str, Any]], title: str) -> None:
    if not messages:
        client.output(f"No messages {title}.")
        return
    client.output(f"--- {len(messages)} message(s) {title} ---")
    for m in messages:
        client.output(render_message(m, client.username, ids=True, base=client.http_base, rooms=client.room_names()))


# --- Messages ------------------------------------------------------------------------------


@command("/msg", "USER [TEXT]", "private message to USER; plain text then goes to USER", names=True)
async def msg(client: Client, rest: str) -> None:
    name, _, text = rest.partition(" ")
    if not name:
        raise Usage()
    if name == client.username:
        client.output("That is you.")
        return
    client.aim(name)
    if text.strip():
        await client.say(name, text.strip())
    else:
        client.output(f"Plain text now goes to {name}.")


@command("/reply", "[#ID] TEXT", "answer message #ID (else whoever wrote privately last)")
async def reply(client: Client, rest: str) -> None:
    """/reply #ID TEXT answers message #ID, in its conversation (the
    current one if the client has not seen that message); /reply TEXT is
    /msg to whoever wrote privately last."""
    word, _, text = rest.partition(" ")
    if not word.startswith("#"):
        if client.last_writer is None:
            client.output("Nobody has written to you privately yet.")
            return
        await msg(client, f"{client.last_writer} {rest}")
        return
    replied, text = message_id(word), text.strip()
    if replied is None or not text:
        raise Usage("/history shows the ids")
    target = client.conversation_of(replied) or client.target
    if target is None:
        client.output("Which conversation is that in? Go there first (/msg USER, /room NAME).")
        return
    await client.say(target, text, reply_to=replied)


@command("/all", "[TEXT]", "message to everyone; plain text then goes to everyone")
async def to_everyone(client: Client, rest: str) -> None:
    client.aim(EVERYONE)
    if rest:
        await client.say(EVERYONE, rest)
    else:
        client.output("Plain text now goes to everyone.")


# --- Rooms ---------------------------------------------------------------------------------


@command("/rooms", "", "your rooms, with unread counts")
async def rooms(client: Client, rest: str) -> None:
    need_online(client)
    listed = await client.load_rooms()
    if not listed:
        client.output("You are in no room. /create NAME [USER...] makes one.")
        return
    client.output(f"--- {len(listed)} room(s) ---")
    for r in listed:
        notes = [f"{r['member_count']} member{'s' if r['member_count'] != 1 else ''}"]
        if r["unread"]:
            notes.append(f"{r['unread']} unread")
        if r["admin"]:
            notes.append("admin")
        last = f": last {clock(r['last']['sent_at'])}" if r.get("last") else ""
        label = "#" + clean(r["name"])
        client.output(f"  {label:<24} ({', '.join(notes)}, id {r['id']}){last}")


@command("/room", "NAME-OR-ID", "talk in a room: plain text then goes there", rooms=True)
async def room(client: Client, rest: str) -> None:
    if not rest:
        raise Usage("/rooms lists them")
    found = find_room(client, rest)
    if found is None:
        need_online(client)
        await client.load_rooms()  # one made or joined elsewhere
        found = find_room(client, rest)
    if found is None:
        client.output(f"You are in no room called {clean(rest)}. /rooms lists yours.")
        return
    client.aim(room_key(found["id"]))
    unread = f" ({found['unread']} unread: /history shows them)" if found.get("unread") else ""
    client.output(f"Plain text now goes to #{clean(found['name'])}.{unread}")


@command("/create", "NAME [USER...]", "a new room with these members; you are its admin", names=True, many=2)
async def create(client: Client, rest: str) -> None:
    words = words_of(rest)
    if not words:
        raise Usage('quote a name with spaces: /create "team lunch" bob')
    name, members = words[0], words[1:]
    reply = await room_request(client, "room_create", "created", name=name, members=members)
    if reply is None:
        return
    made = reply["room"]
    client.rooms[made["id"]] = made
    client.aim(room_key(made["id"]))
    refused = f" Not added (they block you): {names(reply['refused'], most=None)}." if reply.get("refused") else ""
    client.output(f"Created #{clean(made['name'])} with {made['member_count']} member(s).{refused}")


@command("/invite", "USER...", "add users to this room (admins)", names=True, many=1)
async def invite(client: Client, rest: str) -> None:
    room = here(client)
    users = rest.split()
    if not users:
        raise Usage()
    reply = await room_request(client, "room_add", "added", room=room, usernames=users)
    if reply is not None and not reply["added"]:
        client.output("Nobody added: " + ("they block you." if reply["refused"] else "they are members already."))
    elif reply is not None and reply["refused"]:
        client.output(f"Not added (they block you): {names(reply['refused'], most=None)}.")


@command("/kick", "USER", "remove USER from this room (admins)", names=True)
async def kick(client: Client, rest: str) -> None:
    room = here(client)
    await room_request(client, "room_remove", "removed", room=room, username=need_name(rest))


@command("/leave", "", "leave this room")
async def leave(client: Client, rest: str) -> None:
    room = here(client)
    if await room_request(client, "room_leave", "left", room=room) is None:
        return
    client.output(f"You left {client.room_label(room)}.")
    client.rooms.pop(room, None)
    if client.target == room_key(room):
        client.target = None
        client.on_change()


@command("/members", "", "who is in this room")
async def members(client: Client, rest: str) -> None:
    room = here(client)
    reply = await room_request(client, "room_members", "listed", room=room)
    if reply is None:
        return
    listed = reply["members"]
    client.known.update(m["username"] for m in listed)
    client.known.discard(client.username or "")
    shown = [
        clean(m["username"]) + (" (admin)" if m["admin"] else "") + (" (online)" if m["online"] else "") for m in listed
    ]
    client.output(f"Members of {client.room_label(room)} ({len(listed)}): " + ", ".join(shown))


@command("/rename", "NAME", "rename this room (admins)")
async def rename(client: Client, rest: str) -> None:
    room = here(client)
    if not rest:
        raise Usage()
    await room_request(client, "room_rename", "renamed", room=room, name=rest)


async def set_reaction(client: Client, rest: str, *, on: bool) -> None:
    word, _, emoji = rest.partition(" ")
    message = message_id(word)
    if message is None or not emoji.strip():
        raise Usage("/history shows the ids")
    if await room_request(client, "react", "done", id=message, emoji=emoji.strip(), on=on) is not None:
        client.on_change()


@command("/react", "#ID EMOJI", "react to message #ID")
async def react(client: Client, rest: str) -> None:
    await set_reaction(client, rest, on=True)


@command("/unreact", "#ID EMOJI", "take your reaction back")
async def unreact(client: Client, rest: str) -> None:
    await set_reaction(client, rest, on=False)


# --- Files, edits, deletions --------------------------------------------------------------


@command("/send-file", "PATH [TEXT]", "upload a file and send it where plain text goes")
async def send_file(client: Client, rest: str) -> None:
    """Upload over HTTP with the resume token, then send the id where
    plain text goes. A path with spaces is quoted ("my file.pdf")."""
    try:
        words = shlex.split(rest)
    except ValueError:
        words = []
    if not words:
        raise Usage()
    if client.target is None:
        client.output("Choose where it goes first: /msg USER, /room NAME or /all.")
        return
    if not client.online or client.token is None:
        client.output("Not connected: send the file when the connection is back.")
        return
    path, text, target = words[0], " ".join(words[1:]), client.target
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
            loop.call_soon_threadsafe(client.output, line)

    try:
        attachment = await asyncio.to_thread(upload, client.http_base, client.token, path, progress=progress)
    except UploadFailed as e:
        client.output(f"Not sent: {clean(str(e))}")
        return
    await client.say(target, text, (attachment["id"],))


@command("/edit", "[#ID] TEXT", "change your last message (or message #ID)")
async def edit(client: Client, rest: str) -> None:
    number, sent, text = which_message(client, rest)
    if not text:
        raise Usage()
    need_online(client)
    reply = await client.request("edit", id=number, body=text)
    if reply["type"] != "ok":
        client.output(f"Not edited: {explain(reply)}")
        return
    if sent is not None:
        sent.body = text
    client.output(f"(edited #{number}: {text})")


@command("/delete", "[#ID]", "delete your last message (or message #ID)")
async def delete(client: Client, rest: str) -> None:
    number, sent, _ = which_message(client, rest)
    need_online(client)
    reply = await client.request("delete", id=number)
    if reply["type"] != "ok":
        client.output(f"Not deleted: {explain(reply)}")
        return
    client.sent.pop(number, None)
    about = f": {sent.body}" if sent is not None else ""
    client.output(f"(deleted #{number}{about})")
    client.on_change()


# --- Reading back ------------------------------------------------------------------------


@command("/history", "[USER|#ROOM]", "recent messages (default: this room, or to everyone)", names=True)
async def history(client: Client, rest: str) -> None:
    need_online(client)
    name = rest.split()[0] if rest.split() else None
    room = room_or_here(client, name)
    if room is not None:
        reply = await client.request("history", room=room, limit=20)
        title = f"in {client.room_label(room)}"
    else:
        reply = await client.request("history", **{"with": name, "limit": 20})
        title = f"with {name}" if name else "to everyone"
    if reply["type"] != "ok":
        client.output(explain(reply, name or ""))
        return
    show_list(client, reply["messages"], title)


@command("/search", "[@USER|#ROOM] WORDS", "messages with these words (default: this room, or all)")
async def search(client: Client, rest: str) -> None:
    words = rest.split()
    fields: dict[str, Any] = {}
    if words and words[0].startswith("@"):
        fields["with"] = words.pop(0)[1:]
    elif words and words[0].startswith("#") and find_room(client, words[0]) is not None:
        fields["room"] = room_or_here(client, words.pop(0))
    elif room_id(client.target or "") is not None:
        fields["room"] = room_id(client.target or "")  # in a room: its messages
    if not words:
        raise Usage()
    need_online(client)
    query = " ".join(words)
    reply = await client.request("search", query=query, **fields)
    if reply["type"] != "ok":
        client.output(explain(reply, fields.get("with", "")))
        return
    title = f"with “{query}”" + (f" (with {fields['with']})" if "with" in fields else "")
    title += f" (in {client.room_label(fields['room'])})" if "room" in fields else ""
    show_list(client, list(reversed(reply["messages"])), title)


# --- People --------------------------------------------------------------------------------


@command("/online", "", "who is online now")
async def online(client: Client, rest: str) -> None:
    need_online(client)
    reply = await client.request("online")
    users = reply.get("users", [])
    client.known.update(users)
    client.known.discard(client.username or "")
    client.output(f"Online now ({len(users)}): " + ", ".join(map(clean, users)))


@command("/recent", "", "who was around in the last hour")
async def recent(client: Client, rest: str) -> None:
    need_online(client)
    reply = await client.request("recent")
    users = reply.get("users", [])
    if not users:
        client.output("Nobody in the last hour.")
    for u in users:
        client.known.add(u["username"])
        state = "online" if u["online"] else f"last seen {clock(u['last_seen'])}"
        client.output(f"  {clean(u['username']):<20} {state}")
    client.known.discard(client.username or "")


@command("/block", "USER", "stop USER's messages reaching you", names=True)
async def block(client: Client, rest: str) -> None:
    name = need_name(rest)
    need_online(client)
    reply = await client.request("block", username=name)
    client.output(f"You block {name} now." if reply["type"] == "ok" else explain(reply, name))


@command("/unblock", "USER", "let USER's messages reach you again", names=True)
async def unblock(client: Client, rest: str) -> None:
    name = need_name(rest)
    need_online(client)
    reply = await client.request("unblock", username=name)
    client.output(f"You no longer block {name}." if reply["type"] == "ok" else explain(reply, name))


@command("/blocked", "", "whom you block")
async def blocked(client: Client, rest: str) -> None:
    need_online(client)
    users = (await client.request("blocked")).get("users", [])
    client.output("You block: " + ", ".join(map(clean, users)) if users else "You block nobody.")


# --- The session ---------------------------------------------------------------------------


@command("/logout", "", "log out (ends the session) and quit")
async def logout(client: Client, rest: str) -> bool:
    need_online(client)
    client.closing = True  # the server closes the connection next
    try:
        await client.request("logout")
    except (ConnectionLost, TimeoutError):
        client.output("The connection dropped before the server could log you out.")
        return False
    client.output("Logged out.")
    return False


@command("/quit", "", "quit (Ctrl-D and Ctrl-C do too)")
async def quit_chat(client: Client, rest: str) -> bool:
    if client.outbox:
        client.output(f"{len(client.outbox)} message(s) could not be sent.")
    return False


command("/exit", "", "the same as /quit")(quit_chat)


@command("/help", "", "this list")
async def show_help(client: Client, rest: str) -> None:
    client.output(help_text())


def help_text() -> str:
    width = max(len(f"{c.name} {c.usage}") for c in BY_NAME.values()) + 2
    return (
        "Commands:\n"
        + "\n".join(f"  {(c.name + ' ' + c.usage).strip():<{width}}{c.help}" for c in BY_NAME.values())
        + "\nPlain text goes where the prompt says (to bob >, to #team >)."
        + "\nTab completes commands, names and room names."
    )


COMMANDS = list(BY_NAME)
HELP = help_text()
