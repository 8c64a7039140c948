"""Small factories and a protocol client for the consumer tests."""

import asyncio
import json

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

PASSWORD = "correct-horse-42"


def make_user(username, password=PASSWORD, **fields):
    return get_user_model().objects.create_user(username=username, password=password, **fields)


amake_user = database_sync_to_async(make_user)


class ChatClient:
    """One WebSocket connection speaking protocol v1 to the ASGI app.

    `request` returns the reply to a request and keeps events that arrive
    meanwhile in `events`, so a test can look for them afterwards.
    """

    def __init__(self, headers=None, client=("127.0.0.1", 50000)):
        from chatsite.asgi import application

        self.comm = WebsocketCommunicator(application, "/ws/chat/", headers=headers or [])
        self.comm.scope["client"] = client
        self.events = []
        self.closed = None

    async def connect(self):
        connected, _ = await self.comm.connect()
        assert connected
        return self

    async def send_raw(self, text=None, bytes_data=None):
        if bytes_data is not None:
            await self.comm.send_to(bytes_data=bytes_data)
        else:
            await self.comm.send_to(text_data=text)

    async def receive(self, timeout=3):
        output = await self.comm.receive_output(timeout)
        if output["type"] == "websocket.close":
            self.closed = output.get("code", 1000)
            raise ConnectionClosed(self.closed)
        return json.loads(output["text"])

    async def reply(self, timeout=3):
        while True:
            frame = await self.receive(timeout)
            if frame["type"] in ("ok", "error") and "ref" in frame:
                return frame
            self.events.append(frame)

    async def request(self, type, **fields):
        await self.comm.send_json_to({"type": type, **fields})
        return await self.reply()

    async def ok(self, type, **fields):
        reply = await self.request(type, **fields)
        assert reply["type"] == "ok", reply
        return reply

    async def error(self, type, code, **fields):
        reply = await self.request(type, **fields)
        assert reply["type"] == "error" and reply["code"] == code, reply
        assert reply["message"]
        return reply

    async def event(self, type, timeout=3, **match):
        """The next event of this type (and fields), from those kept or new."""
        for i, frame in enumerate(self.events):
            if frame["type"] == type and all(frame.get(k) == v for k, v in match.items()):
                return self.events.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.receive(max(0.01, deadline - loop.time()))
            if frame["type"] == type and all(frame.get(k) == v for k, v in match.items()):
                return frame
            self.events.append(frame)

    async def no_frame(self, timeout=0.2):
        assert await self.comm.receive_nothing(timeout), "expected no frame"

    async def login(self, username, password=PASSWORD, **fields):
        return await self.ok("login", username=username, password=password, **fields)

    async def close(self):
        if self.closed is None:
            await self.comm.disconnect()
            self.closed = 1000


class ConnectionClosed(Exception):
    pass


async def connected(username=None, **kwargs):
    """A connected client, logged in as `username` when given."""
    client = await ChatClient(**kwargs).connect()
    if username:
        await client.login(username)
    return client
