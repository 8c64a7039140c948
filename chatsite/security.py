from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """Refuse WebSockets opened by another site's page.

    Browsers always send Origin, so a page elsewhere cannot open a socket that
    carries a user's session cookie: its Origin must be one of ALLOWED_HOSTS
    (as Channels' AllowedHostsOriginValidator checks). Programs (the terminal
    client, load generators) send no Origin and carry no browser cookies: they
    pass, and must log in with a password like anyone else.
    """

    def __init__(self, application):
        allowed_hosts = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed_hosts:
            allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
        super().__init__(application, allowed_hosts)

    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)
