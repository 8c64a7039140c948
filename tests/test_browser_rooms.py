"""Rooms, replies and reactions (protocol 1.2) in the chat page, in a real
headless Chromium against a real server, with the fixtures of
test_browser.py. Screenshots go to test-artifacts/ (rooms-*.png)."""

import pytest

from . import test_browser as chat_browser
from .helpers import PASSWORD
from .servers import Peer, Server
from .test_browser import PHONE, WIDE, axe, expect, meets, no_horizontal_scroll, run_async, say, shot, within_screen

# The chat page's browser fixtures: one Chromium and one server per module.
browser, new_page, page_errors = chat_browser.browser, chat_browser.new_page, chat_browser.page_errors
open_page = chat_browser.open_page
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


def two_in_a_room(accounts, open_page, room):
    """alice and bob on their pages, in a room alice just created (open on hers)."""
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    create_room(alice, room, "bob")
    return alice, bob


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
    axe(bob, "a room conversation")
    # Search finds room messages, and opens the room at them.
    bob.click(".conv-item[data-key='*']")
    bob.click("#search-open")
    bob.fill("#search-input", "Welcome")
    result = bob.locator("#search-messages .result")
    expect(result.locator(".conv-name")).to_have_text("alice · Team ☕")
    result.click()
    expect(bob.locator("#conv-title")).to_have_text("Team ☕")
    expect(message(bob, "Welcome to the room!")).to_be_focused()


def test_room_messages_sent_offline_go_once_after_a_reload(accounts, server, open_page):
    alice, bob = two_in_a_room(accounts, open_page, "Plans")
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


def test_create_a_room_with_the_keyboard_alone(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    alice.focus("#room-new")
    alice.keyboard.press("Enter")
    expect(alice.locator("#room-name")).to_be_focused()
    # Enter in an empty member box creates: a room needs a name first.
    alice.keyboard.press("Tab")
    expect(alice.locator("#room-member")).to_be_focused()
    alice.keyboard.press("Enter")
    expect(alice.locator("#room-create-error")).to_have_text("A room needs a name.")
    expect(alice.locator("#room-name")).to_be_focused()
    alice.keyboard.type("Night owls")
    alice.keyboard.press("Tab")
    # An unknown name is refused by the server, and nothing is created.
    alice.keyboard.type("nobody_here")
    alice.keyboard.press("Enter")
    expect(alice.locator("#room-picked .chip")).to_have_count(1)
    alice.keyboard.type("bob")
    alice.keyboard.press("Enter")
    alice.keyboard.press("Enter")
    expect(alice.locator("#room-create-error")).to_contain_text("nobody_here")
    # Take the wrong name back from its chip, with the keyboard.
    alice.get_by_role("button", name="Remove nobody_here").focus()
    alice.keyboard.press("Enter")
    expect(alice.locator("#room-picked .chip")).to_have_count(1)
    expect(alice.locator("#room-member")).to_be_focused()
    alice.keyboard.press("Enter")
    expect(alice.locator("#conv-title")).to_have_text("Night owls")
    expect(alice.locator("#body")).to_be_focused()
    expect(room_item(bob, "Night owls")).to_be_visible()


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


# --- Replies and reactions ------------------------------------------------------------------------


def message(page, body):
    return page.locator("#message-list .msg[data-id]", has=page.locator(f".body:text-is('{body}')"))


def open_private(page, name):
    page.fill("#new-chat-name", name)
    page.press("#new-chat-name", "Enter")
    expect(page.locator("#conv-title")).to_have_text(name)


def test_reply_with_the_mouse_and_the_keyboard_shows_the_quote(accounts, server, open_page):
    alice, bob = two_in_a_room(accounts, open_page, "Quotes")
    open_room(bob, "Quotes")
    say(bob, "the original question")
    for n in range(12):
        say(bob, f"filler {n}")
    expect(message(alice, "filler 11")).to_be_visible()
    # Mouse: the Reply button of bob's message, from its hover toolbar.
    original = message(alice, "the original question")
    original.scroll_into_view_if_needed()
    original.hover()
    original.get_by_role("button", name="Reply (R)").click()
    expect(alice.locator("#replying")).to_contain_text("Replying to bob: the original question")
    expect(alice.locator("#body")).to_be_focused()
    say(alice, "the answer")
    expect(alice.locator("#replying")).to_be_hidden()
    reply = message(bob, "the answer")
    quote = reply.locator(".quote")
    expect(quote.locator(".quote-from")).to_have_text("You")  # bob's own message, to bob
    expect(quote.locator(".quote-text")).to_have_text("the original question")
    expect(message(alice, "the answer").locator(".quote-from")).to_have_text("bob")
    # Above the body.
    assert quote.bounding_box()["y"] < reply.locator(".body").bounding_box()["y"]
    shot(bob, "rooms-reply-1280-light")
    # Clicking the quote brings the original into view, with focus.
    bob.locator("#messages").evaluate("box => box.scrollTop = box.scrollHeight")
    quote.click()
    expect(message(bob, "the original question")).to_be_focused()
    # Keyboard alone, in a private conversation: arrows to a message, R, type, Enter.
    open_private(alice, "bob")
    say(alice, "ping")
    open_private(bob, "alice")
    expect(message(bob, "ping")).to_be_visible()
    bob.focus("#messages")
    bob.keyboard.press("ArrowUp")
    expect(message(bob, "ping")).to_be_focused()
    bob.keyboard.press("r")
    expect(bob.locator("#body")).to_be_focused()
    bob.keyboard.type("pong")
    bob.keyboard.press("Enter")
    expect(message(alice, "pong").locator(".quote")).to_contain_text("ping")
    # Reactions under one's own private message leave its ticks alone.
    for emoji in ("👍", "❤️", "😂", "🎉"):
        message(bob, "ping").hover()
        message(bob, "ping").get_by_role("button", name="React (+)").click()
        message(bob, "ping").get_by_role("button", name=f"React with {emoji}").click()
    ping = ".msg.mine:has(.body:text-is('ping'))"
    expect(alice.locator(f"{ping} .reaction")).to_have_count(4)
    alice.wait_for_selector(f"{ping} .ticks[data-state=read]")
    for i in range(4):
        assert not meets(alice, f"{ping} .reaction >> nth={i}", f"{ping} .mark")
    shot(alice, "rooms-private-reactions-1280-light")
    # Escape takes a reply back before it is sent.
    bob.focus("#messages")
    bob.keyboard.press("ArrowUp")
    bob.keyboard.press("R")
    expect(bob.locator("#replying")).to_be_visible()
    bob.keyboard.press("Escape")
    expect(bob.locator("#replying")).to_be_hidden()
    # And to everyone.
    alice.click(".conv-item[data-key='*']")
    say(alice, "news for all")
    bob.click(".conv-item[data-key='*']")
    message(bob, "news for all").hover()
    message(bob, "news for all").get_by_role("button", name="Reply (R)").click()
    say(bob, "thanks")
    expect(message(alice, "thanks").locator(".quote")).to_contain_text("news for all")


def test_reactions_live_with_the_mouse_and_the_keyboard(accounts, server, open_page):
    alice, bob = two_in_a_room(accounts, open_page, "Fun")
    say(alice, "cake at four")
    open_room(bob, "Fun")
    # Mouse: bob's picker, a common emoji.
    msg = message(bob, "cake at four")
    msg.hover()
    msg.get_by_role("button", name="React (+)").click()
    expect(msg.locator(".picker")).to_be_visible()
    shot(bob, "rooms-picker-1280-light")
    msg.get_by_role("button", name="React with 🎉").click()
    expect(msg.locator(".picker")).to_have_count(0)
    theirs = message(alice, "cake at four").locator(".reaction[data-emoji='🎉']")
    expect(theirs.locator(".n")).to_have_text("1")
    expect(theirs).to_have_attribute("aria-pressed", "false")
    # alice adds hers by clicking the count; both see 2, who on hover.
    theirs.click()
    expect(theirs.locator(".n")).to_have_text("2")
    expect(theirs).to_have_attribute("aria-pressed", "true")
    mine = msg.locator(".reaction[data-emoji='🎉']")
    expect(mine.locator(".n")).to_have_text("2")
    mine.hover()
    expect(mine.locator(".who")).to_be_visible()
    expect(mine.locator(".who")).to_have_text("alice, you")
    shot(bob, "rooms-reactions-1280-light")
    # Clicking again takes it back.
    theirs.click()
    expect(mine.locator(".n")).to_have_text("1")
    # Free input: any 1 to 32 characters without white space.
    msg.hover()
    msg.get_by_role("button", name="React (+)").click()
    msg.locator(".picker-input").fill("two words")
    msg.locator(".picker-input").press("Enter")
    expect(msg.locator(".picker [role=alert]")).to_have_text("1 to 32 characters, no spaces.")
    msg.locator(".picker-input").fill("🦄")
    msg.locator(".picker-input").press("Enter")
    expect(message(alice, "cake at four").locator(".reaction[data-emoji='🦄'] .n")).to_have_text("1")
    # Keyboard alone: arrows to the message, +, arrows in the picker, Enter.
    alice.focus("#messages")
    alice.keyboard.press("ArrowUp")
    expect(message(alice, "cake at four")).to_be_focused()
    alice.keyboard.press("+")
    expect(alice.get_by_role("button", name="React with 👍")).to_be_focused()
    alice.keyboard.press("ArrowRight")
    alice.keyboard.press("Enter")
    expect(msg.locator(".reaction[data-emoji='❤️'] .n")).to_have_text("1")
    expect(message(alice, "cake at four")).to_be_focused()
    # Tab reaches the counts of the focused message; Enter takes hers back.
    for _ in range(8):
        alice.keyboard.press("Tab")
        if alice.evaluate("document.activeElement.dataset.emoji") == "❤️":
            break
    expect(alice.locator(".reaction[data-emoji='❤️'] .who")).to_be_visible()
    alice.keyboard.press("Enter")
    expect(msg.locator(".reaction[data-emoji='❤️']")).to_have_count(0)
    # Reactions are kept: a reload shows them from history.
    bob.reload()
    bob.wait_for_selector("#status[data-state=online]")
    open_room(bob, "Fun")
    expect(message(bob, "cake at four").locator(".reaction[data-emoji='🎉'] .n")).to_have_text("1")
    expect(message(bob, "cake at four").locator(".reaction[data-emoji='🎉']")).to_have_attribute("aria-pressed", "true")


# --- Every new state at both widths, light and dark ---------------------------------------------


def as_peer(server, username, work):
    """Run `work(peer)` (a coroutine function) as `username` over the protocol."""

    async def go():
        async with Peer(server.url) as peer:
            await peer.ok("login", username=username, password=PASSWORD)
            return await work(peer)

    return run_async(go())


def room_id(server, username, name):
    async def find(peer):
        return next(r["id"] for r in (await peer.ok("rooms"))["rooms"] if r["name"] == name)

    return as_peer(server, username, find)


def look(page, state, name):
    """A state of the page: on screen, no serious axe-core violation, a screenshot."""
    assert no_horizontal_scroll(page), state
    axe(page, state)
    shot(page, name)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("viewport", "width"), [(PHONE, "390"), (WIDE, "1280")])
def test_every_new_state_looks_right_and_passes_axe(accounts, server, open_page, viewport, width, scheme):
    accounts("alice", "bob", "carol", "dana")
    tag = f"{width}-{scheme}"
    narrow = viewport is PHONE

    # Someone else's room, with messages alice has not read.
    async def book_club(peer):
        room = (await peer.ok("room_create", name="Book club", members=["alice", "carol"]))["room"]["id"]
        await peer.ok("send", room=room, body="Chapter 3 for Thursday?")
        await peer.ok("send", room=room, body="Or all of part one?")

    as_peer(server, "bob", book_club)
    alice = open_page("alice", viewport=viewport, color_scheme=scheme, bypass_csp=True)
    expect(room_item(alice, "Book club").locator(".badge")).to_have_text("2")

    # The create dialog, members picked.
    alice.click("#room-new")
    alice.fill("#room-name", "Weekend trip 🏕")
    for name in ("bob", "carol"):
        alice.fill("#room-member", name)
        alice.press("#room-member", "Enter")
    expect(alice.locator("#room-picked .chip")).to_have_count(2)
    look(alice, "the create dialog", f"rooms-create-{tag}")
    alice.click("#room-create button[type=submit]")
    expect(alice.locator("#conv-title")).to_have_text("Weekend trip 🏕")
    trip = room_id(server, "bob", "Weekend trip 🏕")

    async def talk(peer):
        first = (await peer.ok("send", room=trip, body="I can drive on Saturday."))["id"]
        return first

    first = as_peer(server, "bob", talk)

    async def carol_talks(peer):
        await peer.ok("send", room=trip, body="Great! Who brings the tent?", reply_to=first)
        await peer.ok("react", id=first, emoji="🚗")

    as_peer(server, "carol", carol_talks)
    expect(message(alice, "Great! Who brings the tent?").locator(".quote")).to_contain_text("I can drive")

    # The conversation list with both rooms.
    if narrow:
        alice.click("#back")
    look(alice, "the room list", f"rooms-list-{tag}")
    if narrow:
        room_item(alice, "Weekend trip 🏕").click()

    # The room: sender names, a reply, a reaction.
    expect(message(alice, "I can drive on Saturday.").locator(".from")).to_have_text("bob")
    look(alice, "a room conversation", f"rooms-conversation-{tag}")

    # Reply from the keyboard.
    alice.focus("#messages")
    alice.keyboard.press("ArrowUp")
    expect(message(alice, "Great! Who brings the tent?")).to_be_focused()
    alice.keyboard.press("r")
    alice.keyboard.type("I have one")
    look(alice, "replying", f"rooms-replying-{tag}")
    alice.keyboard.press("Enter")
    expect(message(alice, "I have one").locator(".quote")).to_contain_text("carol")
    # One's own message: Reply, React, Edit and Delete beside it, on screen.
    message(alice, "I have one").hover()
    for name in ("Reply (R)", "React (+)", "Edit message", "Delete message"):
        expect(message(alice, "I have one").get_by_role("button", name=name)).to_be_visible()
        assert within_screen(alice, f".msg:has(.body:text-is('I have one')) [aria-label='{name}']")
    shot(alice, f"rooms-own-actions-{tag}")

    # The picker, from the keyboard, then the counts with who reacted.
    alice.focus("#messages")
    alice.keyboard.press("ArrowUp")
    alice.keyboard.press("ArrowUp")
    alice.keyboard.press("ArrowUp")
    expect(message(alice, "I can drive on Saturday.")).to_be_focused()
    alice.keyboard.press("+")
    expect(alice.get_by_role("button", name="React with 👍")).to_be_focused()
    look(alice, "the reaction picker", f"rooms-picker-{tag}")
    alice.keyboard.press("Enter")
    counts = message(alice, "I can drive on Saturday.").locator(".reaction")
    expect(counts).to_have_count(2)
    counts.first.hover()
    look(alice, "reaction counts", f"rooms-reactions-{tag}")
    if width == "1280" and scheme == "light":
        alice.mouse.move(640, 600)
        alice.evaluate("document.activeElement.blur()")
        shot(alice, "chat-page")  # docs/chat-page.png, for the README

    # The member panel (alice is the admin).
    alice.click("#members-open")
    expect(alice.locator("#room-members .member")).to_have_count(3)
    look(alice, "the member panel", f"rooms-members-{tag}")
    alice.keyboard.press("Escape")
    expect(alice.locator("#members-open")).to_be_focused()


def test_room_names_and_quotes_are_direction_isolated_text(accounts, server, open_page):
    accounts("alice", "bob")
    name = "\u202eשלום <b>room</b>"

    async def make(peer):
        room = (await peer.ok("room_create", name=name, members=["alice"]))["room"]["id"]
        first = (await peer.ok("send", room=room, body="<i>\u202eabc</i>"))["id"]
        await peer.ok("send", room=room, body="second", reply_to=first)
        await peer.ok("react", id=first, emoji="<b>x</b>")

    as_peer(server, "bob", make)
    alice = open_page("alice")
    item = room_item(alice, "room")
    expect(item.locator("bdi.conv-name")).to_have_text(name)
    item.click()
    expect(alice.locator("#conv-title")).to_have_text(name)
    expect(message(alice, "second").locator(".quote bdi.quote-from")).to_have_text("bob")
    expect(message(alice, "second").locator(".quote .quote-text")).to_have_attribute("dir", "auto")
    expect(message(alice, "second").locator(".quote .quote-text")).to_have_text("<i>\u202eabc</i>")
    expect(alice.locator(".reaction bdi.emoji")).to_have_text("<b>x</b>")
    alice.click("#members-open")
    expect(alice.locator("#room-panel-title bdi")).to_have_text(name)
    # Nothing from them became markup.
    assert alice.locator("#app b, #app i").count() == 0


@pytest.fixture
def files_server(transactional_db, attachment_store):
    """A server keeping files where this test's storage is (a folder, or S3)."""
    srv = Server(**attachment_store).start()
    yield srv
    srv.stop()


def test_a_file_in_a_room_and_a_reply_to_it(accounts, files_server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice", server=files_server), open_page("bob", server=files_server)
    create_room(alice, "Papers", "bob")
    pdf = {"name": "plan.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4\n" + b"0" * 2000 + b"\n%%EOF\n"}
    alice.set_input_files("#file-input", [pdf])
    expect(alice.locator("#tray .tray-item.done")).to_have_count(1)
    alice.press("#body", "Enter")
    open_room(bob, "Papers")
    sent = bob.locator(".msg[data-id]", has=bob.locator(".file-name:text-is('plan.pdf')"))
    expect(sent.locator(".from")).to_have_text("alice")
    # A reply to a message with a file and no text says what it answers.
    sent.focus()
    bob.keyboard.press("r")
    expect(bob.locator("#replying-text")).to_have_text("Replying to alice: File: plan.pdf")
    say(bob, "Got it")
    quote = message(alice, "Got it").locator(".quote")
    expect(quote.locator(".quote-text")).to_have_text("File: plan.pdf")
