"""Rooms, replies and reactions (protocol 1.2) in the chat page, in a real
headless Chromium against a real server, with the fixtures of
test_browser.py. Screenshots go to test-artifacts/ (rooms-*.png)."""

import pytest

from . import test_browser as chat_browser
from .test_browser import axe, expect, say, shot

# The chat page's browser fixtures: one Chromium and one server per module.
browser, new_page, page_errors = chat_browser.browser, chat_browser.new_page, chat_browser.page_errors
module_server, server, open_page = chat_browser.module_server, chat_browser.server, chat_browser.open_page
accounts, password_hash = chat_browser.accounts, chat_browser.password_hash

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def create_room(page, name, *members):
    """Create a room from the "New room" dialog, with the mouse."""
    page.click("#room-new")
    expect(page.locator("#room-name")).to_be_focused()
    page.fill("#room-name", name)
    for member in members:
        page.fill("#room-member", member)
        page.click("#room-member-add")
    page.click("#room-create button[type=submit]")
    expect(page.locator("#conv-title")).to_have_text(name)
    return page.locator(".conv-item.is-room", has_text=name)


def room_item(page, name):
    return page.locator(".conv-item.is-room", has_text=name)


def open_room(page, name):
    room_item(page, name).click()
    expect(page.locator("#conv-title")).to_have_text(name)


def stored_room_messages(room_name):
    from messaging.models import Message

    rows = Message.objects.filter(room__name=room_name, deleted_at__isnull=True).order_by("id")
    return list(rows.values_list("sender__username", "body"))


# --- Rooms ------------------------------------------------------------------------------------


def test_create_a_room_and_talk_in_it(accounts, server, open_page):
    accounts("alice", "bob", "carol")
    alice, bob, carol = open_page("alice"), open_page("bob", bypass_csp=True), open_page("carol")
    create_room(alice, "Team ☕", "bob", "carol")
    expect(alice.locator("#conv-presence")).to_have_text("3 members")
    # The others see it in their list at once, with no message yet.
    expect(room_item(bob, "Team ☕").locator(".preview")).to_have_text("No messages yet")
    say(alice, "Welcome to the room!")
    item = room_item(bob, "Team ☕")
    expect(item.locator(".badge")).to_have_text("1")
    expect(item.locator(".preview")).to_have_text("alice: Welcome to the room!")
    assert bob.title() == "(1) Chat"
    open_room(bob, "Team ☕")
    msg = bob.locator(".msg", has_text="Welcome to the room!")
    expect(msg.locator(".from")).to_have_text("alice")
    expect(item.locator(".badge")).to_be_hidden()
    assert bob.title() == "Chat"
    # Typing in a room says who.
    bob.focus("#body")
    bob.keyboard.type("hello every")
    expect(alice.locator("#conv-presence")).to_have_text("bob is typing…")
    expect(room_item(carol, "Team ☕").locator(".preview")).to_have_text("bob is typing…")
    bob.keyboard.type("one")
    bob.keyboard.press("Enter")
    expect(alice.locator(".msg", has_text="hello everyone").locator(".from")).to_have_text("bob")
    expect(room_item(carol, "Team ☕").locator(".badge")).to_have_text("2")
    # Reading it (opening it) sends `read` with the room: the count stays 0 after a reload.
    open_room(carol, "Team ☕")
    expect(carol.locator(".msg .from", has_text="bob")).to_be_visible()
    expect(room_item(carol, "Team ☕").locator(".badge")).to_be_hidden()
    carol.reload()
    carol.wait_for_selector("#status[data-state=online]")
    expect(room_item(carol, "Team ☕").locator(".preview")).to_have_text("bob: hello everyone")
    expect(room_item(carol, "Team ☕").locator(".badge")).to_be_hidden()
    assert stored_room_messages("Team ☕") == [("alice", "Welcome to the room!"), ("bob", "hello everyone")]
    shot(bob, "rooms-conversation-1280-light")
    axe(bob, "a room conversation")


def test_room_messages_sent_offline_go_once_after_a_reload(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    create_room(alice, "Plans", "bob")
    server.stop()
    alice.wait_for_selector("#status[data-state=offline]")
    say(alice, "queued for the room")
    alice.wait_for_selector(".msg.pending .body:text-is('queued for the room')")
    context = alice.context
    alice.close()
    server.start()
    # The outbox is in this context's localStorage: a new page sends it.
    alice = context.new_page()
    alice.goto(server.http + "/")
    alice.wait_for_selector("#status[data-state=online]")
    bob.wait_for_selector("#status[data-state=online]", timeout=20_000)
    expect(room_item(alice, "Plans").locator(".preview")).to_have_text("You: queued for the room")
    open_room(alice, "Plans")
    expect(alice.locator(".msg .body", has_text="queued for the room")).to_have_count(1)
    assert stored_room_messages("Plans") == [("alice", "queued for the room")]
    expect(room_item(bob, "Plans").locator(".preview")).to_have_text("alice: queued for the room")


def member(page, name):
    return page.locator("#room-members .member", has=page.locator(f"bdi:text-is('{name}')"))


def test_members_are_seen_by_all_and_managed_by_admins(accounts, server, open_page):
    accounts("alice", "bob", "carol")
    alice, bob, carol = open_page("alice"), open_page("bob"), open_page("carol")
    create_room(alice, "Crew", "bob")
    # bob is a member, not an admin: he sees who is in it, and can leave.
    open_room(bob, "Crew")
    bob.click("#members-open")
    expect(bob.locator("#room-panel-title")).to_have_text("Crew: 2 members")
    expect(member(bob, "alice").locator(".member-tags")).to_have_text("admin")
    expect(member(bob, "bob").locator(".member-tags")).to_have_text("you")
    expect(bob.locator("#room-add")).to_be_hidden()
    expect(bob.locator("#room-rename")).to_be_hidden()
    expect(bob.locator("#room-members button")).to_have_count(0)
    expect(bob.locator("#room-leave")).to_be_visible()
    # alice, an admin, adds carol with the keyboard.
    alice.click("#members-open")
    expect(alice.locator("#room-add-name")).to_be_focused()
    alice.keyboard.type("carol")
    alice.keyboard.press("Enter")
    expect(member(alice, "carol")).to_be_visible()
    expect(room_item(carol, "Crew")).to_be_visible()
    expect(bob.locator("#room-panel-title")).to_have_text("Crew: 3 members")
    expect(member(bob, "carol")).to_be_visible()
    shot(alice, "rooms-members-1280-light")
    # She makes bob an admin: his panel offers the admin's tools at once.
    member(alice, "bob").get_by_role("button", name="Make admin: bob").click()
    expect(member(alice, "bob").locator(".member-tags")).to_have_text("admin")
    expect(bob.locator("#room-add")).to_be_visible()
    expect(member(bob, "carol").get_by_role("button", name="Remove carol from the room")).to_be_visible()
    member(alice, "bob").get_by_role("button", name="Remove admin rights of bob").click()
    expect(bob.locator("#room-add")).to_be_hidden()
    # Rename: every member's list and header follow.
    alice.fill("#room-rename-name", "Crew 2")
    alice.click("#room-rename button[type=submit]")
    expect(room_item(carol, "Crew 2")).to_be_visible()
    expect(bob.locator("#conv-title")).to_have_text("Crew 2")
    # Remove carol: the room leaves her list.
    member(alice, "carol").get_by_role("button", name="Remove carol from the room").click()
    expect(room_item(carol, "Crew 2")).to_have_count(0)
    expect(member(alice, "carol")).to_have_count(0)
    # bob leaves (after saying yes): gone from his list, alice's count follows.
    bob.once("dialog", lambda d: d.accept())
    bob.click("#room-leave")
    expect(room_item(bob, "Crew 2")).to_have_count(0)
    expect(bob.locator("#conv-title")).to_have_text("Everyone")
    expect(alice.locator("#room-panel-title")).to_have_text("Crew 2: 1 member")
    alice.keyboard.press("Escape")
    expect(alice.locator("#room-panel")).to_be_hidden()
    expect(alice.locator("#members-open")).to_be_focused()
    expect(alice.locator("#conv-presence")).to_have_text("1 member")
