"""Hostile clients, round two (issue 18): frames and messages built to
break the server's reading of them. Through the consumer, and against a
real daphne server where the transport is what is tested."""

import pytest

from .helpers import amake_user, connected

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
