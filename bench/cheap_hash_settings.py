"""The project's settings for benchmark servers, with a cheap password hasher.

Argon2 costs 0.1-0.25 s of CPU per password: a login storm of a thousand
users would measure Argon2, not the server. The benchmark's servers (and its
seeding) hash with MD5 instead; never use this module for anything else.

``CHANNEL_LAYER_BACKEND=pubsub`` (with ``REDIS_URL``) swaps in
``RedisPubSubChannelLayer``: the project's settings have no such switch yet.
"""

import os

from chatsite.settings import *  # noqa: F403
from chatsite.settings import CHANNEL_LAYER_PREFIX, REDIS_HOST, REDIS_URL

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if REDIS_URL and os.environ.get("CHANNEL_LAYER_BACKEND") == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_HOST], "prefix": CHANNEL_LAYER_PREFIX},
        }
    }
