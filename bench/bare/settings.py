"""Settings of the bare reference app: Channels and nothing else.

No database, no sessions, no middleware: the in-memory channel layer in one
process, or channels_redis (``REDIS_URL``; ``CHANNEL_LAYER_BACKEND=pubsub``
for ``RedisPubSubChannelLayer``) when the load generator starts several.
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
if _redis and os.environ.get("CHANNEL_LAYER_BACKEND", "core") == "pubsub":
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
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
