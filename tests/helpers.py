"""Small factories, and the protocol client over Channels' communicator."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from chatclient.protocol import Closed, Session

PASSWORD = "correct-horse-42"


def make_user(username, password=PASSWORD, **fields):
    return get_user_model().objects.create_user(username=username, password=password, **fields)


amake_user = database_sync_to_async(make_user)


class CommunicatorTransport:
    """The consumer in this process, through Channels' WebsocketCommunicator."""

    def __init__(self, comm: WebsocketCommunicator):
        self.comm = comm

    async def send(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def recv(self) -> str:
        get = asyncio.ensure_future(self.comm.output_queue.get())
        done, _ = await asyncio.wait({get, self.comm.future}, return_when=asyncio.FIRST_COMPLETED)
        if get not in done:
            get.cancel()
            raise Closed(None, "the consumer ended")
        output = get.result()
        if output["type"] == "websocket.close":
            raise Closed(output.get("code", 1000))
        return output["text"]

    async def close(self) -> None:
        if not self.comm.future.done():
            await self.comm.disconnect()


class ProtocolClient(Session):
    """One connection to the ASGI app, with what the consumer tests need:
    raw frames, replies to requests sent without a ref, and checks that
    nothing arrived."""

    def __init__(self, headers=None, client=("127.0.0.1", 50000)):
        from chatsite.asgi import application

        self.comm = WebsocketCommunicator(application, "/ws/chat/", headers=headers or [])
        self.comm.scope["client"] = client
        # Replies take milliseconds; a loaded CI machine (four test workers,
        # browsers, two cores) once took more than 3 s for a first login.
        super().__init__(CommunicatorTransport(self.comm), timeout=10)

    async def connect(self) -> ProtocolClient:
        connected_, _ = await self.comm.connect()
        assert connected_
        self.start()
        return self

    async def send_raw(self, text: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is not None:
            await self.comm.send_to(bytes_data=bytes_data)
        else:
            await self.comm.send_to(text_data=text)

    async def reply(self, timeout: float | None = None) -> dict[str, Any]:
        """The next reply that no request waits for (to a raw frame)."""
        return await self.first(lambda f: f.get("type") in ("ok", "error"), timeout=timeout, what="reply")

    async def error(self, type: str, code: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(type, **fields)
        assert reply["type"] == "error" and reply["code"] == code, reply
        assert reply["message"]
        return reply

    async def login(self, username: str, password: str = PASSWORD, **fields: Any) -> dict[str, Any]:
        return await self.ok("login", username=username, password=password, **fields)

    async def no_frame(self, timeout: float = 0.2) -> None:
        kept = len(self.kept)
        await asyncio.sleep(timeout)
        assert len(self.kept) == kept, f"expected no frame, got {self.kept[kept:]}"

    async def closed_with(self, timeout: float = 3) -> int | None:
        """Wait for the server to close the connection; its close code."""
        return await self.wait_closed(timeout)


async def connected(username=None, **kwargs) -> ProtocolClient:
    """A connected client, logged in as `username` when given."""
    client = await ProtocolClient(**kwargs).connect()
    if username:
        await client.login(username)
    return client
