import logging

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from .consumers import ChatConsumer

log = logging.getLogger("chat")


class NoSuchEndpoint(AsyncWebsocketConsumer):
    """A WebSocket to any other path: refused at the handshake (403), with
    one line in the log rather than a 500 and a traceback."""

    async def connect(self) -> None:
        log.info("refused a WebSocket to %s", self.scope.get("path"))
        await self.close()


websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    re_path(r"", NoSuchEndpoint.as_asgi()),
]
