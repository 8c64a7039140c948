"""The chat page in a real headless Chromium (Debian's), against a real server.

One browser for the module; each test gets fresh contexts (cookies and
localStorage of their own) and the module's server (conftest.py) on a test
database emptied after each test. Screenshots of the main states go to
test-artifacts/ (ignored by git), in light and dark, at 1280x800 and
390x844. axe-core (tests/vendor) checks the main states for serious and
critical accessibility problems.
"""

import asyncio
import datetime
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import chromium_path, need
from .helpers import PASSWORD
from .servers import Peer, Server

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
TIMEOUT = 10_000
# The chat socket's address, for page.route_web_socket.
CHAT_SOCKET = re.compile(r"/ws/chat/(\?.*)?$")
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
LONG_NAME = ("a_really_long_username_for_layout_testing_1234567890" * 3)[:150]


@pytest.fixture(scope="module")
def browser():
    """One Chromium for this module; closed after it, since Playwright's sync
    API keeps an event loop running in this thread while it is open."""
    path = chromium_path()
    need(path is not None, "Chromium (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "Playwright for Python")
    # The database is flushed between tests while that loop runs.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


# --- Helpers --------------------------------------------------------------------------------


def expect(*args):
    """Playwright's expect (imported late: Playwright may be missing, and then the tests skip)."""
    from playwright.sync_api import expect as expect_

    expect_.set_options(timeout=TIMEOUT)
    return expect_(*args)


def run_async(coroutine):
    """Run a coroutine beside Playwright's sync API, which owns this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="module")
def password_hash():
    """PASSWORD hashed once, the way the suite's servers hash (MD5:
    tests/servers.py)."""
    from django.contrib.auth.hashers import MD5PasswordHasher

    hasher = MD5PasswordHasher()
    return hasher.encode(PASSWORD, hasher.salt())


@pytest.fixture
def accounts(password_hash, transactional_db):
    """`accounts("alice", ...)`: users with PASSWORD, made in the test
    database the servers use (signing up is tested by itself)."""

    def make(*names):
        from django.contrib.auth import get_user_model

        for name in names:
            get_user_model().objects.create(username=name, password=password_hash)

    return make


def peer_sends(server, sender, to, *bodies, read_by_recipient=False):
    """`sender` sends the bodies from a protocol client (to None: to everyone).
    With read_by_recipient, the recipient got and read them elsewhere, so
    only history has them. Returns their ids."""

    async def go():
        async with Peer(server.url) as peer:
            await peer.ok("login", username=sender, password=PASSWORD)
            if to is None:
                ids = [(await peer.ok("broadcast", body=body))["id"] for body in bodies]
            else:
                ids = [(await peer.ok("send", to=to, body=body))["id"] for body in bodies]
        if read_by_recipient:
            async with Peer(server.url) as peer:
                await peer.ok("login", username=to, password=PASSWORD)
                await peer.ok("ack", ids=ids)
                await peer.ok("read", **{"with": sender, "up_to": ids[-1]})
        return ids

    return run_async(go())


def stored_bodies(sender, to=None):
    """What `sender` sent to `to` (None: to everyone), as the database has it."""
    from messaging.models import Message

    sent = Message.objects.filter(sender__username=sender, deleted_at__isnull=True)
    sent = sent.filter(recipient__username=to) if to else sent.filter(kind="broadcast")
    return list(sent.order_by("id").values_list("body", flat=True))


def shot(page, name, full_page=False):
    """A screenshot to look at, test-artifacts/NAME.png. Taken by one half of
    `make test` only (the other sets TEST_SCREENSHOTS=0): both would write
    the same files, and PNGs of every state cost the browser real CPU."""
    if os.environ.get("TEST_SCREENSHOTS", "1") == "0":
        return
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def axe(page, state):
    """No serious or critical axe-core violation in this state of the page."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=str(AXE))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [
        {"rule": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == [], f"{state}: {json.dumps(bad, indent=1)}"


def no_horizontal_scroll(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def within_screen(page, selector):
    box = page.locator(selector).bounding_box()
    width = page.viewport_size["width"]
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


def focused(page):
    """The focused element's HTML, or None when focus fell to the page body."""
    return page.evaluate("document.activeElement === document.body ? null : document.activeElement.outerHTML")


def wait_for_text(page, element_id, text):
    expect(page.locator(f"#{element_id}")).to_have_text(text)


def scroll_top(page):
    return page.evaluate("document.getElementById('messages').scrollTop")


def visible_in_messages(page, selector):
    """Whether the element is within the visible part of the message list."""
    return page.locator(selector).evaluate(
        """node => {
            const box = document.getElementById('messages').getBoundingClientRect();
            const r = node.getBoundingClientRect();
            return r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
        }"""
    )


# --- Fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def page_errors():
    """Script errors of every page a test opens; none is allowed."""
    errors = []
    yield errors
    assert errors == []


@pytest.fixture
def new_page(browser, page_errors):
    """`new_page(viewport, color_scheme=...)`: a page in a fresh context
    (cookies and storage of its own), closed after the test."""
    contexts = []

    def new(viewport=None, color_scheme="light", **options):
        context = browser.new_context(viewport=viewport or WIDE, color_scheme=color_scheme, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT)
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        return page

    yield new
    for context in contexts:
        context.close()


@pytest.fixture
def make_server(transactional_db):
    """`make_server(SETTING=value, ...)`: a server with other settings."""
    servers = []

    def make(**env):
        servers.append(Server(**env).start())
        return servers[-1]

    yield make
    for srv in servers:
        srv.stop()


def log_in(page, server, username, password=PASSWORD):
    page.goto(server.http + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#status[data-state=online]")
    return page


def session_cookie(username, server):
    """A logged-in Django session, as the login form would leave it."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": server.http}


@pytest.fixture
def open_page(new_page, request):
    """`open_page("alice")`: a logged-in chat page in a context of its own,
    on the test's `server` unless another is given, its chat socket through
    `route` if one is. It starts from a session cookie: the login form is
    tested by itself."""

    def open_(username, viewport=None, server=None, route=None, **options):
        server = server or request.getfixturevalue("server")
        page = new_page(viewport, **options)
        if route is not None:  # Playwright's WebSocketRoute handler, for the chat socket
            page.route_web_socket(CHAT_SOCKET, route)
        page.context.add_cookies([session_cookie(username, server)])
        page.goto(server.http + "/")
        page.wait_for_selector("#status[data-state=online]")
        return page

    return open_


def open_chat(page, name):
    page.fill("#new-chat-name", name)
    page.press("#new-chat-name", "Enter")
    page.wait_for_selector(f"#conv-title:text-is('{name}')")


def say(page, text):
    page.fill("#body", text)
    page.press("#body", "Enter")


def last_message(page):
    return page.locator("#message-list .msg").last


# --- Talking ------------------------------------------------------------------------------------


def test_two_users_chat_live(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    open_chat(alice, "bob")
    say(alice, "Hi Bob!")
    bob.wait_for_selector(".conv-item[data-key=alice] .badge:text-is('1')")
    assert bob.title() == "(1) Chat"
    item = bob.locator(".conv-item[data-key=alice]")
    assert item.locator(".preview").inner_text() == "Hi Bob!"
    assert item.locator(".conv-time").inner_text() != ""
    item.click()
    bob.wait_for_selector(".msg .body:text-is('Hi Bob!')")
    assert bob.title() == "Chat"
    say(bob, "Hello Alice,\nhow are you?")
    alice.wait_for_selector(".msg .body:has-text('how are you?')")
    assert "Hello Alice,\nhow are you?" == last_message(alice).locator(".body").inner_text()
    assert alice.locator(".conv-item[data-key=bob] .preview").inner_text() == "Hello Alice, how are you?"
    assert bob.locator(".conv-item[data-key=alice] .preview").inner_text() == "You: Hello Alice, how are you?"
    # Shift+Enter is a new line, not a send.
    alice.fill("#body", "line one")
    alice.press("#body", "Shift+Enter")
    alice.keyboard.type("line two")
    assert alice.input_value("#body") == "line one\nline two"
    shot(alice, "chat-private")


def test_messages_group_by_sender_and_day_in_bubbles_of_their_own_width(accounts, server, open_page):
    accounts("alice", "bob")
    peer_sends(server, "alice", "bob", "three days ago", "still then")
    from messaging.models import Message

    Message.objects.update(sent_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3))
    peer_sends(server, "alice", "bob", "today", "and again", "and once more")
    bob = open_page("bob")
    bob.click(".conv-item[data-key=alice]")
    bob.wait_for_selector(".msg .body:text-is('and once more')")
    days = bob.locator("#message-list .day").all_inner_texts()
    assert len(days) == 2 and days[1] == "Today" and days[0] not in ("Today", "Yesterday")
    continued = {
        body: bob.locator(".msg", has=bob.locator(f".body:text-is('{body}')")).get_attribute("class")
        for body in ("three days ago", "still then", "today", "and again", "and once more")
    }
    assert [("continued" in c) for c in continued.values()] == [False, True, False, True, True]
    # The sender's name shows once per group, and short messages get short bubbles.
    shown_names = "[...document.querySelectorAll('.msg .from')].filter(f => f.getBoundingClientRect().width > 2)"
    assert bob.evaluate(f"{shown_names}.length") == 2
    bubble = bob.locator(".msg:has(.body:text-is('and again')) .bubble").bounding_box()
    assert bubble["width"] < bob.locator("#message-list").bounding_box()["width"] / 3
    shot(bob, "chat-groups")


def test_conversation_opens_at_the_first_unread_below_a_divider(accounts, server, open_page):
    accounts("alice", "bob")
    ids = peer_sends(server, "alice", "bob", *[f"message {i}" for i in range(50)])
    run_async(_read_up_to(server, "bob", "alice", ids[9]))
    bob = open_page("bob")
    bob.wait_for_selector(".conv-item[data-key=alice] .badge:text-is('40')")
    assert bob.title() == "(40) Chat"
    assert bob.get_attribute("#favicon", "href").endswith("/favicon-9plus.svg")
    bob.click(".conv-item[data-key=alice]")
    divider = ".msg:has(.body:text-is('message 10')) .divider"
    bob.wait_for_selector(divider)
    assert bob.locator(".divider").count() == 1
    assert visible_in_messages(bob, divider)
    assert not visible_in_messages(bob, ".msg:has(.body:text-is('message 49'))")
    # Unread until seen: scrolling to the end reads them.
    assert bob.title() == "(40) Chat"
    shot(bob, "chat-unread-divider")
    bob.locator("#messages").evaluate("box => box.scrollTop = box.scrollHeight")
    expect(bob).to_have_title("Chat")
    assert bob.locator(".conv-item[data-key=alice] .badge").is_hidden()
    assert bob.get_attribute("#favicon", "href").endswith("/favicon.svg")


async def _read_up_to(server, user, peer, up_to):
    async with Peer(server.url) as session:
        await session.ok("login", username=user, password=PASSWORD)
        await session.ok("read", **{"with": peer, "up_to": up_to})


def test_offline_user_sees_what_waited_marked(accounts, server, open_page):
    accounts("alice", "bob")
    alice = open_page("alice")
    open_chat(alice, "bob")
    say(alice, "while you were away")
    alice.wait_for_selector(".msg.mine .ticks[data-state=sent][title*='gets it at their next login']")
    bob = open_page("bob")
    bob.wait_for_selector(".conv-item[data-key=alice] .badge")
    bob.click(".conv-item[data-key=alice]")
    message = bob.locator(".msg", has_text="while you were away")
    message.locator(".tag:text('waited while you were offline')").wait_for()
    shot(bob, "chat-waited")
    # Alice's ticks follow: read now (it said "sent" while bob was away).
    alice.wait_for_selector(".msg.mine .ticks[data-state=read][title=Read]")


def test_broadcast_reaches_two_others(accounts, server, open_page):
    accounts("alice", "bob", "carol")
    alice, bob, carol = open_page("alice"), open_page("bob"), open_page("carol")
    say(alice, "Hello everyone")
    for page in (bob, carol):
        page.wait_for_selector("#message-list .msg .body:text-is('Hello everyone')")
        assert page.locator("#conv-title").inner_text() == "Everyone"
    alice.wait_for_selector(".msg.mine .note:text-is('2 people got it now.')")


def test_links_are_clickable_and_markup_stays_text(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    bob.evaluate("window.pwned = false")
    payloads = [
        "<script>window.pwned = true</script>",
        '<img src=x onerror="window.pwned = true">',
        "see https://example.com/wiki/Foo_(bar)?q=1, or javascript:window.pwned=true (http://x.test/a).",
    ]
    for payload in payloads:
        say(alice, payload)
    for payload in payloads:
        bob.locator("#message-list .body", has_text=payload).wait_for()
    assert bob.evaluate("window.pwned") is False
    assert bob.locator("#message-list img").count() == 0
    links = bob.locator("#message-list .body a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
        "https://example.com/wiki/Foo_(bar)?q=1",
        "http://x.test/a",
    ]
    for i in range(links.count()):
        assert links.nth(i).get_attribute("rel") == "noopener noreferrer"


@pytest.mark.parametrize(("viewport", "scheme"), [(WIDE, "light"), (PHONE, "dark")], ids=["1280-light", "390-dark"])
def test_markdown_as_people_type_it(accounts, server, open_page, viewport, scheme):
    """Issue 24.9: *bold*, **bold**, _italic_, `code`, fenced blocks and
    quotes are shown as such, and nothing else: no HTML, heading, list,
    image or markdown link; links as before; bodies stay isolated."""
    accounts("alice", "bob")
    alice = open_page("alice", viewport=viewport, color_scheme=scheme)
    bob = open_page("bob", viewport=viewport, color_scheme="light" if scheme == "dark" else "dark")
    bob.evaluate("window.pwned = false")
    bodies = [
        "*bold* and **also bold**, _italic_ and `x < y && <b>`",
        "```\nfor i in range(3):\n    print('<i>')\n```",
        "> quoted\nreply under it",
        "# not a heading\n- not a list\n![img](http://x.test/a.png) [see](javascript:window.pwned=true)",
        '<img src=x onerror="window.pwned = true"> https://example.com/a_b_c',
        "שלום *עולם*",
    ]
    open_chat(alice, "bob")
    for body in bodies:
        say(alice, body)
    bob.click(".conv-item[data-key=alice]")
    expect(bob.locator("#message-list .msg")).to_have_count(len(bodies))
    msgs = bob.locator("#message-list .msg .body")
    first = msgs.nth(0)
    assert first.locator("strong").all_inner_texts() == ["bold", "also bold"]
    assert first.locator("em").all_inner_texts() == ["italic"]
    assert first.locator("code").inner_text() == "x < y && <b>"
    assert first.inner_text() == "bold and also bold, italic and x < y && <b>"
    assert msgs.nth(1).locator("pre code").inner_text() == "for i in range(3):\n    print('<i>')"
    assert msgs.nth(2).locator("blockquote").inner_text() == "quoted\nreply under it"
    plain = msgs.nth(3)
    assert plain.locator("h1, ul, li, img").count() == 0
    assert (
        plain.inner_text()
        == "# not a heading\n- not a list\n![img](http://x.test/a.png) [see](javascript:window.pwned=true)"
    )
    assert [plain.locator("a").nth(i).get_attribute("href") for i in range(plain.locator("a").count())] == [
        "http://x.test/a.png"
    ]
    assert msgs.nth(4).locator("img").count() == 0
    assert msgs.nth(4).locator("a").get_attribute("href") == "https://example.com/a_b_c"
    rtl = msgs.nth(5)
    assert rtl.locator("strong").inner_text() == "עולם"
    assert rtl.evaluate("n => getComputedStyle(n).direction") == "rtl"
    assert rtl.evaluate("n => getComputedStyle(n).unicodeBidi") == "isolate"
    assert bob.evaluate("window.pwned") is False
    shot(bob, f"chat-markdown-{viewport['width']}-{'light' if scheme == 'dark' else 'dark'}")
    shot(alice, f"chat-markdown-{viewport['width']}-{scheme}")


def test_direction_controls_reorder_no_link_and_nothing_around_them(accounts, server, open_page):
    """U+202E RIGHT-TO-LEFT OVERRIDE made "https://a.b/\u202egnp.exe" show as
    a link to ".../exe.png", in the conversation and the sidebar. Every body
    and name is now shown isolated, and a link shows its direction controls
    (as U+FFFD) and reads left to right."""
    accounts("alice", "bob")
    bob = open_page("bob")
    peer_sends(server, "alice", "bob", "see https://a.b/\u202egnp.exe \u202eton")
    bob.click(".conv-item[data-key=alice]")
    body = bob.locator("#message-list .msg .body").last
    body.locator("a").wait_for()
    link = body.locator("a")
    assert link.inner_text() == "https://a.b/\ufffdgnp.exe"
    assert link.get_attribute("href") == "https://a.b/%E2%80%AEgnp.exe"
    style = "e => [getComputedStyle(e).unicodeBidi, getComputedStyle(e).direction]"
    assert link.evaluate(style) == ["isolate", "ltr"]
    # The letters of the link's text go left to right on the screen.
    xs = link.evaluate(
        """a => [...a.textContent].map((_, i) => {
            const r = document.createRange();
            r.setStart(a.firstChild, i);
            r.setEnd(a.firstChild, i + 1);
            return r.getBoundingClientRect().left;
        })"""
    )
    assert xs == sorted(xs)
    # So do they in the sidebar's preview, where the link is plain text.
    preview = bob.locator(".conv-item[data-key=alice] .preview")
    assert "https://a.b/\ufffdgnp.exe" in preview.inner_text()
    g_then_x = preview.evaluate(
        """p => {
            const node = p.firstChild, text = node.textContent;
            const left = (i) => {
                const r = document.createRange();
                r.setStart(node, i);
                r.setEnd(node, i + 1);
                return r.getBoundingClientRect().left;
            };
            return [left(text.indexOf("gnp")), left(text.indexOf(".exe") + 1)];
        }"""
    )
    assert g_then_x[0] < g_then_x[1]
    isolated = {
        "the body": body,
        "the sender's name": bob.locator("#message-list .msg .from").last,
        "the conversation's name": bob.locator(".conv-item[data-key=alice] .conv-name"),
        "the preview": bob.locator(".conv-item[data-key=alice] .preview"),
        "the title": bob.locator("#conv-title"),
        "my name": bob.locator(".topbar .me"),
    }
    for what, element in isolated.items():
        assert element.evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate", what
    shot(bob, "bidi-controls-isolated")


# --- Defects of issue 12, each failing on the page before it ----------------------------------------


def test_long_username_keeps_the_page_on_screen(accounts, server, open_page):
    accounts("alice", LONG_NAME)
    wide = open_page("alice")
    open_chat(wide, LONG_NAME)
    assert no_horizontal_scroll(wide)
    for selector in ("#send", "#logout", "#block-toggle"):
        assert within_screen(wide, selector), selector
    shot(wide, "long-name-1280")
    phone = open_page(LONG_NAME, viewport=PHONE)
    assert no_horizontal_scroll(phone)
    open_chat(phone, "alice")
    assert no_horizontal_scroll(phone)
    for selector in ("#send", "#block-toggle", "#logout"):
        assert within_screen(phone, selector), selector
    shot(phone, "long-name-390")


def test_incoming_message_leaves_the_reader_where_they_are(accounts, server, open_page):
    accounts("alice", "bob")
    peer_sends(server, "alice", "bob", *[f"message {i}" for i in range(40)], read_by_recipient=True)
    bob = open_page("bob")
    bob.click(".conv-item[data-key=alice]")
    bob.wait_for_selector("#message-list .body:text-is('message 39')")
    body = bob.locator("#message-list .body:text-is('message 20')")
    body.scroll_into_view_if_needed()
    body.evaluate("b => getSelection().selectAllChildren(b)")
    before = scroll_top(bob)
    peer_sends(server, "alice", "bob", "are you there?")
    bob.wait_for_selector("#new-pill:text-is('1 new message ↓')")
    assert scroll_top(bob) == before
    assert bob.evaluate("getSelection().toString()") == "message 20"
    assert bob.title() == "(1) Chat"  # not read while out of sight
    shot(bob, "chat-new-messages-pill")
    bob.click("#new-pill")
    assert visible_in_messages(bob, ".msg:has(.body:text-is('are you there?'))")
    expect(bob).to_have_title("Chat")
    assert bob.locator("#new-pill").is_hidden()


def test_send_while_offline_is_queued_and_sent_once_after_reconnect(accounts, server, open_page):
    accounts("alice", "bob")
    alice = open_page("alice")
    open_chat(alice, "bob")
    say(alice, "before")
    alice.wait_for_selector(".msg.mine[data-id] .body:text-is('before')")
    server.stop()
    alice.wait_for_selector("#status[data-state=offline]")
    say(alice, "while offline")
    alice.wait_for_selector(".msg.pending .body:text-is('while offline')")
    assert alice.locator(".msg.mine").count() == 2
    assert alice.locator(".send-error").count() == 0
    assert alice.inner_text("#outbox-note") == "1 message goes out when you are back online."
    shot(alice, "chat-offline-queued")
    server.start()
    alice.wait_for_selector(".msg.mine[data-id]:has(.body:text-is('while offline'))", timeout=20_000)
    assert alice.locator(".msg.mine").count() == 2
    assert alice.locator("#outbox-note").is_hidden()
    assert stored_bodies("alice", "bob") == ["before", "while offline"]


@pytest.mark.parametrize(
    ("viewport", "scheme"),
    [(WIDE, "light"), (WIDE, "dark"), (PHONE, "light"), (PHONE, "dark")],
    ids=["1280-light", "1280-dark", "390-light", "390-dark"],
)
def test_the_window_not_in_use_says_so_and_loses_nothing(accounts, server, open_page, viewport, scheme):
    """Issue 24.2: the replaced window said "Log in first." when a
    conversation was opened, and took messages it could not send. Now its
    composer is off, with the draft kept, and says how to use it here."""
    accounts("alice", "bob")
    first = open_page("alice", viewport=viewport, color_scheme=scheme)
    open_chat(first, "bob")
    first.fill("#body", "half written")
    second = first.context.new_page()
    second.set_default_timeout(TIMEOUT)
    second.goto(server.http + "/")
    # The window that is not in use, from the start: off, and saying why.
    if viewport is PHONE:
        second.click(".conv-item[data-key='*']")
    expect(second.locator("#body")).to_be_disabled()
    expect(second.locator("#inactive-note")).to_be_visible()
    second.click("#inactive-use-here")
    second.wait_for_selector("#status[data-state=online]")
    expect(second.locator("#body")).to_be_enabled()
    # Replaced: the draft stays, nothing can be sent or queued from here.
    first.wait_for_selector("#banner:has-text('Chat is open in another window')")
    expect(first.locator("#body")).to_be_disabled()
    assert first.input_value("#body") == "half written"
    assert first.locator("#send").is_disabled()
    if viewport is PHONE:
        first.click("#back")
    first.fill("#new-chat-name", "bob")
    first.press("#new-chat-name", "Enter")
    expect(first.locator("#new-chat-error")).to_have_text("Chat is open in another window: use it here first.")
    assert first.get_by_text("Log in first").count() == 0
    if viewport is PHONE:
        first.click(".conv-item[data-key=bob]")
    shot(first, f"chat-inactive-window-{viewport['width']}-{scheme}")
    first.click("#inactive-use-here")
    first.wait_for_selector("#status[data-state=online]")
    first.press("#body", "Enter")
    first.wait_for_selector(".msg.mine[data-id] .body:text-is('half written')")
    assert stored_bodies("alice", "bob") == ["half written"]
    expect(second.locator("#body")).to_be_disabled()


def test_welcome_after_signup_shows_on_the_chat_page_only(server, new_page):
    page = new_page()
    page.goto(server.http + "/accounts/signup/")
    page.fill("#id_username", "carol")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#status[data-state=online]")
    assert page.get_by_text("Welcome, carol!").is_visible()
    shot(page, "chat-welcome")
    page.click("#notice-close")
    assert page.get_by_text("Welcome, carol!").count() == 0
    page.click("#logout")
    page.wait_for_url("**/accounts/login/")
    assert page.get_by_text("Welcome").count() == 0


def test_small_things_a_user_found(accounts, server, new_page, open_page):
    """Issue 24.7: times, www links, the password rules, logging out, the
    search dialog before a query, meta descriptions."""
    accounts("alice", "bob")
    page = new_page()
    for path in ("/accounts/login/", "/accounts/signup/"):
        page.goto(server.http + path)
        assert len(page.get_attribute("meta[name=description]", "content")) > 20
    # The rules before any try, not only after a failure.
    assert page.get_by_text("At least 8 characters").is_visible()
    shot(page, "signup-rules")
    alice = open_page("alice")
    assert len(alice.get_attribute("meta[name=description]", "content")) > 20
    # The locale's time, without a leading zero in 12-hour style.
    clock = "import('/static/chat/format.js').then(m => m.clock('2026-03-01T08:14:00'))"
    assert alice.evaluate(clock) in ("8:14 AM", "8:14\u202fAM")
    open_chat(alice, "bob")
    say(alice, "see www.example.com. or https://x.test")
    link = alice.locator(".msg.mine[data-id] .body a").first
    expect(link).to_have_attribute("href", "https://www.example.com/")
    assert link.inner_text() == "www.example.com"
    # The search dialog: no empty "Messages" heading before a query, and
    # one close button (the native clear button of a search box is off).
    alice.keyboard.press("Control+k")
    assert alice.locator("#search-messages-heading").is_hidden()
    alice.keyboard.type("see")  # a word on both stacks (PostgreSQL reads www.example.com as one)
    expect(alice.locator("#search-messages .result")).to_have_count(1)
    assert alice.locator("#search-messages-heading").is_visible()
    # Where the native clear button was, a click clears nothing.
    box = alice.locator("#search-input").bounding_box()
    alice.mouse.click(box["x"] + box["width"] - 14, box["y"] + box["height"] / 2)
    assert alice.input_value("#search-input") == "see"
    shot(alice, "chat-search-one-close-button")
    # An emoji is found, and marked (issue 24.6).
    alice.fill("#search-input", "🎉")
    expect(alice.locator("#search-status")).to_have_text("No message has these words.")
    alice.click("#search-close")
    say(alice, "done 🎉")
    alice.keyboard.press("Control+k")
    alice.fill("#search-input", "🎉")
    expect(alice.locator("#search-messages .result mark")).to_have_text("🎉")
    alice.click("#search-close")
    alice.click("#logout")
    alice.wait_for_url("**/accounts/login/")
    assert alice.get_by_text("You are logged out.").is_visible()
    shot(alice, "login-logged-out")


@pytest.mark.parametrize(
    ("viewport", "scheme"),
    [(WIDE, "light"), (WIDE, "dark"), (PHONE, "light"), (PHONE, "dark")],
    ids=["1280-light", "1280-dark", "390-light", "390-dark"],
)
def test_the_login_signup_and_search_states_fit(accounts, server, new_page, viewport, scheme):
    """Issue 24.5 and 24.7 at both widths and in both themes: the password
    rules, the warning before the lock, "logged out", the search dialog
    before a query; screenshots of each."""
    accounts("alice")
    name = f"{viewport['width']}-{scheme}"
    page = new_page(viewport, color_scheme=scheme)
    page.goto(server.http + "/accounts/signup/")
    assert within_screen(page, ".help >> nth=0") and no_horizontal_scroll(page)
    shot(page, f"signup-rules-{name}")
    page.goto(server.http + "/accounts/login/")
    for _ in range(2):
        page.fill("#id_username", "alice")
        page.fill("#id_password", "wrong")
        page.click("button[type=submit]")
    expect(page.get_by_text("One more wrong password locks this name for a minute.")).to_be_visible()
    assert no_horizontal_scroll(page)
    shot(page, f"login-one-more-locks-{name}")
    log_in(page, server, "alice")
    page.keyboard.press("Control+k")
    assert page.locator("#search-messages-heading").is_hidden()
    assert within_screen(page, "#search-close")
    shot(page, f"chat-search-empty-{name}")
    page.click("#search-close")
    page.click("#logout")
    page.wait_for_url("**/accounts/login/")
    expect(page.get_by_text("You are logged out.")).to_be_visible()
    shot(page, f"login-logged-out-{name}")


def test_draft_stays_with_its_conversation(accounts, server, open_page):
    accounts("alice", "bob")
    alice = open_page("alice")
    open_chat(alice, "bob")
    alice.fill("#body", "only for bob")
    alice.click(".conv-item[data-key='*']")
    alice.wait_for_selector("#conv-title:text-is('Everyone')")
    assert alice.input_value("#body") == ""
    alice.press("#body", "Enter")
    alice.click(".conv-item[data-key=bob]")
    alice.wait_for_selector("#conv-title:text-is('bob')")
    assert alice.input_value("#body") == "only for bob"
    alice.reload()  # drafts outlive a reload
    alice.wait_for_selector("#status[data-state=online]")
    alice.click(".conv-item[data-key=bob]")
    assert alice.input_value("#body") == "only for bob"
    assert stored_bodies("alice") == []


def test_right_to_left_text_is_laid_out_right_to_left(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    open_chat(alice, "bob")
    say(alice, "שלום, מה שלומך?")
    bob.click(".conv-item[data-key=alice]")
    body = bob.locator(".msg .body:text-is('שלום, מה שלומך?')")
    body.wait_for()
    assert body.evaluate("b => getComputedStyle(b).direction") == "rtl"
    assert bob.locator(".conv-item[data-key=alice] .preview").evaluate("p => getComputedStyle(p).direction") == "rtl"
    assert bob.locator("#body").get_attribute("dir") == "auto"


def test_focus_is_kept_when_lists_change(accounts, server, open_page):
    accounts("alice", "bob", "carol")
    bob = open_page("bob")
    open_chat(bob, "alice")
    bob.click("#block-toggle")
    bob.wait_for_selector("#blocked button:text('Unblock')")
    bob.focus(".conv-item[data-key='*']")
    bob.keyboard.press("Enter")
    bob.wait_for_selector("#conv-title:text-is('Everyone')")
    assert focused(bob) is not None
    bob.focus("#blocked button:text('Unblock')")
    bob.keyboard.press("Enter")
    bob.wait_for_selector("#blocked button:text('Unblock')", state="detached")
    assert focused(bob) is not None
    carol = open_page("carol")
    bob.wait_for_selector(".person[data-name=carol]")
    bob.focus(".person[data-name=carol]")
    open_page("alice")
    bob.wait_for_selector(".person.online[data-name=alice]")
    assert 'data-name="carol"' in (focused(bob) or "")
    carol.close()
    bob.wait_for_selector(".person:not(.online)[data-name=carol]")
    assert 'data-name="carol"' in (focused(bob) or "")


def test_too_long_message_stays_in_the_composer(accounts, server, open_page):
    accounts("alice", "bob")
    alice = open_page("alice")
    open_chat(alice, "bob")
    alice.fill("#body", "x" * 3990)
    assert alice.inner_text("#counter") == "10 characters left"
    alice.fill("#body", "x" * 4001)
    assert alice.inner_text("#counter").startswith("1 character too many")
    alice.press("#body", "Enter")
    assert alice.input_value("#body") == "x" * 4001
    assert alice.locator("#message-list .msg").count() == 0
    assert alice.locator("#send").is_disabled()
    shot(alice, "chat-too-long")
    # The limit is in characters, as the server counts them: 4,000 emoji
    # fit, and so does white space the server trims.
    alice.fill("#body", "  " + "😀" * 4000 + "\n")
    assert alice.locator("#send").is_enabled()
    alice.press("#body", "Enter")
    alice.wait_for_selector(".msg.mine[data-id]")
    assert alice.locator("#message-list button:text('Retry')").count() == 0
    assert [len(body) for body in stored_bodies("alice", "bob")] == [4000]


def test_block_stops_delivery_and_unblock_restores_it(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    open_chat(bob, "alice")
    bob.click("#block-toggle")
    bob.wait_for_selector("#blocked .blocked-item:has-text('alice')")
    assert bob.get_attribute("#block-toggle", "aria-label") == "Unblock alice"
    open_chat(alice, "bob")
    say(alice, "can you hear me?")
    alice.wait_for_selector(".send-error:has-text('does not accept your messages')")
    # Nothing to retry: it cannot succeed. Edit puts it back in the text box.
    assert alice.locator(".send-error button").all_inner_texts() == ["Edit", "Discard"]
    shot(alice, "chat-send-blocked")
    alice.click(".send-error button:text('Edit')")
    assert alice.input_value("#body") == "can you hear me?"
    assert alice.locator(".send-error").count() == 0
    bob.click("#blocked button:text('Unblock')")
    bob.wait_for_selector("#blocked-empty:visible")
    alice.press("#body", "Enter")
    bob.wait_for_selector(".msg .body:text-is('can you hear me?')")
    assert stored_bodies("alice", "bob") == ["can you hear me?"]


def test_people_list_updates_live(accounts, server, open_page):
    accounts("alice", "bob")
    alice = open_page("alice")
    assert alice.locator("#people .person").count() == 0
    # What alice's page asks from now on: the frames alone keep the list
    # (each `online` or `recent` is everyone online: N² in a login storm).
    alice.evaluate(
        """() => { window.asked = []; const send = WebSocket.prototype.send;
        WebSocket.prototype.send = function (d) { window.asked.push(JSON.parse(d).type); return send.call(this, d); }; }"""
    )
    bob = open_page("bob")
    alice.wait_for_selector("#people .person.online[data-name=bob]:has-text('online')")
    assert alice.inner_text("#online-count") == "1 online"
    assert alice.inner_text("#conv-presence") == "1 online"
    bob.close()
    alice.wait_for_selector("#people .person:not(.online)[data-name=bob]:has-text('last seen just now')")
    assert alice.locator("#people .person").count() == 1
    alice.wait_for_timeout(2000)  # the page used to ask both lists 1.5 s after each change
    assert not {"online", "recent"} & set(alice.evaluate("window.asked"))
    shot(alice, "chat-presence")
    alice.click("#people .person[data-name=bob]")
    alice.wait_for_selector("#conv-title:text-is('bob')")
    assert alice.inner_text("#conv-presence") == "last seen just now"


def page_with_presence_to_inject(open_page, username):
    """`username`'s chat page, and `inject(frame)`, which sends a frame to
    the page as if from the server: once the page has had its own `online`
    and `recent` answers, so what is injected comes after them, not before."""
    routes, lists = [], []  # lists: the answers to `online` and `recent`

    def route(ws):
        upstream = ws.connect_to_server()

        def to_page(message):
            if '"users"' in message:
                lists.append(message)
            ws.send(message)

        upstream.on_message(to_page)
        ws.on_message(upstream.send)
        routes.append(ws)

    page = open_page(username, route=route)
    for _ in range(TIMEOUT // 50):
        if len(lists) >= 2:
            break
        page.wait_for_timeout(50)
    assert len(lists) >= 2
    return page, lambda frame: routes[-1].send(json.dumps(frame))


def test_a_crowd_online_lists_the_first_two_hundred_and_counts_the_rest(accounts, server, open_page):
    """At 250 people online the list shows 200 (online first, by name) and
    says how many more; the count says all of them."""
    accounts("alice")
    alice, inject = page_with_presence_to_inject(open_page, "alice")
    crowd = [f"user{i:03}" for i in range(250)]
    inject({"type": "presence_batch", "online": crowd, "offline": []})
    expect(alice.locator("#online-count")).to_have_text("250 online")
    expect(alice.locator("#people .person")).to_have_count(200)
    assert alice.locator("#people .person").first.get_attribute("data-name") == "user000"
    assert alice.locator("#people .person").last.get_attribute("data-name") == "user199"
    expect(alice.locator("#people-more")).to_have_text("and 50 more: type a name above to write to them")
    inject({"type": "presence_batch", "online": [], "offline": crowd[:100]})
    expect(alice.locator("#online-count")).to_have_text("150 online")
    # The 100 gone offline are still people of the last hour: listed after those online.
    expect(alice.locator("#people .person.online")).to_have_count(150)
    expect(alice.locator("#people-more")).to_have_text("and 50 more: type a name above to write to them")
    shot(alice, "chat-people-crowd")


def test_message_someone_suggests_the_names_that_start_with_what_is_typed(accounts, server, open_page):
    """In a crowd, "Message someone…" suggests 50 names at most: with
    nothing typed the first people listed, then those that start with what
    is typed, in any case, past the people list's 200 too. A presence batch
    that changes none of them leaves the options alone, so a login storm
    does not build thousands of options every few seconds."""
    accounts("alice")
    alice, inject = page_with_presence_to_inject(open_page, "alice")
    crowd = [f"user{i:03}" for i in range(250)]
    inject({"type": "presence_batch", "online": crowd, "offline": []})
    expect(alice.locator("#online-count")).to_have_text("250 online")
    options = alice.locator("#known-users option")

    def offered():
        return options.evaluate_all("nodes => nodes.map(n => n.value)")

    assert offered() == crowd[:50]
    alice.locator("#new-chat-name").press_sequentially("User24")  # each key's input event refills them
    assert offered() == crowd[240:]
    shot(alice, "chat-message-someone-suggests")
    # Marked and watched, the options of a batch that changes no suggestion.
    alice.evaluate(
        """() => { const list = document.getElementById('known-users');
        list.firstElementChild.marked = true; window.changes = 0;
        new MutationObserver((records) => (window.changes += records.length))
          .observe(list, { childList: true, subtree: true, attributes: true }); }"""
    )
    inject({"type": "presence_batch", "online": [], "offline": crowd[:100]})
    expect(alice.locator("#online-count")).to_have_text("150 online")
    assert alice.evaluate("window.changes") == 0
    assert alice.evaluate("document.getElementById('known-users').firstElementChild.marked") is True
    # One of them gone: still suggested (seen in the last hour), after those online.
    inject({"type": "presence_batch", "online": [], "offline": ["user240"]})
    expect(alice.locator("#online-count")).to_have_text("149 online")
    assert offered() == crowd[241:] + ["user240"]
    alice.fill("#new-chat-name", "")
    assert offered() == crowd[100:150]


def test_lockout_counts_down_once_and_lets_the_person_try_again(accounts, make_server, new_page):
    server = make_server(LOGIN_LOCKOUT_SECONDS=4)
    accounts("alice")
    page = new_page()
    page.goto(server.http + "/accounts/login/")
    for tries, password in enumerate(("wrong", "wrong", "wrong", PASSWORD), 1):
        page.fill("#id_username", "alice")
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        # Issue 24.5: said after the second failure, before the lock bites.
        warned = page.get_by_text("One more wrong password locks this name for 4 seconds.")
        assert warned.count() == (1 if tries == 2 else 0)
        if tries == 2:
            shot(page, "login-one-more-locks")
    # One line, counting down.
    expect(page.locator("#lock-countdown")).to_have_text(
        re.compile(r"Too many login attempts\. Try again in [1-3] seconds?\.")
    )
    assert page.get_by_text("Try again").count() == 1
    assert page.locator("button[type=submit]").is_disabled()
    shot(page, "login-locked")
    page.wait_for_selector("button[type=submit]:enabled", timeout=6000)
    assert page.inner_text("#lock-countdown") == "You can try again now."
    # Good news, not shown as an error (issue 24.5).
    assert "form-error" not in page.get_attribute("#lock-countdown", "class")
    assert page.evaluate("getComputedStyle(document.getElementById('lock-countdown')).color") == "rgb(6, 118, 71)"
    shot(page, "login-try-again")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#status[data-state=online]")


def test_takeover(accounts, server, open_page):
    accounts("alice")
    first = open_page("alice")
    second = first.context.new_page()
    second.set_default_timeout(TIMEOUT)
    second.goto(server.http + "/")
    second.wait_for_selector("#banner:has-text('Chat is open in another window')")
    shot(second, "chat-open-elsewhere")
    second.click("#banner-action:text('Use here')")
    second.wait_for_selector("#status[data-state=online]")
    first.wait_for_selector("#banner:has-text('Chat is open in another window')")
    first.click("#banner-action")
    first.wait_for_selector("#status[data-state=online]")
    second.wait_for_selector("#banner:visible")


def test_reconnects_after_the_server_restarts(accounts, server, open_page):
    accounts("alice", "bob")
    bob = open_page("bob")
    server.stop()
    bob.wait_for_selector("#status[data-state=offline]")
    shot(bob, "chat-reconnecting")
    server.start()
    bob.wait_for_selector("#status[data-state=online]", timeout=20_000)
    peer_sends(server, "alice", None, "after the restart")
    bob.wait_for_selector("#message-list .body:text-is('after the restart')")
    assert bob.locator("#message-list .body:text-is('after the restart')").count() == 1


def test_back_within_seconds_of_the_server_and_retry_now(accounts, server, open_page):
    """Issue 24.1: after a long outage the backoff used to wait up to 30 s
    more; it is capped at 5 s now, and "Retry now" skips the wait."""
    accounts("alice")
    alice = open_page("alice")
    # The longest wait the countdown announces.
    alice.evaluate(
        """window.longest = 0; new MutationObserver(() => {
            const n = Number(/in (\\d+) s/.exec(document.getElementById('status-detail').textContent)?.[1]);
            if (n > window.longest) window.longest = n;
        }).observe(document.getElementById('status'), {subtree: true, childList: true, characterData: true})"""
    )
    server.stop()
    alice.wait_for_selector("#status[data-state=offline]")
    time.sleep(16)  # five failed tries: the old backoff's next wait was 16 s
    server.start()
    began = time.monotonic()
    alice.wait_for_selector("#status[data-state=online]", timeout=20_000)
    assert time.monotonic() - began < 8
    assert 3 <= alice.evaluate("window.longest") <= 5
    # Offline again: while a try is seconds away, the button tries at once.
    server.stop()
    expect(alice.locator("#status-detail")).to_have_text(re.compile(r"reconnecting in [3-5] s"), timeout=20_000)
    shot(alice, "chat-offline-retry-now-1280")
    with alice.expect_websocket(timeout=1500):
        alice.click("#retry-now")
    server.start()
    alice.wait_for_selector("#status[data-state=online]", timeout=20_000)
    assert alice.locator("#retry-now").is_hidden()


def test_offline_shows_presence_as_unknown(accounts, server, open_page):
    """Issue 24.3: offline, the page kept showing others online."""
    accounts("alice", "bob", "carol", "dave", "erin")
    open_page("bob")  # online, as the others see
    pages = {
        "1280-light": open_page("alice"),
        "1280-dark": open_page("carol", color_scheme="dark"),
        "390-light": open_page("dave", viewport=PHONE),
        "390-dark": open_page("erin", viewport=PHONE, color_scheme="dark"),
    }
    for page in pages.values():
        page.wait_for_selector("#people .person.online[data-name=bob]")
    server.stop()
    for name, page in pages.items():
        page.wait_for_selector("#status[data-state=offline]")
        expect(page.locator("#people .person.unknown[data-name=bob] .seen")).to_have_text("unknown")
        assert page.locator("#people .person.online, .dot.on").count() == 0
        assert page.inner_text("#online-count") == "unknown while offline"
        expect(page.locator("#retry-now")).to_be_visible()
        shot(page, f"chat-offline-{name}")
    wide = pages["1280-light"]
    assert wide.inner_text("#conv-presence") == "who is online is unknown while offline"
    server.start()
    wide.wait_for_selector("#people .person.online[data-name=bob]", timeout=20_000)
    assert wide.locator("#people .person.unknown").count() == 0


def test_an_ended_session_reconnects_or_asks_to_log_in_as_the_server_says(accounts, server, open_page):
    from django.contrib.sessions.models import Session

    from messaging.models import Presence

    accounts("alice", "bob")
    bob = open_page("bob")
    # Its presence gone (as when the heartbeat expired): "reconnect", by itself.
    with bob.expect_websocket(timeout=15_000):
        Presence.objects.filter(user__username="bob").delete()
    bob.wait_for_selector("#status[data-state=online]")
    assert bob.locator("#banner").is_hidden()
    peer_sends(server, "alice", "bob", "still there?")
    bob.wait_for_selector(".conv-item[data-key=alice] .badge:text-is('1')")
    # Its session logged out elsewhere: "login", which the person is asked to do.
    Session.objects.all().delete()
    bob.wait_for_selector("#banner:has-text('log in again')")
    shot(bob, "chat-session-ended")
    bob.click("#banner-action:text('Log in again')")
    bob.wait_for_url("**/accounts/login/**")


def test_narrow_screen_and_keyboard(accounts, server, open_page):
    accounts("alice", "bob")
    page = open_page("alice", viewport=PHONE)
    assert page.locator("#sidebar").is_visible() and not page.locator("#conversation").is_visible()
    # Keyboard only: to the Everyone conversation, then write.
    page.focus(".conv-item[data-key='*']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#conversation:visible")
    assert not page.locator("#sidebar").is_visible()
    assert page.evaluate("document.activeElement.id") == "body"
    page.keyboard.type("from my phone")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.mine[data-id] .body:text-is('from my phone')")
    assert no_horizontal_scroll(page)
    shot(page, "chat-phone")
    page.click("#back")
    assert page.locator("#sidebar").is_visible()
    assert page.evaluate("document.activeElement.dataset.key") == "*"
    shot(page, "chat-phone-list")


def test_the_header_says_who_is_logged_in_and_centres_its_icons(accounts, server, open_page):
    """Issue 24.7: at 390 px nothing said who was logged in, and the bell of
    "Notify me" sat 2 px above the middle of its button."""
    accounts("alice")
    for viewport, scheme in ((PHONE, "light"), (PHONE, "dark"), (WIDE, "light"), (WIDE, "dark")):
        page = open_page("alice", viewport=viewport, color_scheme=scheme)
        who = page.locator("#account-link .narrow-me" if viewport is PHONE else ".topbar .me")
        expect(who).to_have_text("alice")
        assert who.is_visible() and within_screen(page, "#logout")
        assert page.locator(".topbar").bounding_box()["height"] < 56  # one row
        button = page.locator("#enable-notifications")
        if button.is_visible():
            bell, box = button.locator("svg").bounding_box(), button.bounding_box()
            assert abs((bell["y"] + bell["height"] / 2) - (box["y"] + box["height"] / 2)) <= 0.75
        shot(page, f"chat-header-{viewport['width']}-{scheme}")
        page.close()


def test_older_history_loads_as_the_reader_scrolls_up(accounts, make_server, open_page):
    server = make_server(CHAT_RATE_LIMIT_COUNT=1000)
    accounts("alice", "bob")
    peer_sends(server, "alice", "bob", *[f"message {i}" for i in range(120)], read_by_recipient=True)
    bob = open_page("bob", server=server)
    bob.click(".conv-item[data-key=alice]")
    bob.wait_for_selector("#message-list .body:text-is('message 119')")
    assert bob.locator("#message-list .msg").count() == 50
    bob.locator("#messages").evaluate("box => box.scrollTop = 0")
    expect(bob.locator("#message-list .msg")).to_have_count(100)
    # The view stays on what was read, not on the newly loaded top.
    assert visible_in_messages(bob, ".msg:has(.body:text-is('message 70'))")
    bob.click("#load-earlier")  # the same by button, for the keyboard
    bob.wait_for_selector("#message-list .body:text-is('message 0')")
    assert bob.locator("#message-list .msg").count() == 120
    assert bob.locator("#load-earlier").is_hidden()


def test_log_out_ends_the_chat_session(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    alice.wait_for_selector("#people .person.online[data-name=bob]")
    bob.click("#logout")
    bob.wait_for_url("**/accounts/login/")
    alice.wait_for_selector("#people .person:not(.online)[data-name=bob]")
    bob.goto(server.http + "/")
    assert "/accounts/login/" in bob.url


def test_admin_user_list_shows_every_column_at_1280(server, new_page):
    from django.contrib.auth import get_user_model

    User = get_user_model()
    User.objects.create(username="admin", is_staff=True, is_superuser=True)
    User.objects.bulk_create(User(username=f"user{i}") for i in range(5))
    page = new_page()
    page.context.add_cookies([session_cookie("admin", server)])
    page.goto(server.http + "/admin/accounts/user/")
    results = page.locator("#changelist .results")
    assert results.evaluate("r => r.scrollWidth <= r.clientWidth")
    assert page.locator("#result_list thead th").last.is_visible()
    shot(page, "admin-users-1280")


# --- The outbox -------------------------------------------------------------------------------------


def test_fast_sends_wait_their_turn_and_arrive_once_even_across_a_reload(accounts, make_server, open_page):
    server = make_server(CHAT_RATE_LIMIT_COUNT=3, CHAT_RATE_LIMIT_SECONDS=2)
    accounts("alice", "bob")
    alice = open_page("alice", server=server)
    open_chat(alice, "bob")
    bodies = [f"fast {i}" for i in range(8)]
    for body in bodies:
        say(alice, body)
    alice.wait_for_selector("#outbox-note:has-text('You are sending fast: the next message goes in')")
    assert alice.locator(".send-error").count() == 0
    shot(alice, "chat-rate-limited")
    alice.reload()
    alice.wait_for_selector("#status[data-state=online]")
    alice.click(".conv-item[data-key=bob]")
    alice.wait_for_selector(".msg.mine[data-id] .body:text-is('fast 7')", timeout=15_000)
    assert alice.locator(".msg.pending").count() == 0
    assert alice.locator(".msg.mine[data-id]").all_inner_texts() == alice.locator(".msg.mine").all_inner_texts()
    assert stored_bodies("alice", "bob") == bodies


def test_an_answer_lost_with_the_connection_still_sends_exactly_once(accounts, server, open_page):
    """The reply to a send is lost as the connection drops: the page sends it
    again after reconnecting, with the same client_id, and the server stores
    it once."""
    accounts("alice", "bob")
    alice = open_page("alice")
    dropped = []

    def route(ws):
        upstream = ws.connect_to_server()

        def to_page(message):
            frame = json.loads(message)
            if not dropped and frame.get("type") == "ok" and "delivered" in frame:
                dropped.append(frame)
                upstream.close()
                ws.close()
            else:
                ws.send(message)

        upstream.on_message(to_page)
        ws.on_message(upstream.send)

    alice.route_web_socket(CHAT_SOCKET, route)
    alice.reload()
    alice.wait_for_selector("#status[data-state=online]")
    open_chat(alice, "bob")
    say(alice, "exactly once")
    alice.wait_for_selector("#status[data-state=offline]")
    alice.wait_for_selector(".msg.mine[data-id] .body:text-is('exactly once')", timeout=20_000)
    assert len(dropped) == 1
    assert alice.locator(".msg.mine").count() == 1
    assert stored_bodies("alice", "bob") == ["exactly once"]


def test_waiting_messages_pushed_after_the_conversation_list_count_once(accounts, server, open_page):
    """The conversation list already counts the unread messages still
    pending; when their pushes come after the list (held back here to make
    sure they do), they are not counted again."""
    accounts("alice", "bob")
    ids = peer_sends(server, "alice", "bob", "read elsewhere", "waiting for you", "and me")
    run_async(_read_up_to(server, "bob", "alice", ids[0]))  # read, not acked: pushed again
    held, acks, listed, after_list = [], [], [], []

    def route(ws):
        upstream = ws.connect_to_server()

        def to_page(message):
            frame = json.loads(message)
            if frame.get("type") == "message":
                if not listed:
                    held.append(message)  # until the conversation list is there
                    return
                after_list.append(message)
            ws.send(message)
            if frame.get("type") == "ok" and "conversations" in frame:
                listed.append(frame)
                after_list.extend(held)
                for pushed in held:
                    ws.send(pushed)

        def to_server(message):
            frame = json.loads(message)
            if frame.get("type") == "ack":
                acks.extend(frame["ids"])
            upstream.send(message)

        upstream.on_message(to_page)
        ws.on_message(to_server)

    bob = open_page("bob", route=route)
    for _ in range(100):  # until the page has taken in (and acked) all three
        if len(set(acks)) == 3:
            break
        bob.wait_for_timeout(50)
    assert len(after_list) == 3 and set(acks) == set(ids)
    assert bob.title() == "(2) Chat"
    assert bob.inner_text(".conv-item[data-key=alice] .badge") == "2"


# --- Protocol 1.1 in the page -------------------------------------------------------------------


def test_ticks_and_typing_between_two_people(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    open_chat(bob, "alice")
    open_chat(alice, "bob")
    alice.focus("#body")
    alice.keyboard.type("are you th")
    expect(bob.locator("#conv-presence")).to_have_text("typing…")
    shot(bob, "chat-typing")
    bob.click(".conv-item[data-key='*']")
    expect(bob.locator(".conv-item[data-key=alice] .preview")).to_have_text("typing…")
    alice.keyboard.type("ere?")
    alice.keyboard.press("Enter")
    bob.wait_for_selector(".conv-item[data-key=alice] .badge:text-is('1')")
    assert bob.inner_text(".conv-item[data-key=alice] .preview") == "are you there?"
    alice.wait_for_selector(".msg.mine .ticks[data-state=delivered]")
    bob.click(".conv-item[data-key=alice]")
    alice.wait_for_selector(".msg.mine .ticks[data-state=read]")
    expect(bob.locator("#conv-presence")).to_have_text("online")
    shot(alice, "chat-read")


def test_edit_and_delete_ones_own_messages(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    open_chat(bob, "alice")
    open_chat(alice, "bob")
    say(alice, "frist try")
    say(alice, "to be deleted")
    bob.wait_for_selector(".msg .body:text-is('to be deleted')")
    # Keyboard: to the first message with the arrows, E edits it.
    alice.focus("#messages")
    alice.keyboard.press("ArrowUp")
    alice.keyboard.press("ArrowUp")
    # On the message itself (still in the outbox or already confirmed: the
    # confirmed message keeps the focus its outbox entry had).
    expect(alice.locator(".msg.mine:not(.pending):has(.body:text-is('frist try'))")).to_be_focused()
    alice.keyboard.press("e")
    expect(alice.locator(".edit-box")).to_be_focused()
    alice.keyboard.press("Control+a")
    alice.keyboard.type("first try")
    shot(alice, "chat-editing")
    alice.keyboard.press("Enter")
    alice.wait_for_selector(".msg.mine:has(.body:text-is('first try')) .edited-label")
    bob.wait_for_selector(".msg:has(.body:text-is('first try')) .edited-label")
    # Mouse: hover, the bin, then confirm.
    last = alice.locator(".msg.mine").last
    last.hover()
    last.locator("[data-action=delete]").click()
    last.locator(".confirm button:text('Delete')").click()
    alice.wait_for_selector(".msg .body:text-is('to be deleted')", state="detached")
    bob.wait_for_selector(".msg .body:text-is('to be deleted')", state="detached")
    assert focused(alice) is not None
    assert bob.inner_text(".conv-item[data-key=alice] .preview") == "first try"
    # Up in the empty text box edits the last one.
    alice.focus("#body")
    alice.keyboard.press("ArrowUp")
    expect(alice.locator(".edit-box")).to_have_value("first try")
    alice.keyboard.press("Escape")
    assert stored_bodies("alice", "bob") == ["first try"]


def test_a_message_focused_in_the_outbox_keeps_the_focus_once_confirmed(accounts, server, open_page):
    """The arrows reach a message still in the outbox; when the history the
    page asked for comes (held back here) and the conversation is shown
    again, the message keeps the focus; when the server confirms it (its ok
    held back too), the stored message has the focus, so E edits it."""
    accounts("alice", "bob")
    peer_sends(server, "bob", "alice", "before it")
    history, held = [], []  # the request and the ok, with where they go

    def route(ws):
        upstream = ws.connect_to_server()

        def to_page(message):
            frame = json.loads(message)
            if not held and frame.get("type") == "ok" and "delivered" in frame:
                held.append((ws, message))
            else:
                ws.send(message)

        def to_server(message):
            frame = json.loads(message)
            # Not the new-chat box's check that bob exists (limit 1).
            if frame.get("type") == "history" and frame.get("with") == "bob" and frame["limit"] > 1:
                history.append((upstream, message))
            else:
                upstream.send(message)

        upstream.on_message(to_page)
        ws.on_message(to_server)

    alice = open_page("alice", route=route)
    open_chat(alice, "bob")
    say(alice, "still in the outbox")
    outbox = ".msg.mine.pending:has(.body:text-is('still in the outbox'))"
    alice.wait_for_selector(outbox)
    alice.focus("#messages")
    alice.keyboard.press("ArrowUp")
    expect(alice.locator(outbox)).to_be_focused()
    assert len(history) == 1
    upstream, request = history[0]
    upstream.send(request)
    alice.wait_for_selector(".msg .body:text-is('before it')")
    expect(alice.locator(outbox)).to_be_focused()
    for _ in range(TIMEOUT // 50):
        if held:
            break
        alice.wait_for_timeout(50)
    ws, ok = held[0]
    ws.send(ok)
    expect(alice.locator(".msg.mine:not(.pending):has(.body:text-is('still in the outbox'))")).to_be_focused()
    alice.keyboard.press("e")
    expect(alice.locator(".edit-box")).to_have_value("still in the outbox")


# Whether an element's box meets the text of another (its line boxes, not its
# whole box: a bubble's mark sits inside the bubble, beside the text).
MEETS_TEXT = """([a, b]) => {
    const box = a.getBoundingClientRect();
    const range = document.createRange();
    range.selectNodeContents(b);
    return [...range.getClientRects()].some(r =>
        r.width > 0 && r.left < box.right - 0.5 && box.left < r.right - 0.5 &&
        r.top < box.bottom - 0.5 && box.top < r.bottom - 0.5);
}"""
MEETS = """([a, b]) => {
    const x = a.getBoundingClientRect(), y = b.getBoundingClientRect();
    return x.left < y.right && y.left < x.right && x.top < y.bottom && y.top < x.bottom;
}"""


def meets(page, a, b, script=MEETS):
    return page.evaluate(script, [page.locator(a).element_handle(), page.locator(b).element_handle()])


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1280", "390"])
def test_marks_and_buttons_of_ones_own_messages_leave_the_text_alone(accounts, server, open_page, viewport):
    """Issue 24.4: "edited" ran into the text, the ticks sat on the first
    letter of a right-to-left message, the edit and delete buttons covered
    the ticks above and "edited", and "Cancel" the ticks."""
    accounts("alice", "bob")
    peer_sends(server, "bob", "alice", "hi")
    for scheme in ("light", "dark"):
        alice = open_page("alice", viewport=viewport, color_scheme=scheme)
        alice.click(".conv-item[data-key=bob]")
        if scheme == "light":
            for body in ("ok", "typo", "שלום עולם, מה שלומך היום?"):
                say(alice, body)
                alice.wait_for_selector(f".msg.mine[data-id]:has(.body:text-is('{body}'))")
            typo = ".msg.mine:has(.body:text-is('typo'))"
            alice.focus(typo)
            alice.keyboard.press("e")
            alice.fill(".edit-box", "fixed it")
            alice.keyboard.press("Enter")
        edited = ".msg.mine:has(.body:text-is('fixed it'))"
        alice.wait_for_selector(f"{edited} .edited-label")
        hebrew = ".msg.mine:has(.body:text-is('שלום עולם, מה שלומך היום?'))"
        alice.wait_for_selector(f"{hebrew} .ticks")
        assert not meets(alice, f"{edited} .mark", f"{edited} .body", MEETS_TEXT)
        assert not meets(alice, f"{hebrew} .mark", f"{hebrew} .body", MEETS_TEXT)
        # The buttons of the short, edited message, as the mouse shows them.
        alice.hover(f"{edited} .body")
        expect(alice.locator(f"{edited} .actions")).to_be_visible()
        ok = ".msg.mine:has(.body:text-is('ok'))"
        assert not meets(alice, f"{edited} .actions", f"{ok} .mark")
        assert not meets(alice, f"{edited} .actions", f"{edited} .mark")
        assert not meets(alice, f"{edited} .actions", f"{edited} .body", MEETS_TEXT)
        assert no_horizontal_scroll(alice)
        shot(alice, f"chat-own-marks-{viewport['width']}-{scheme}")
        alice.click(f"{edited} [data-action=delete]")
        cancel = f"{edited} .confirm button.secondary"
        expect(alice.locator(cancel)).to_be_visible()
        assert not meets(alice, cancel, f"{edited} .mark")
        shot(alice, f"chat-delete-confirm-{viewport['width']}-{scheme}")
        alice.click(cancel)
        alice.close()


def test_many_unread_open_at_the_divider_with_the_first_header_shown(accounts, make_server, open_page):
    """Issue 24.4: with 320 unread, the view went past the "New" divider and
    cut the first unread message's header."""
    server = make_server(CHAT_RATE_LIMIT_COUNT=1000)
    accounts("alice", "bob")
    peer_sends(server, "alice", "bob", *[f"message {i}" for i in range(320)])
    for viewport, scheme in ((WIDE, "light"), (PHONE, "dark")):
        bob = open_page("bob", server=server, viewport=viewport, color_scheme=scheme)
        bob.wait_for_selector(".conv-item[data-key=alice] .badge:text-is('320')")
        bob.click(".conv-item[data-key=alice]")
        bob.wait_for_selector(".divider")
        bob.wait_for_timeout(500)  # whatever loads or scrolls after opening
        first = ".msg:has(.divider)"
        shot(bob, f"chat-320-unread-{viewport['width']}-{scheme}")
        assert visible_in_messages(bob, ".divider")
        assert visible_in_messages(bob, f"{first} .meta")
        assert bob.inner_text(f"{first} .body") == "message 0"  # above every unread one
        bob.close()


def test_search_people_and_messages_from_the_keyboard(accounts, server, open_page):
    accounts("alice", "bob", "carol")
    peer_sends(server, "bob", "alice", "the quick brown fox", "lunch at noon?", read_by_recipient=True)
    peer_sends(server, "carol", None, "Quick question for everyone")
    alice = open_page("alice", bypass_csp=True)
    alice.keyboard.press("Control+k")
    expect(alice.locator("#search-input")).to_be_focused()
    alice.keyboard.type("quick")
    results = alice.locator("#search-messages .result")
    expect(results).to_have_count(2)
    assert "carol · Everyone" in results.nth(0).inner_text()
    assert results.nth(1).locator(".conv-name").inner_text() == "bob"  # not "bob · bob" (issue 24.6)
    assert results.nth(1).locator("mark").inner_text() == "quick"
    axe(alice, "search open")
    shot(alice, "chat-search")
    alice.keyboard.press("ArrowDown")
    alice.keyboard.press("ArrowDown")
    alice.keyboard.press("Enter")
    alice.wait_for_selector("#conv-title:text-is('bob')")
    expect(alice.locator(".msg:has(.body:text-is('the quick brown fox'))")).to_be_focused()
    # People: "/" opens it too; Enter on a name opens the conversation.
    alice.focus("#messages")
    alice.keyboard.press("/")
    alice.keyboard.press("Control+a")
    alice.keyboard.type("car")
    expect(alice.locator("#search-people .result")).to_have_count(1)
    alice.keyboard.press("ArrowDown")
    alice.keyboard.press("Enter")
    alice.wait_for_selector("#conv-title:text-is('carol')")
    expect(alice.locator("#body")).to_be_focused()


# --- Alerts and accessibility -------------------------------------------------------------------------

COUNT_CHIMES = """
window.chimes = 0;
const createGain = AudioContext.prototype.createGain;
AudioContext.prototype.createGain = function () { window.chimes += 1; return createGain.call(this); };
"""


def test_sound_for_a_message_elsewhere_unless_muted(accounts, server, open_page):
    accounts("alice", "bob")
    bob = open_page("bob")
    bob.context.add_init_script(COUNT_CHIMES)
    bob.reload()
    bob.wait_for_selector("#status[data-state=online]")
    bob.click("#mute")
    assert bob.get_attribute("#mute", "aria-pressed") == "true"
    peer_sends(server, "alice", "bob", "quiet please")
    bob.wait_for_selector(".conv-item[data-key=alice] .badge:text-is('1')")
    assert bob.evaluate("window.chimes") == 0
    bob.reload()  # muted stays muted
    bob.wait_for_selector("#status[data-state=online]")
    assert bob.get_attribute("#mute", "aria-pressed") == "true"
    bob.click("#mute")
    peer_sends(server, "alice", "bob", "now a sound")
    bob.wait_for_selector(".conv-item[data-key=alice] .badge:text-is('2')")
    assert bob.evaluate("window.chimes") == 1
    assert bob.get_attribute("#favicon", "href").endswith("/favicon-2.svg")


def test_screen_readers_hear_new_messages_only(accounts, server, open_page):
    accounts("alice", "bob")
    peer_sends(server, "alice", "bob", "old news", read_by_recipient=True)
    bob = open_page("bob")
    assert bob.locator("#message-list[aria-live], #messages[aria-live]").count() == 0
    peer_sends(server, "alice", "bob", "ping")
    wait_for_text(bob, "announcer", "New message from alice: ping")
    bob.click(".conv-item[data-key=alice]")
    bob.wait_for_selector(".msg .body:text-is('old news')")
    assert bob.inner_text("#announcer") == "New message from alice: ping"
    peer_sends(server, "alice", "bob", "pong")
    wait_for_text(bob, "announcer", "alice: pong")


def test_dark_theme_follows_the_system(accounts, server, open_page):
    accounts("alice", "bob")
    peer_sends(server, "bob", "alice", "evening!")
    alice = open_page("alice", color_scheme="dark")
    background = alice.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 18, 22)"
    alice.click(".conv-item[data-key=bob]")
    say(alice, "good evening")
    alice.wait_for_selector(".msg.mine[data-id]")
    shot(alice, "chat-dark-1280")
    phone = open_page("bob", viewport=PHONE, color_scheme="dark")
    phone.focus(".conv-item[data-key=alice]")
    phone.keyboard.press("Enter")
    phone.wait_for_selector(".msg .body:text-is('good evening')")
    phone.keyboard.press("Shift+Tab")  # keyboard focus, as it shows in the dark
    shot(phone, "chat-dark-390")


def test_no_serious_accessibility_problem_in_the_main_states(accounts, server, new_page, open_page):
    accounts("alice", "bob", "carol")
    peer_sends(server, "bob", "alice", "hello alice", "see https://example.com")
    peer_sends(server, "carol", None, "hi all")
    page = new_page(bypass_csp=True)
    page.goto(server.http + "/accounts/login/")
    axe(page, "login")
    page.goto(server.http + "/accounts/signup/")
    page.click("button[type=submit]")  # with its errors
    axe(page, "signup")
    alice = open_page("alice", bypass_csp=True)
    alice.wait_for_selector(".conv-item[data-key=bob] .badge")
    axe(alice, "chat with conversations")
    alice.click(".conv-item[data-key=bob]")
    say(alice, "hi bob")
    alice.wait_for_selector(".msg.mine[data-id]")
    axe(alice, "a conversation open")
    shot(alice, "chat-1280")
    dark = open_page("bob", color_scheme="dark", bypass_csp=True)
    dark.click(".conv-item[data-key=alice]")
    dark.wait_for_selector(".msg .body:text-is('hi bob')")
    axe(dark, "dark")
    shot(dark, "chat-dark-conversation")
    phone = open_page("carol", viewport=PHONE, bypass_csp=True)
    axe(phone, "390 px, list")
    shot(phone, "chat-390-list")
    phone.click(".conv-item[data-key='*']")
    axe(phone, "390 px, conversation")
    shot(phone, "chat-390-conversation")


def test_a_busy_server_shows_only_connecting(accounts, server, new_page):
    """A server too busy to log the page in just now (a restart's crowd)
    says `unavailable` and closes with 1013: the page reconnects by itself
    and says only that it is connecting, never "Offline"."""
    accounts("alice")
    refused = []

    def route(ws):
        if len(refused) < 2:
            refused.append(ws)
            ws.send(json.dumps({"type": "error", "code": "unavailable", "message": "busy", "retry_after": 1}))
            ws.close(code=1013, reason="busy")
            return
        upstream = ws.connect_to_server()
        upstream.on_message(ws.send)
        ws.on_message(upstream.send)

    page = new_page()
    page.add_init_script(
        """window.states = []; addEventListener('DOMContentLoaded', () => {
            const status = document.getElementById('status');
            new MutationObserver(() => window.states.push(status.dataset.state + ': ' + status.textContent.trim()))
                .observe(status, {subtree: true, childList: true, characterData: true, attributes: true});
        })"""
    )
    page.route_web_socket(CHAT_SOCKET, route)
    page.context.add_cookies([session_cookie("alice", server)])
    page.goto(server.http + "/")
    page.wait_for_selector("#status[data-state=online]", timeout=20_000)
    states = page.evaluate("window.states")
    assert len(refused) == 2
    assert not [s for s in states if "offline" in s.lower()], states
