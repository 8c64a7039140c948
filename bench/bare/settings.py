"""Settings of the bare reference app: Channels and nothing else.

No database, no sessions, no middleware: the in-memory channel layer in one
process (Channels' own, or the project's with ``BENCH_BARE_LAYER=project``),
or channels_redis (``REDIS_URL``; ``CHANNEL_LAYER=pubsub`` as in the project for
``RedisPubSubChannelLayer``) when the load generator starts several.
"""

import os

SECRET_KEY = "bench-bare-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
DATABASES: dict[str, dict[str, str]] = {}
ASGI_APPLICATION = "bench.bare.asgi.application"
USE_TZ = True

_redis = os.environ.get("REDIS_URL", "")
_prefix = os.environ.get("CHANNEL_LAYER_PREFIX", "bare")
if _redis and os.environ.get("CHANNEL_LAYER", "pubsub") == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [_redis], "prefix": _prefix},
        }
    }
elif _redis:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [_redis], "prefix": _prefix, "capacity": 1000, "expiry": 60},
        }
    }
else:
    # Channels' own in-memory layer by default; BENCH_BARE_LAYER=project uses the
    # project's slimmer one (chatsite/layers.py: no deep copy, no sweep per call).
    _memory = "chatsite.layers" if os.environ.get("BENCH_BARE_LAYER") == "project" else "channels.layers"
    CHANNEL_LAYERS = {"default": {"BACKEND": f"{_memory}.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
