"""The terminal around ChatClient: menu, password without echo, an input
line that incoming messages print above, a status line below it
(prompt_toolkit), tab completion."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any
from urllib.parse import urlparse, urlunparse

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.patch_stdout import patch_stdout

from .client import ChatClient, Ended
from .connection import CHAT_PATH, ConnectFailed, NotAChatServer
from .text import explain, username_problem

EXIT_OK, EXIT_USAGE, EXIT_CONNECT, EXIT_NOT_CHAT = 0, 2, 2, 3  # 5 and 6: Ended.code
SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


class UsageError(Exception):
    """The command line asks for something impossible."""


class Interrupted(Exception):
    """Ctrl-C at a prompt. prompt_toolkit raises KeyboardInterrupt, which
    asyncio will not keep inside a task: it is turned into this at once."""


class ChatCompleter(Completer):
    def __init__(self, client: ChatClient):
        self.client = client

    def get_completions(self, document: Any, complete_event: Any) -> Any:
        text = document.text_before_cursor
        word = text.split(" ")[-1]
        for candidate in self.client.completions(text):
            yield Completion(candidate + " ", start_position=-len(word), display=candidate)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chat", description="Terminal client for the chat server.")
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="server host (default %(default)s)")
    parser.add_argument("--port", type=int, default=2000, help="server port (default %(default)s)")
    parser.add_argument(
        "--url", help="full address instead, e.g. wss://chat.example.com/ws/chat/ (http(s)://HOST/ works too)"
    )
    parser.add_argument("--takeover", action="store_true", help="take over a session open elsewhere")
    parser.add_argument("--user", help="log in as this user (asks for the password)")


def url_from(args: Any) -> str:
    """The WebSocket URL to use. The page's address is fine too: http(s)
    becomes ws(s), and no path means the chat's."""
    if args.url:
        url: str = args.url
        parsed = urlparse(url)
        scheme = SCHEMES.get(parsed.scheme.lower())
        if scheme is None or not parsed.netloc:
            raise UsageError(f"--url must look like ws://HOST:PORT/ws/chat/ or http://HOST:PORT/, not {args.url!r}")
        path = parsed.path if parsed.path not in ("", "/") else CHAT_PATH
        return urlunparse(parsed._replace(scheme=scheme, path=path))
    host = f"[{args.host}]" if ":" in args.host else args.host
    return f"ws://{host}:{args.port}{CHAT_PATH}"


async def ask(session: PromptSession[str], message: Any, password: bool = False) -> str:
    # is_password sticks to a PromptSession once given: pass it every time.
    try:
        answer: str = await session.prompt_async(message, is_password=password)
        return answer
    except KeyboardInterrupt:
        raise Interrupted() from None


def say(text: str) -> None:
    print_formatted_text(text)


async def menu(session: PromptSession[str], client: ChatClient, args: Any) -> bool:
    """Until logged in: the old client's numbered menu. False: the user quit."""
    user = args.user
    while True:
        if user is None:
            choice = (await ask(session, "1) Log in   2) Sign up   3) Quit\n> ")).strip()
            if choice in ("3", "q", "quit"):
                return False
            if choice == "2":
                if await sign_up(session, client):
                    return True
                continue
            if choice != "1":
                say("Type 1, 2 or 3.")
                continue
            user = (await ask(session, "Username: ")).strip()
            if not user:
                continue
        error = await client.login(user, await ask(session, "Password: ", password=True), takeover=args.takeover)
        if error is not None and error["code"] == "already_online":
            answer = await ask(session, "You are logged in elsewhere. Move the session here? [y/N] ")
            if answer.strip().lower().startswith("y"):
                error = await client.login(user, await ask(session, "Password: ", password=True), takeover=True)
        if error is None:
            return True
        say(explain(error))
        user = None


async def sign_up(session: PromptSession[str], client: ChatClient) -> bool:
    """Name (checked at once), password twice, then logged in. False: the
    person gave up (an empty answer)."""
    while True:
        name = (await ask(session, "Username (empty to go back): ")).strip()
        if not name:
            return False
        problem = username_problem(name)
        if problem:
            say(problem)
            continue
        while True:
            password = await ask(session, "Password: ", password=True)
            if not password:
                return False
            if await ask(session, "Password again: ", password=True) != password:
                say("The two passwords differ; type them again.")
                continue
            error = await client.signup(name, password)
            if error is None:
                return True
            message = explain(error)
            about_name = error["code"] == "username_taken" or message.startswith("Username:")
            for field in ("Username: ", "Password: "):
                message = message.removeprefix(field)
            say(f"Cannot sign up: {message}")
            if about_name:
                break


async def chat(session: PromptSession[str], client: ChatClient) -> None:
    """The chat loop: read lines and run them, the prompt always there; the
    client reconnects by itself. Raises Ended when the session ends."""
    while True:
        line_task = asyncio.ensure_future(ask(session, client.prompt))
        end_task = asyncio.ensure_future(client.finished.wait())
        done, _ = await asyncio.wait({line_task, end_task}, return_when=asyncio.FIRST_COMPLETED)
        if line_task not in done:
            line_task.cancel()
            await asyncio.gather(line_task, return_exceptions=True)
            assert client.ended is not None
            raise client.ended
        end_task.cancel()
        if not await client.execute(line_task.result()):
            return


async def run(url: str, args: Any) -> int:
    session: PromptSession[str] | None = None

    def refresh() -> None:
        if session is not None:
            session.app.invalidate()

    client = ChatClient(url, say, on_change=refresh)
    try:
        try:
            await client.connect()
        except ConnectFailed as e:
            say(f"Cannot connect to {url}: {e}. Is the chat server running there?")
            return EXIT_CONNECT
        except NotAChatServer as e:
            say(f"{url} is not a chat server: {e}.")
            return EXIT_NOT_CHAT
        say(f"Connected to {url}.")
        session = PromptSession(
            completer=ChatCompleter(client),
            complete_while_typing=False,
            bottom_toolbar=client.status,
            refresh_interval=1,  # "typing…" fades out
        )
        chatting = False  # what is typed at the menu (a password) says nothing to anyone

        def typed(buffer: Any) -> None:
            if chatting:
                client.typed(buffer.text)

        session.default_buffer.on_text_changed += typed
        try:
            with patch_stdout(raw=True):
                while await menu(session, client, args):
                    try:
                        chatting = True
                        await chat(session, client)
                        break
                    except Ended as e:
                        if not e.login_again:
                            raise
                        chatting = False
                        say(e.message)
                        args.user = client.username
                        client.restart()
        except (EOFError, Interrupted):
            pass
        except Ended as e:
            say(e.message)
            return e.code
        say("Bye!")
        return EXIT_OK
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    return main_with(parse_args(argv))


def main_with(args: Any) -> int:
    try:
        url = url_from(args)
    except UsageError as e:
        print(f"chat: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(run(url, args))
    except KeyboardInterrupt:
        # Ctrl-C while no prompt was shown (connecting, waiting for a reply).
        say("Bye!")
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
