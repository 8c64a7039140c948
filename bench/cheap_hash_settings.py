"""The project's settings for benchmark and test servers, with a cheap
password hasher.

Argon2 costs 0.1-0.25 s of CPU per password: a login storm of a thousand
users would measure Argon2, not the server, and the test suite's servers
would spend most of their CPU on it. The benchmark's servers (and its
seeding) and the suite's (tests/servers.py) hash with MD5 instead; never
use this module for anything else.
Everything else, the channel layer (``CHANNEL_LAYER``) included, is the
project's.
"""

from chatsite.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
