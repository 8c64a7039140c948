"""The chat page in a real headless Chromium (Debian's), against a real server.

Screenshots of the main states go to test-artifacts/ (ignored by git).
"""

import asyncio
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import chromium_path, need
from .helpers import PASSWORD
from .servers import Peer, signup

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT = 10_000


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
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]



def run_async(coroutine):
    """Run a coroutine beside Playwright's sync API, which owns this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def accounts(server, *names):
    run_async(signup(server.url, *names))


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def open_page(browser, server):
    contexts = []

    def open_(username, password=PASSWORD, viewport=None):
        context = browser.new_context(viewport=viewport or {"width": 1100, "height": 720})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT)
        page.goto(server.http + "/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_selector("#status[data-state=online]")
        return page

    yield open_
    for context in contexts:
        context.close()


def open_chat(page, name):
    page.fill("#new-chat-name", name)
    page.click("#new-chat button[type=submit]")
    page.wait_for_selector(f"#conv-title:text-is('{name}')")


def say(page, text):
    page.fill("#body", text)
    page.press("#body", "Enter")


def last_message(page):
    return page.locator("#message-list .msg").last


def test_two_users_chat_live(server, open_page):
    accounts(server, "alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    open_chat(alice, "bob")
    say(alice, "Hi Bob!")
    bob.wait_for_selector(".conv-item[data-key=alice] .badge:text-is('1')")
    assert bob.title() == "(1) Chat"
    bob.click(".conv-item[data-key=alice]")
    bob.wait_for_selector(".msg .body:text-is('Hi Bob!')")
    assert bob.title() == "Chat"
    say(bob, "Hello Alice,\nhow are you?")
    alice.wait_for_selector(".msg .body:has-text('how are you?')")
    assert "Hello Alice,\nhow are you?" == last_message(alice).locator(".body").inner_text()
    # Shift+Enter is a new line, not a send.
    alice.fill("#body", "line one")
    alice.press("#body", "Shift+Enter")
    alice.keyboard.type("line two")
    assert alice.input_value("#body") == "line one\nline two"
    shot(alice, "chat-private")


def test_offline_user_sees_what_waited_marked(server, open_page):
    accounts(server, "alice", "bob")
    alice = open_page("alice")
    open_chat(alice, "bob")
    say(alice, "while you were away")
    alice.wait_for_selector(".msg .muted:text('will be delivered when they log in')")
    bob = open_page("bob")
    bob.wait_for_selector(".conv-item[data-key=alice] .badge")
    bob.click(".conv-item[data-key=alice]")
    message = bob.locator(".msg", has_text="while you were away")
    message.locator(".tag:text('waited while you were offline')").wait_for()
    shot(bob, "chat-waited")


def test_broadcast_reaches_two_others(server, open_page):
    accounts(server, "alice", "bob", "carol")
    alice, bob, carol = open_page("alice"), open_page("bob"), open_page("carol")
    say(alice, "Hello everyone")
    for page in (bob, carol):
        page.wait_for_selector("#message-list .msg .body:text-is('Hello everyone')")
        assert page.locator("#conv-title").inner_text() == "Everyone"
    alice.wait_for_selector(".msg .muted:text('2 online, 0 later')")


def test_block_stops_delivery_and_unblock_restores_it(server, open_page):
    accounts(server, "alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    open_chat(bob, "alice")
    bob.click("#block-toggle")
    bob.wait_for_selector("#blocked .blocked-item:has-text('alice')")
    assert bob.inner_text("#block-toggle") == "Unblock alice"
    open_chat(alice, "bob")
    say(alice, "can you hear me?")
    alice.wait_for_selector(".send-error:has-text('does not accept your messages')")
    shot(alice, "chat-send-blocked")
    say(alice, "everyone but bob")  # broadcast? no: this conversation is bob's
    bob.click("#blocked button:text('Unblock')")
    bob.wait_for_selector("#blocked-empty:visible")
    say(alice, "and now?")
    bob.wait_for_selector(".msg .body:text-is('and now?')")
    assert bob.locator(".msg .body:text-is('can you hear me?')").count() == 0


def test_online_and_last_hour_lists_update_live(server, open_page):
    accounts(server, "alice", "bob")
    alice = open_page("alice")
    assert alice.locator("#online .person").count() == 0
    bob = open_page("bob")
    alice.wait_for_selector("#online .person:has-text('bob')")
    alice.wait_for_selector("#recent .person:has-text('bob'):has-text('online')")
    bob.close()
    alice.wait_for_selector("#online .person:has-text('bob')", state="detached")
    alice.wait_for_selector("#recent .person:has-text('bob'):has-text('last seen')")
    shot(alice, "chat-presence")


def test_lockout_message(server, browser):
    accounts(server, "alice")
    page = browser.new_page()
    page.goto(server.http + "/accounts/login/")
    for _ in range(3):
        page.fill("#id_username", "alice")
        page.fill("#id_password", "wrong")
        page.click("button[type=submit]")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    text = page.inner_text(".form-error")
    assert re.search(r"Try again in (59|60) seconds", text), text
    page.wait_for_selector("#lock-countdown:has-text('You can try again in')")
    shot(page, "login-locked")
    page.close()


def test_takeover(server, open_page):
    accounts(server, "alice")
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


def test_xss_body_renders_as_text(server, open_page):
    accounts(server, "alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    bob.evaluate("window.pwned = false")
    payloads = ["<script>window.pwned = true</script>", '<img src=x onerror="window.pwned = true">']
    for payload in payloads:
        say(alice, payload)
    for payload in payloads:
        bob.wait_for_selector(f"#message-list .body:text-is('{payload}')")
    assert bob.evaluate("window.pwned") is False
    assert bob.locator("#message-list img").count() == 0


def test_reconnects_after_the_server_restarts(server, open_page):
    accounts(server, "alice", "bob")
    bob = open_page("bob")
    server.stop()
    bob.wait_for_selector("#status[data-state=offline]")
    shot(bob, "chat-reconnecting")
    server.start()
    bob.wait_for_selector("#status[data-state=online]", timeout=20_000)

    async def alice_says():
        async with Peer(server.url) as alice:
            await alice.ok("login", username="alice", password=PASSWORD)
            await alice.ok("broadcast", body="after the restart")

    run_async(alice_says())
    bob.wait_for_selector("#message-list .body:text-is('after the restart')")
    assert bob.locator("#message-list .body:text-is('after the restart')").count() == 1


def test_narrow_screen_and_keyboard(server, open_page):
    accounts(server, "alice", "bob")
    page = open_page("alice", viewport={"width": 390, "height": 760})
    assert page.locator("#sidebar").is_visible()
    page.click(".conv-item[data-key='*']")
    assert page.locator("#conversation").is_visible() and not page.locator("#sidebar").is_visible()
    page.focus("#body")
    page.keyboard.type("from my phone")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.mine .body:text-is('from my phone')")
    shot(page, "chat-phone")
    page.click("#back")
    assert page.locator("#sidebar").is_visible()


def test_load_earlier_pages_back_through_history(server, open_page):
    accounts(server, "alice", "bob")

    async def alice_writes():
        async with Peer(server.url) as alice:
            await alice.ok("login", username="alice", password=PASSWORD)
            ids = [(await alice.ok("send", to="bob", body=f"message {i}"))["id"] for i in range(60)]
        async with Peer(server.url) as bob:  # bob got them all elsewhere: only history has them now
            await bob.ok("login", username="bob", password=PASSWORD)
            await bob.ok("ack", ids=ids)

    run_async(alice_writes())
    bob = open_page("bob")
    bob.click(".conv-item[data-key=alice]")
    bob.wait_for_selector("#message-list .body:text-is('message 59')")
    assert bob.locator("#message-list .msg").count() == 50
    bob.click("#load-earlier")
    bob.wait_for_selector("#message-list .body:text-is('message 0')")
    assert bob.locator("#message-list .msg").count() == 60
    assert bob.locator("#load-earlier").is_hidden()


def test_log_out_ends_the_chat_session(server, open_page):
    accounts(server, "alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    alice.wait_for_selector("#online .person:has-text('bob')")
    bob.click("#logout")
    bob.wait_for_url("**/accounts/login/")
    alice.wait_for_selector("#online .person:has-text('bob')", state="detached")
    bob.goto(server.http + "/")
    assert "/accounts/login/" in bob.url
