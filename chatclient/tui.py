"""The terminal around ChatClient: menu, password without echo, an input
line that incoming messages print above (prompt_toolkit), tab completion."""

import argparse
import asyncio
import sys
from urllib.parse import urlparse

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.patch_stdout import patch_stdout

from .connection import ConnectFailed, ConnectionLost, NotAChatServer
from .core import ChatClient, Ended, explain

EXIT_OK, EXIT_CONNECT, EXIT_NOT_CHAT, EXIT_LOST = 0, 2, 3, 4


class ChatCompleter(Completer):
    def __init__(self, client):
        self.client = client

    def get_completions(self, document, complete_event):
        text = document.text_before_cursor
        word = text.split(" ")[-1]
        for candidate in self.client.completions(text):
            yield Completion(candidate, start_position=-len(word))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="chat", description="Terminal client for the chat server.")
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser):
    parser.add_argument("--host", default="127.0.0.1", help="server host (default %(default)s)")
    parser.add_argument("--port", type=int, default=2000, help="server port (default %(default)s)")
    parser.add_argument("--url", help="full WebSocket URL instead, e.g. wss://chat.example.com/ws/chat/")
    parser.add_argument("--takeover", action="store_true", help="take over a session open elsewhere")
    parser.add_argument("--user", help="log in as this user (asks for the password)")


def url_from(args):
    if args.url:
        parsed = urlparse(args.url)
        if parsed.scheme not in ("ws", "wss") or not parsed.netloc:
            raise SystemExit(f"--url must look like ws://HOST:PORT/ws/chat/, not {args.url!r}")
        return args.url
    host = f"[{args.host}]" if ":" in args.host else args.host
    return f"ws://{host}:{args.port}/ws/chat/"


def ask(session, text, password=False):
    # is_password sticks to a PromptSession once given: pass it every time.
    return session.prompt_async(text, is_password=password)


def say(text):
    print_formatted_text(text)


async def menu(session, client, args):
    """Until logged in: the old client's numbered menu. False: the user quit."""
    user = args.user
    while True:
        if user is None:
            choice = (await ask(session, "1) Log in   2) Sign up   3) Quit\n> ")).strip()
            if choice in ("3", "q", "quit"):
                return False
            if choice not in ("1", "2"):
                say("Type 1, 2 or 3.")
                continue
            user = (await ask(session, "Username: ")).strip()
        else:
            choice = "1"
        password = await ask(session, "Password: ", password=True)
        if choice == "2":
            await client.signup(user, password)
            user = None
            continue
        error = await client.login(user, password, takeover=args.takeover)
        if error is None:
            return True
        if error["code"] == "already_online":
            answer = await ask(session, "You are logged in elsewhere. Move the session here? [y/N] ")
            if answer.strip().lower().startswith("y"):
                error = await client.login(user, password, takeover=True)
                if error is None:
                    return True
        say(explain(error))
        user = None


async def chat(session, client):
    """The chat loop: read lines, run them; reconnect when the server drops."""
    while True:
        if client.ended:
            raise client.ended
        line_task = asyncio.ensure_future(ask(session, "> "))
        lost_task = asyncio.ensure_future(client.conn.closed.wait())
        done, _ = await asyncio.wait({line_task, lost_task}, return_when=asyncio.FIRST_COMPLETED)
        if line_task in done:
            lost_task.cancel()
            try:
                if not await client.execute(line_task.result()):
                    return
            except ConnectionLost:
                if client.ended is None:
                    await client.reconnect()
            continue
        line_task.cancel()
        await asyncio.gather(line_task, return_exceptions=True)
        if client.ended:
            raise client.ended
        await client.reconnect()


async def run(args):
    url = url_from(args)
    client = ChatClient(url, say)
    try:
        await client.connect()
    except ConnectFailed as e:
        say(f"Cannot connect to {url}: {e}. Is the chat server running there?")
        return EXIT_CONNECT
    except NotAChatServer as e:
        say(f"{url} is not a chat server ({e}).")
        return EXIT_NOT_CHAT
    say(f"Connected to {url}.")
    session = PromptSession(completer=ChatCompleter(client), complete_while_typing=False)
    try:
        with patch_stdout(raw=True):
            if not await menu(session, client, args):
                return EXIT_OK
            await chat(session, client)
        return EXIT_OK
    except (EOFError, KeyboardInterrupt):
        say("Bye!")
        return EXIT_OK
    except ConnectionLost:
        say("Lost the connection to the server.")
        return EXIT_LOST
    except Ended as e:
        say(e.message)
        return e.code
    finally:
        await client.close()


def main(argv=None):
    return main_with(parse_args(argv))


def main_with(args):
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
