"""Hashing many passwords on every core (legacy.services.passwords_hash).

The workers run these functions; this module imports no model, so a worker
started with "spawn" or "forkserver" needs no django.setup(): hashing only
reads the PASSWORD_HASHERS setting, which the parent hands over.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def worker_setup(hashers: Sequence[str]) -> None:
    """Hash with the parent's hashers (a test's, or settings')."""
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure()
    settings.PASSWORD_HASHERS = list(hashers)
    from django.contrib.auth import hashers as module

    module.get_hashers.cache_clear()  # type: ignore[attr-defined]
    module.get_hashers_by_algorithm.cache_clear()  # type: ignore[attr-defined]


def hash_chunk(passwords: Sequence[str]) -> list[str]:
    from django.contrib.auth.hashers import make_password

    return [make_password(p) for p in passwords]
