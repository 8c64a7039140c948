import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from .connection import ChatConsumer
from .runtime import runtime
from .transport import on_daphne_shutdown

log = logging.getLogger("chat")


class NoSuchEndpoint(AsyncWebsocketConsumer):  # type: ignore[misc]  # no type hints in channels: its classes are Any
    """A WebSocket to any other path: refused at the handshake (403), with
    one line in the log rather than a 500 and a traceback."""

    async def connect(self) -> None:
        log.info("refused a WebSocket to %s", self.scope.get("path"))
        await self.close()


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI lifespan, where the server sends one (uvicorn; daphne sends
    none, and the first connection starts the runtime instead): start the
    process's runtime, and stop it at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await runtime.start()
            except Exception as e:
                await send({"type": "lifespan.startup.failed", "message": str(e)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


# daphne sends no lifespan: its stop (SIGTERM) runs the graceful one first.
on_daphne_shutdown(runtime.shutdown)

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    re_path(r"", NoSuchEndpoint.as_asgi()),
]
