"""Which channel layer the settings pick, and the pub/sub one's care for a
connection that ended (the faults and idle connections of both layers are
in test_faults.py and test_scaleout.py)."""

import asyncio
import contextlib
import os
import subprocess
import sys

import pytest

from chatsite.layers import RedisPubSubChannelLayer

from .conftest import need
from .servers import ROOT


def backend(**env):
    """The settings' default channel layer backend, under this environment."""
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CHANNEL_LAYER")}
    code = "import chatsite.settings as s; print(s.CHANNEL_LAYERS['default']['BACKEND'])"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**environ, **env}, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else done.stderr


def test_the_channel_layer_setting():
    redis = "redis://127.0.0.1:6379/0"
    assert backend() == "chatsite.layers.InMemoryChannelLayer"
    assert backend(CHANNEL_LAYER="core") == "chatsite.layers.InMemoryChannelLayer"  # no Redis: one process
    assert backend(REDIS_URL=redis) == "chatsite.layers.RedisPubSubChannelLayer"
    assert backend(REDIS_URL=redis, CHANNEL_LAYER="pubsub") == "chatsite.layers.RedisPubSubChannelLayer"
    assert backend(REDIS_URL=redis, CHANNEL_LAYER="Core ") == "chatsite.layers.RedisChannelLayer"
    assert "CHANNEL_LAYER must be core or pubsub" in backend(REDIS_URL=redis, CHANNEL_LAYER="rabbit")


@pytest.mark.scaleout
async def test_pubsub_group_add_of_an_ended_channel_does_nothing(settings):
    need(bool(settings.REDIS_URL), "Redis (REDIS_URL)")
    layer = RedisPubSubChannelLayer(hosts=[settings.REDIS_HOST], prefix=f"{settings.CHANNEL_LAYER_PREFIX}-t")
    try:
        alive, ended = await layer.new_channel(), await layer.new_channel()
        receiving = asyncio.ensure_future(layer.receive(ended))
        await asyncio.sleep(0)
        receiving.cancel()  # as Channels does when a consumer ends
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
        await layer.group_add("g", ended)  # no RuntimeError
        await layer.group_add("g", alive)
        await layer.group_send("g", {"type": "x"})
        assert await asyncio.wait_for(layer.receive(alive), 5) == {"type": "x"}
    finally:
        await layer.flush()
