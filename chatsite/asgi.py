"""ASGI entry point: HTTP goes to Django, /ws/chat/ to the chat consumer,
the lifespan (where the server sends one) to the process's runtime."""

import gc
import logging
import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.checks import address_exemption_warnings  # noqa: E402
from messaging.routing import lifespan, websocket_urlpatterns  # noqa: E402
from messaging.transport import (  # noqa: E402
    daphne_checks_only_what_is_due,
    daphne_leaves_bodies_unparsed,
    daphne_spools_bodies,
    twisted_writes_at_once,
)
from messaging.uploads import UploadGuard  # noqa: E402

from .logs import SocketRequestId  # noqa: E402
from .proxies import ClientAddress  # noqa: E402
from .security import BrowserOriginValidator  # noqa: E402
from .sockets import SocketSession  # noqa: E402

# Uploads (messaging/uploads.py) stream: Twisted does not parse them into
# memory, daphne does not queue them in memory.
daphne_leaves_bodies_unparsed()
daphne_spools_bodies()
# A frame goes to the kernel when it is written, not at a later turn of the
# loop (a broadcast to thousands: messaging/transport.py).
twisted_writes_at_once()
# daphne's timers look at the connections that are due, not at all of them
# every second (10,000 idle connections: messaging/transport.py).
daphne_checks_only_what_is_due()
# Fewer collections of young objects, so the many that a request keeps while
# the database answers die young instead of filling the old generation,
# whose full collections scan every connection (settings.py).
gc.set_threshold(settings.CHAT_GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])

application = ClientAddress(
    ProtocolTypeRouter(
        {
            "http": UploadGuard(django_asgi_app),
            "lifespan": lifespan,
            "websocket": SocketRequestId(BrowserOriginValidator(SocketSession(URLRouter(websocket_urlpatterns)))),
        }
    )
)

# daphne runs no system checks: behind a proxy (TRUSTED_PROXIES set), say at
# start what `check --deploy` would. (Without one, sparing loopback is the
# default for this machine's own tools, not worth a warning at every start.)
for _warning in address_exemption_warnings() if settings.TRUSTED_PROXIES else []:
    logging.getLogger("chat").warning("%s", _warning)


def _started() -> str:
    """What this process runs on, in one line: which database, which Redis
    and channel layer (no password), and its pid."""
    from urllib.parse import urlsplit

    from django.db import connection

    db = connection.settings_dict
    where = db["NAME"] if connection.vendor == "sqlite" else f"{db['NAME']} on {db.get('HOST') or 'local socket'}"
    layer = str(settings.CHANNEL_LAYERS["default"]["BACKEND"]).rsplit(".", 1)[-1]
    redis = urlsplit(settings.REDIS_URL)
    via = f" at {redis.hostname}:{redis.port or 6379}" if settings.REDIS_URL else " (this process only)"
    return f"chat process {os.getpid()} starting: {connection.vendor} database {where}, {layer}{via}"


logging.getLogger("chat").info("%s", _started())
