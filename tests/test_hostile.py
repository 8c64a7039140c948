"""Hostile clients, round two (issue 18): frames and messages built to
break the server's reading of them. Through the consumer, and against a
real daphne server where the transport is what is tested."""

import asyncio
import json

import pytest
import websockets

from .helpers import PASSWORD, amake_user, connected
from .servers import Peer, signup

pytestmark = pytest.mark.django_db(transaction=True)


# --- Numbers that cannot be echoed back -------------------------------------------

UNSENDABLE_NUMBERS = ["1e99999", "-1e400", "NaN", "Infinity", "-Infinity", "1" * 5000]


@pytest.mark.parametrize("number", UNSENDABLE_NUMBERS)
async def test_a_number_json_cannot_carry_is_a_bad_request_and_the_connection_lives(number):
    """A float that overflows, NaN, Infinity or an integer Python refuses
    to parse, as the `ref` or in any field: one `bad_request` reply (its
    ref null: it cannot be echoed), and the next request is served."""
    await amake_user("alice")
    client = await connected("alice")
    for frame in (f'{{"type": "whoami", "ref": {number}}}', f'{{"type": "history", "with": "x", "before": {number}}}'):
        await client.send_raw(frame)
        reply = await client.reply()
        assert (reply["type"], reply["code"], reply["ref"]) == ("error", "bad_request", None), reply
    assert (await client.ok("whoami"))["username"] == "alice"
    await client.close()


async def test_a_too_large_frame_with_an_overflowing_ref_is_answered():
    """Over the 64 KiB a frame may have, the reply echoes the ref it could
    read: one that overflows is not echoed (null), and is still answered."""
    client = await connected()
    await client.send_raw('{"type": "whoami", "ref": 1e99999, "pad": "' + "x" * (70 * 1024) + '"}')
    reply = await client.reply()
    assert (reply["type"], reply["code"], reply["ref"]) == ("error", "too_large", None), reply
    assert (await client.ok("whoami"))["username"] is None
    await client.close()


# --- A message in fragments ---------------------------------------------------------

KiB = 1024


async def test_a_message_in_fragments_is_limited_as_a_whole(server):
    """The 128 KiB limit is on the message, not the frame: a client sending
    one message in 60 KiB fragments is closed with 1009 as soon as the
    fragments announced pass the limit, while it still holds the rest of
    its megabyte; the server never buffered more than the limit."""
    await signup(server.url, "alice")
    ws = await websockets.connect(server.url, max_size=2**20)
    closed = asyncio.ensure_future(ws.wait_closed())

    async def fragments():
        yield '{"type": "whoami", "pad": "'
        for _ in range(3):  # 180 KiB announced: past the limit
            yield "x" * (60 * KiB)
        # The rest of the megabyte waits for the server to read what came.
        await asyncio.wait_for(asyncio.shield(closed), 10)
        for _ in range(14):
            yield "x" * (60 * KiB)
        yield '"}'

    with pytest.raises(websockets.ConnectionClosed):
        await ws.send(fragments())
    assert ws.close_code == 1009
    # Fragments under the limit are one message, served as any other.
    async with Peer(server.url) as peer:
        await peer.ok("login", username="alice", password=PASSWORD)
        request = json.dumps({"type": "whoami", "ref": "split", "pad": "y" * (30 * KiB)})
        await peer.ws.send(request[i : i + 8 * KiB] for i in range(0, len(request), 8 * KiB))
        reply = await peer.first(lambda f: f.get("ref") == "split", what="reply")
        assert (reply["type"], reply["username"]) == ("ok", "alice")
    assert "Traceback" not in server.log_text()
