from urllib.parse import urlparse

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings


class BrowserOriginValidator:
    """Refuse WebSockets opened by another site's page.

    Browsers always send Origin, so a page elsewhere cannot open a socket that
    carries a user's session cookie: its Origin must be this server itself
    (the same host and port as the request's Host header) or match
    ALLOWED_HOSTS, where "*" does not count. Programs (the terminal client,
    load generators) send no Origin and carry no browser cookies: they pass,
    and must log in with a password like anyone else.
    """

    def __init__(self, application):
        self.application = application
        # Channels' matching of origins against host patterns.
        self.listed = OriginValidator(application, [h for h in settings.ALLOWED_HOSTS if h != "*"])

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers") or [])
        if self.allowed(headers.get(b"origin"), headers.get(b"host")):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)

    def allowed(self, origin, host):
        if origin is None:
            return True
        parsed = urlparse(origin.decode("latin1"))
        try:
            parsed.port
        except ValueError:  # "http://127.0.0.1:2000.evil.example" is no origin
            return False
        if host is not None and parsed.scheme in ("http", "https") and parsed.netloc.lower() == host.decode("latin1").lower():
            return True
        return bool(self.listed.allowed_origins) and self.listed.valid_origin(parsed)
