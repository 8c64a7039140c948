"""The terminal client's connection: a protocol session (chatclient.protocol)
plus telling a server that is down from one that is not a chat server."""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import urlparse

import websockets

from .protocol import Closed, EventHandler, Session, connect

ConnectionLost = Closed

# websockets logs, as an error with its traceback, a keepalive ping that
# meets a connection the server is closing (a restart): with no logging
# set up, Python prints that on the person's screen. The client says what
# happened itself ("Connection lost. Reconnecting…"). Logging set up by
# whoever runs the client still gets these records.
logging.getLogger("websockets").addHandler(logging.NullHandler())

CHAT_PATH = "/ws/chat/"


class ConnectFailed(Exception):
    """Could not reach the server at all."""


class NotAChatServer(Exception):
    """Something answered, but not our protocol."""


class Connection(Session):
    def __init__(self, url: str, on_event: EventHandler, *, timeout: float = 15):
        self.url = url
        self._on_event = on_event
        self._timeout = timeout
        self.closed = asyncio.Event()
        self.close_code = None

    async def open(self) -> str | None:
        """Connect and check that a chat server answers; who we are (None:
        anonymous)."""
        try:
            transport = await connect(self.url, open_timeout=self._timeout)
        except ConnectionRefusedError:
            raise ConnectFailed("connection refused") from None
        except socket.gaierror:
            raise ConnectFailed("unknown host") from None
        except (TimeoutError, OSError) as e:
            raise ConnectFailed(str(e) or "timed out") from None
        except websockets.InvalidURI as e:
            raise ConnectFailed(f"bad address: {e}") from None
        except websockets.InvalidStatus as e:
            raise NotAChatServer(self._refused(e.response.status_code)) from None
        except (websockets.InvalidHandshake, websockets.InvalidMessage) as e:
            raise NotAChatServer(str(e)) from None
        super().__init__(transport, self._on_event, timeout=self._timeout)
        self.start()
        try:
            who = await self.request("whoami")
        except (TimeoutError, Closed):
            await self.close()
            raise NotAChatServer("it does not answer the chat protocol") from None
        if who.get("type") != "ok" or "username" not in who:
            await self.close()
            raise NotAChatServer("it does not answer the chat protocol")
        username: str | None = who["username"]
        return username

    def _refused(self, status: int) -> str:
        path = urlparse(self.url).path or "/"
        why = f"it refused a WebSocket at {path} (HTTP {status})"
        if path != CHAT_PATH:
            why += f"; our servers have the chat at {CHAT_PATH}"
        return why
