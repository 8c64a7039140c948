"""Property-based fuzzing of the socket protocol against a real server.

A thousand random and mutated frames a run (hypothesis draws new ones each
time), each followed by a sentinel request: every frame gets exactly one
reply (`ok` or `error`), the connection stays usable, and the server's
memory comes back to its level (under 15 KiB a frame kept; a run keeps
about 0.6 MiB in all).
"""

import asyncio
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts import services as accounts

from .helpers import make_user
from .servers import Peer, Server
from .test_abuse import MiB, rss

pytestmark = pytest.mark.django_db(transaction=True)

OPS = [
    "signup",
    "login",
    "send",
    "broadcast",
    "block",
    "unblock",
    "blocked",
    "online",
    "recent",
    "ack",
    "history",
    "conversations",
    "read",
    "whoami",
    "typing",
    "search",
    "edit",
    "delete",
    "nope",
    "",
]
FIELDS = [
    "to",
    "body",
    "username",
    "password",
    "ids",
    "with",
    "before",
    "limit",
    "up_to",
    "id",
    "query",
    "typing",
    "takeover",
    "token",
    "client_id",
    "ref",
    "type",
    "presence_batch",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["alice", "fuzzer", "", "\x00", "\ud800", "x" * 200, "🙂" * 5])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def requests(draw):
    """A request-shaped object: a known (or unknown) op with fields of any value."""
    frame = {"type": draw(st.sampled_from(OPS) | values)}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        frame[name] = draw(values)
    if frame["type"] == "signup" and isinstance(frame.get("password"), str):
        frame["password"] = frame["password"][:7]  # refused before any hash: keeps the fuzz fast
    text = json.dumps(frame, ensure_ascii=draw(st.booleans()))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a text frame must be UTF-8: escape lone surrogates
        text = json.dumps(frame)
    return text


@st.composite
def mutated(draw):
    """A valid frame with bytes cut, doubled or replaced: mostly not JSON."""
    text = draw(requests())
    i = draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))
    how = draw(st.sampled_from(["cut", "double", "replace", "nest"]))
    if how == "cut":
        return text[:i]
    if how == "double":
        return text[:i] + text[i:] * 2
    if how == "nest":
        depth = draw(st.integers(min_value=1, max_value=200))
        return '{"type": "online", "ref": ' + "[" * depth + "]" * depth + "}"
    return text[:i] + draw(st.sampled_from(['"', "\\", "{", "}", "NaN", "\\ud800", "\x00", "ÿ", ","])) + text[i + 1 :]


frames = requests() | mutated() | st.text(max_size=50) | st.binary(max_size=50)


class Remote:
    """A logged-in protocol session on its own event loop, driven from the
    sync test (hypothesis runs examples synchronously)."""

    def __init__(self, url, token):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.peer = Peer(url)
        self.call(self.peer.__aenter__())
        self.call(self.peer.ok("login", token=token))
        self.count = 0

    def call(self, coroutine, timeout=30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def exchange(self, frame):
        """Send one fuzzed frame and a sentinel; the replies in between."""
        self.count += 1
        sentinel = f"sentinel-{self.count}"
        await self.peer.ws.send(frame)  # bytes go as a binary frame
        await self.peer.send_frame({"type": "whoami", "ref": sentinel})
        replies = []
        while True:
            reply = await self.peer.first(lambda f: f.get("type") in ("ok", "error"), timeout=10, what="a reply")
            if reply.get("ref") == sentinel:
                return replies, reply
            replies.append(reply)

    def close(self):
        self.call(self.peer.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def remote():
    server = Server(CHAT_CONNECTION_RATE=0, CHAT_RATE_LIMIT_COUNT=0).start()
    fuzzer = make_user("fuzzer")
    make_user("alice")
    connection = Remote(server.url, accounts.session_create(user=fuzzer))
    yield server, connection
    connection.close()
    server.stop()


def test_every_frame_gets_one_reply_and_memory_comes_back(remote):
    server, connection = remote

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(frame=frames)
    def one_frame(frame):
        replies, sentinel = connection.call(connection.exchange(frame))
        assert len(replies) == 1, (frame, replies)
        assert replies[0]["type"] == "ok" or replies[0]["code"] and replies[0]["message"], replies
        assert sentinel["type"] == "ok" and sentinel["username"] == "fuzzer", sentinel
        connection.peer.kept.clear()  # events (a broadcast to oneself, receipts) are not replies

    for _ in range(200):  # warm up: caches, the interpreter's pools
        connection.call(connection.exchange('{"type": "online"}'))
    before = rss(server.proc.pid)
    one_frame()
    connection.call(asyncio.sleep(1))
    after = rss(server.proc.pid)
    assert after - before < 15 * MiB, f"the server grew {(after - before) / MiB:.0f} MiB"
    assert connection.call(connection.peer.ok("online"))["users"] == ["fuzzer"]
