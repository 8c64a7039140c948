"""One WebSocket connection speaking protocol v1: requests with replies
matched by `ref`, events handed to a callback."""

import asyncio
import itertools
import json
import socket

import websockets


class ConnectFailed(Exception):
    """Could not reach the server at all."""


class NotAChatServer(Exception):
    """Something answered, but not our protocol."""


class ConnectionLost(Exception):
    """The connection closed (or died) while we used it."""

    def __init__(self, code=None, reason=""):
        super().__init__(f"connection closed ({code})" if code else "connection lost")
        self.code = code
        self.reason = reason


class Connection:
    def __init__(self, url, on_event, *, timeout=15):
        self.url = url
        self.on_event = on_event
        self.timeout = timeout
        self.refs = itertools.count(1)
        self.waiting = {}
        self.ws = None
        self.reader = None
        self.closed = asyncio.Event()
        self.close_code = None

    async def open(self):
        try:
            self.ws = await websockets.connect(self.url, open_timeout=self.timeout, max_size=2**20)
        except ConnectionRefusedError:
            raise ConnectFailed("connection refused") from None
        except socket.gaierror:
            raise ConnectFailed("unknown host") from None
        except (OSError, asyncio.TimeoutError) as e:
            raise ConnectFailed(str(e) or "timed out") from None
        except websockets.InvalidURI as e:
            raise ConnectFailed(f"bad address: {e}") from None
        except (websockets.InvalidHandshake, websockets.InvalidMessage) as e:
            raise NotAChatServer(str(e)) from None
        self.reader = asyncio.create_task(self._read())
        try:
            who = await self.request("whoami")
        except (ConnectionLost, asyncio.TimeoutError):
            await self.close()
            raise NotAChatServer("it does not answer the chat protocol") from None
        if who.get("type") != "ok" or "username" not in who:
            await self.close()
            raise NotAChatServer("it does not answer the chat protocol")
        return who["username"]

    async def _read(self):
        try:
            async for raw in self.ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(frame, dict):
                    continue
                future = self.waiting.pop(frame.get("ref"), None) if frame.get("type") in ("ok", "error") else None
                if future is not None:
                    if not future.done():
                        future.set_result(frame)
                else:
                    await self.on_event(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            rcvd = getattr(self.ws, "close_rcvd", None)
            self.close_code = rcvd.code if rcvd else None
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(ConnectionLost(self.close_code))
            self.waiting.clear()
            self.closed.set()

    async def request(self, type, **fields):
        if self.closed.is_set():
            raise ConnectionLost(self.close_code)
        ref = next(self.refs)
        future = asyncio.get_running_loop().create_future()
        self.waiting[ref] = future
        try:
            await self.ws.send(json.dumps({"type": type, "ref": ref, **fields}))
        except websockets.ConnectionClosed:
            self.waiting.pop(ref, None)
            raise ConnectionLost(self.close_code) from None
        try:
            return await asyncio.wait_for(future, self.timeout)
        finally:
            self.waiting.pop(ref, None)

    async def send(self, type, **fields):
        """Fire and forget (acks)."""
        try:
            await self.ws.send(json.dumps({"type": type, **fields}))
        except websockets.ConnectionClosed:
            pass

    async def close(self):
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
