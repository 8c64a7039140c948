"""The chat page's store (static/chat/store.js) on its own, in headless
Chromium with no server: what the page knows and how it changes, which
the page's modules read and change only through the store's methods.
What the page shows is tested against a server in test_browser*.py."""

from pathlib import Path

import pytest

from . import test_browser as chat_browser

browser = chat_browser.browser  # the fixture: one Chromium for the module

pytestmark = pytest.mark.browser
STATIC = Path(__file__).resolve().parent.parent / "static"
ORIGIN = "http://page.test"

# Runs before each snippet: `Store`, `EVERYONE`, `roomKey`, and `saved`, a
# stand-in for localStorage whose `values` the snippet can read.
PRELUDE = """
const { Store, EVERYONE, roomKey } = await import("/static/chat/store.js");
const values = {};
const saved = { get: (name, fallback) => (name in values ? values[name] : fallback), set: (n, v) => (values[n] = v) };
const msg = (id, from, fields = {}) => ({ id, from, to: from === "me" ? "bob" : "me", kind: "private",
  body: `m${id}`, sent_at: "2026-03-01T08:00:00Z", ...fields });
"""


@pytest.fixture
def run(browser):
    """`run(js)`: the value of the snippet's `return`, after PRELUDE, on a
    blank page of its own origin that serves static/ from disk."""
    context = browser.new_context()
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def serve(route):
        path = route.request.url.removeprefix(ORIGIN)
        if path.startswith("/static/"):
            route.fulfill(path=STATIC / path.removeprefix("/static/"), content_type="text/javascript")
        else:
            route.fulfill(body="<!doctype html><title>store</title>", content_type="text/html")

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")

    def evaluate(js):
        return page.evaluate(f"async () => {{ {PRELUDE}\n{js} }}")

    yield evaluate
    context.close()
    assert errors == []


def test_a_message_is_shown_once_and_a_deleted_one_stays_away(run):
    assert run("""
        const store = new Store("me", saved);
        const first = store.received(msg(5, "bob"));
        const again = store.received(msg(5, "bob"));
        store.removed(6);
        const overtaken = store.received(msg(6, "bob"));
        return [first.c.key, first.known, again, overtaken, [...store.conv("bob").messages.keys()]];
    """) == ["bob", False, None, None, [5]]


def test_what_a_list_reply_counted_is_not_counted_again(run):
    assert run("""
        const store = new Store("me", saved);
        store.received(msg(7, "bob"));  // pushed before the list reply arrived
        const c = store.listed("bob", msg(5, "bob"), 2);  // 2 unread up to #5
        const counted = store.received(msg(4, "bob")).known;  // a waiting one, pushed after
        const unread = c.unread;
        const upTo = c.read();
        return [unread, counted, upTo, c.unread, c.read()];
    """) == [3, True, 7, 0, 0]


def test_the_session_flags_change_together(run):
    assert run("""
        const store = new Store("me", saved);
        const seen = [];
        const look = () => seen.push([store.live, store.stopped, store.elsewhere, store.inactive, store.presenceKnown]);
        store.setPeople(["bob"], []);
        store.loggedIn(); look();
        store.socketClosed(); look();  // who is online is not known offline
        store.openElsewhere(); look();
        store.loggedIn(); store.replaced(); look();
        store.restart(); store.loggedIn(); store.ended("reconnect"); look();
        store.ended("login"); look();
        return seen;
    """) == [
        [True, False, False, False, True],
        [False, False, False, False, False],
        [False, False, True, True, False],
        [False, True, False, True, False],
        [False, False, False, False, False],
        [False, True, False, False, False],
    ]


def test_reactions_edits_and_deletions_change_what_is_loaded(run):
    assert run("""
        const store = new Store("me", saved);
        store.received(msg(5, "bob"));
        store.reacted({ id: 5, emoji: "👍", by: "bob", on: true });
        store.reacted({ id: 5, emoji: "🎉", by: "me", on: true });
        store.reacted({ id: 5, emoji: "👍", by: "bob", on: false });  // keeps its place, empty
        const reactions = store.find(5).messages.get(5).reactions;
        store.edited({ id: 5, body: "changed", edited_at: "2026-03-01T08:01:00Z" });
        const body = store.find(5).messages.get(5).body;
        store.conv("bob").unseen(5, false);
        const unread = store.conv("bob").unread;
        store.removed(5);
        return [Object.entries(reactions), body, unread, store.conv("bob").unread, store.find(5),
                store.reacted({ id: 9, emoji: "👍", by: "bob", on: true })];
    """) == [[["👍", []], ["🎉", ["me"]]], "changed", 1, 0, None, None]


def test_typing_is_told_at_most_every_three_seconds_and_stops_once(run):
    assert run("""
        const store = new Store("me", saved);
        return [store.myTyping("bob", true, 0), store.myTyping("bob", true, 2000),
                store.myTyping("bob", true, 3500), store.myTyping("bob", false, 4000),
                store.myTyping("bob", false, 4100), store.myTyping(roomKey(7), true, 4200)];
    """) == [True, False, True, True, False, True]


def test_drafts_are_kept_and_listed_after_a_reload(run):
    assert run("""
        const store = new Store("me", saved);
        store.setDraft("carol", "half a thought");
        store.setDraft("bob", "x");
        store.setDraft("bob", "");
        const reloaded = new Store("me", saved);
        return [values.drafts, [...reloaded.convs.keys()], reloaded.drafts.carol];
    """) == [{"carol": "half a thought"}, ["*", "carol"], "half a thought"]


def test_work_on_its_way_is_done_once(run):
    assert run("""
        const store = new Store("me", saved);
        let started = 0, fired = [];
        const slow = () => { started += 1; return new Promise((done) => setTimeout(done, 20)); };
        const one = store.once("earlier", slow), two = store.once("earlier", slow);
        const busy = store.busy("earlier");
        await one;
        store.later("note", 10, () => fired.push("first"));
        store.later("note", 10, () => fired.push("second"));  // instead of the first
        store.later("gone", 10, () => fired.push("gone"));
        store.cancel("gone");
        await new Promise((done) => setTimeout(done, 40));
        await store.once("earlier", slow);
        return [one === two, busy, store.busy("earlier"), started, fired, store.due("note")];
    """) == [True, True, False, 2, ["second"], False]


def test_presence_frames_alone_keep_the_people_list_and_an_hour_ends_recent(run):
    """The page no longer fetches `online` and `recent` after each change
    (each is everyone online): the frames keep the list, and someone last
    seen over an hour ago leaves it, as `recent` would say."""
    assert run("""
        const store = new Store("me", saved);
        store.setPeople(["me", "ann"], [
            { username: "ann", online: true, last_seen: "2026-03-01T08:00:00Z" },
            { username: "bob", online: false, last_seen: "2026-03-01T07:30:00Z" },
        ]);
        const at = (iso) => store.people(Date.parse(iso)).map((p) => `${p.username}:${p.online}`);
        const before = at("2026-03-01T08:00:00Z");
        store.presence(["cat"], ["ann"], "2026-03-01T08:10:00Z");
        const after = at("2026-03-01T08:20:00Z");
        const later = at("2026-03-01T09:05:00Z");
        return { before, after, later };
    """) == {
        "before": ["ann:true", "bob:false"],
        "after": ["cat:true", "ann:false", "bob:false"],
        "later": ["cat:true", "ann:false"],
    }


def test_recent_is_judged_by_the_servers_clock_not_the_browsers(run):
    """A browser whose clock is 50 minutes ahead of the server's: someone
    the server saw 30 minutes ago is still "recent" and shown as seen 30
    minutes ago, and a presence frame is stamped with the server's time."""
    assert run("""
        const { lastSeen } = await import("/static/chat/format.js");
        const t = Date.now();
        const iso = (ms) => new Date(ms).toISOString();
        const server = t - 50 * 60000;  // the server's "now"
        const store = new Store("me", saved);
        store.setPeople(["me"], [
            { username: "bob", online: false, last_seen: iso(server - 30 * 60000) },
            { username: "cat", online: false, last_seen: iso(server - 70 * 60000) },
            { username: "me", online: true, last_seen: iso(server) },
        ], t);
        const names = store.people().map((p) => p.username);
        const bob = lastSeen(store.recent.get("bob").last_seen, store.serverNow());
        store.presence(["dan"], []);
        const stamp = Date.parse(store.recent.get("dan").last_seen);
        return { names, bob, stamped: Math.abs(stamp - (Date.now() - 50 * 60000)) < 5000 };
    """) == {"names": ["bob"], "bob": "last seen 30 min ago", "stamped": True}
