"""The terminal client's commands (chatclient.commands) on their own: the
registry, the dispatcher and what each command says when its words are
wrong, against a stand-in session (no server, no socket). What they do
against a real server is in test_terminal_client.py."""

from typing import Any

import pytest

from chatclient import commands
from chatclient.client import Sent
from chatclient.commands import BY_NAME, COMMANDS, HELP, Usage, command, run
from chatclient.connection import ConnectionLost
from chatclient.targets import EVERYONE


class StubSession:
    """What commands may use of the session (commands.Client), recording
    what they asked of it; `replies` answers requests by type."""

    def __init__(self, *, online: bool = True, target: str | None = None):
        self.lines: list[str] = []
        self.output = self.lines.append
        self.changes = 0
        self.username = "me"
        self.token = "token"
        self.http_base = "http://chat.test"
        self.online = online
        self.closing = False
        self.target = target
        self.last_writer: str | None = None
        self.rooms: dict[int, dict[str, Any]] = {}
        self.known: set[str] = set()
        self.sent: dict[int, Sent] = {}
        self.outbox: dict[str, Any] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.said: list[tuple[str, str, tuple[int, ...], int | None]] = []
        self.replies: dict[str, dict[str, Any]] = {}

    def on_change(self) -> None:
        self.changes += 1

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        if not self.online:
            raise ConnectionLost()
        self.requests.append((type, fields))
        return self.replies.get(type, {"type": "ok"})

    async def say(self, target, text, attachments=(), *, reply_to=None):
        self.said.append((target, text, attachments, reply_to))

    def aim(self, target: str) -> None:
        self.target = target

    async def load_rooms(self):
        return list(self.rooms.values())

    def room_label(self, room):
        return f"#{self.rooms[room]['name']}" if room in self.rooms else f"room #{room}"

    def room_names(self):
        return {i: r["name"] for i, r in self.rooms.items()}

    def conversation_of(self, message):
        return None


async def test_an_unknown_command_points_to_help():
    session = StubSession()
    assert await run(session, "/nope at all") is True
    assert session.lines == ["Unknown command /nope. Type /help for the list."]
    assert session.requests == [] and session.said == []


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("/msg", "Usage: /msg USER [TEXT]"),
        ("/reply #x hello", "Usage: /reply [#ID] TEXT (/history shows the ids)"),
        ("/reply #12", "Usage: /reply [#ID] TEXT (/history shows the ids)"),
        ("/room", "Usage: /room NAME-OR-ID (/rooms lists them)"),
        ("/create", 'Usage: /create NAME [USER...] (quote a name with spaces: /create "team lunch" bob)'),
        ("/react 12", "Usage: /react #ID EMOJI (/history shows the ids)"),
        ("/unreact x 👍", "Usage: /unreact #ID EMOJI (/history shows the ids)"),
        ("/send-file", "Usage: /send-file PATH [TEXT]"),
        ("/edit #12", "Usage: /edit [#ID] TEXT"),
        ("/search @bob", "Usage: /search [@USER|#ROOM] WORDS"),
        ("/block", "Usage: /block USER"),
        ("/unblock", "Usage: /unblock USER"),
    ],
)
async def test_wrong_words_give_the_usage_line_and_ask_nothing(line, said):
    session = StubSession()
    assert await run(session, line) is True
    assert session.lines == [said]
    assert session.requests == [] and session.said == []


@pytest.mark.parametrize("line", ["/invite bob", "/kick bob", "/leave", "/members", "/rename crew"])
async def test_room_commands_outside_a_room_say_where_to_go(line):
    session = StubSession(target="bob")
    await run(session, line)
    name = line.split()[0]
    usage = f"{name} {BY_NAME[name].usage}".rstrip()
    assert session.lines == [f"Go to a room first (/room NAME, /rooms lists them). Usage: {usage}"]
    assert session.requests == []


@pytest.mark.parametrize(("line", "said"), [("/invite", "Usage: /invite USER..."), ("/kick", "Usage: /kick USER")])
async def test_room_commands_in_a_room_want_their_names(line, said):
    session = StubSession(target="#7")
    await run(session, line)
    assert session.lines == [said] and session.requests == []


async def test_edit_and_delete_with_nothing_sent_say_how_to_name_one():
    session = StubSession()
    await run(session, "/delete")
    assert session.lines == ["You have sent nothing yet in this session. Usage: /delete [#ID] (/history shows the ids)"]


async def test_edit_and_delete_take_ones_last_message_or_an_id():
    session = StubSession()
    session.sent = {5: Sent(5, "bob", "helo"), 9: Sent(9, "bob", "lunch?")}
    await run(session, "/edit lunch at 12?")
    await run(session, "/delete #5")
    assert session.requests == [("edit", {"id": 9, "body": "lunch at 12?"}), ("delete", {"id": 5})]
    assert session.sent[9].body == "lunch at 12?" and 5 not in session.sent
    assert session.lines == ["(edited #9: lunch at 12?)", "(deleted #5: helo)"]


async def test_the_right_words_do_what_they_say():
    session = StubSession()
    await run(session, "/MSG bob  hello there ")
    assert session.target == "bob"
    assert session.said == [("bob", "hello there", (), None)]
    await run(session, "/all")
    assert session.target == EVERYONE and session.lines[-1] == "Plain text now goes to everyone."


async def test_a_command_that_needs_the_server_says_when_it_is_gone():
    session = StubSession(online=False)
    assert await run(session, "/online") is True
    assert session.lines == ["Not connected to the server just now: try again once it is back."]


async def test_quit_exit_and_logout_end_the_client():
    session = StubSession()
    session.outbox = {"c1": object()}
    assert await run(session, "/quit") is False
    assert await run(session, "/exit") is False
    assert session.lines == ["1 message(s) could not be sent."] * 2
    assert await run(session, "/logout") is False
    assert session.closing and session.requests == [("logout", {})]
    assert BY_NAME["/exit"].handler is BY_NAME["/quit"].handler


def test_help_lists_every_command_once_in_the_registrys_order():
    listed = [line.split()[0] for line in HELP.splitlines()[1:] if line.startswith("  /")]
    assert listed == COMMANDS == list(BY_NAME)
    assert COMMANDS[0] == "/msg" and COMMANDS[-1] == "/help"
    assert all(c.help for c in BY_NAME.values())


async def test_a_new_command_is_one_registered_function(monkeypatch):
    """What a newcomer writes: the dispatcher, /help and Tab completion
    know the command with nothing else changed."""
    monkeypatch.setattr(commands, "BY_NAME", dict(BY_NAME))

    @command("/wave", "USER", "wave at USER", names=True)
    async def wave(client, rest):
        if not rest:
            raise Usage("a name")
        await client.say(rest, "👋")

    session = StubSession()
    session.known = {"bob", "bea"}
    await run(session, "/wave")
    await run(session, "/wave bob")
    assert session.lines == ["Usage: /wave USER (a name)"]
    assert session.said == [("bob", "👋", (), None)]
    assert "/wave USER" in commands.help_text() and "wave at USER" in commands.help_text()
    assert commands.completions(session, "/wa") == ["/wave"]
    assert commands.completions(session, "/wave b") == ["bea", "bob"]


def test_a_name_is_registered_once(monkeypatch):
    monkeypatch.setattr(commands, "BY_NAME", dict(BY_NAME))
    with pytest.raises(AssertionError, match="registered twice"):
        command("/msg", "", "again")(BY_NAME["/msg"].handler)


@pytest.mark.parametrize(
    ("text", "target", "to"),
    [
        ("/msg bob hi", None, "bob"),
        ("/msg bob", None, None),  # no text yet
        ("/msg me hi", None, None),  # oneself
        ("/help", "bob", None),
        ("hello", "bob", "bob"),
        ("hello", EVERYONE, None),  # nobody is told about a broadcast
        ("  ", "bob", None),
        ("/reply hi", None, "carol"),  # whoever wrote last
    ],
)
def test_whom_a_line_being_typed_is_for(text, target, to):
    session = StubSession(target=target)
    session.last_writer = "carol"
    assert commands.typing_target(session, text) == to
