"""Pictures and files on the chat page, in headless Chromium against a real
server: the paperclip, drop and paste, the tray with progress and removal,
errors said by the tray, thumbnails, file cards and the image viewer, and
the outbox across a reload. Screenshots of the composer with attachments
and of the viewer go to test-artifacts/."""

import io
import time

import pytest
from PIL import Image

from . import test_browser as chat_browser
from .servers import Server
from .test_browser import expect, open_chat, say, shot

browser, new_page, page_errors = chat_browser.browser, chat_browser.new_page, chat_browser.page_errors
accounts, password_hash, open_page = chat_browser.accounts, chat_browser.password_hash, chat_browser.open_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(transactional_db, attachment_store):
    """A server keeping files where this test's storage is (a folder, or S3)."""
    srv = Server(**attachment_store).start()
    yield srv
    srv.stop()


def picture(color, size=(1200, 800)) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, color)
    for x in range(0, size[0], 100):
        for y in range(0, size[1], 100):
            if (x + y) // 100 % 2:
                image.paste((255, 255, 255), (x, y, x + 50, y + 50))
    image.save(out, format="PNG")
    return out.getvalue()


def as_file(name, data, mime):
    return {"name": name, "mimeType": mime, "buffer": data}


PDF = b"%PDF-1.4\n" + b"0" * 20_000 + b"\n%%EOF\n"


def wait_true(page, script, timeout=10):
    """Poll a script until it is true (wait_for_function evaluates strings,
    which the page's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script):
        assert time.monotonic() < deadline, script
        time.sleep(0.05)


def test_send_pictures_and_a_file_and_view_them(accounts, server, open_page):
    accounts("alice", "bob")
    alice, bob = open_page("alice"), open_page("bob")
    open_chat(alice, "bob")
    alice.set_input_files(
        "#file-input",
        [
            as_file("sunset.png", picture((220, 90, 40)), "image/png"),
            as_file("lake.png", picture((30, 110, 200)), "image/png"),
            as_file("minutes.pdf", PDF, "application/pdf"),
            as_file("oops.txt", b"not this one", "text/plain"),
        ],
    )
    expect(alice.locator("#tray .tray-item.done")).to_have_count(4)
    alice.get_by_role("button", name="Remove oops.txt").click()
    expect(alice.locator("#tray .tray-item")).to_have_count(3)
    alice.fill("#body", "Holiday pictures and the minutes")
    shot(alice, "composer-attachments")
    alice.press("#body", "Enter")
    expect(alice.locator("#tray")).to_be_hidden()

    open_chat(bob, "alice")
    message = bob.locator(".msg:not(.mine)").last
    expect(message.locator(".thumb")).to_have_count(2)
    expect(message.locator(".file-card .file-name")).to_have_text("minutes.pdf")
    expect(message.locator(".file-card .file-size")).to_have_text("20 KB")
    # Thumbnails load (the check lets the recipient in) and are at most 240 px.
    wait_true(bob, "[...document.querySelectorAll('.msg .thumb img')].every(i => i.complete && i.naturalWidth > 0)")
    assert bob.evaluate("document.querySelector('.msg .thumb img').naturalWidth") == 400
    href = message.locator(".file-card").get_attribute("href")
    status = bob.evaluate("async (u) => (await fetch(u)).status", href)
    assert status == 200

    message.locator(".thumb").first.click()
    viewer = bob.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(viewer.locator(".viewer-name")).to_contain_text("sunset.png")
    expect(viewer.locator(".viewer-name")).to_contain_text("1 of 2")
    wait_true(bob, "document.querySelector('#viewer img').naturalWidth === 1200")
    shot(bob, "image-viewer")
    bob.keyboard.press("ArrowRight")
    expect(viewer.locator(".viewer-name")).to_contain_text("lake.png")
    expect(viewer.locator(".viewer-name")).to_contain_text("2 of 2")
    bob.keyboard.press("ArrowLeft")
    expect(viewer.locator(".viewer-name")).to_contain_text("1 of 2")
    bob.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    shot(bob, "chat-attachments")

    # Someone else cannot fetch it: the same URL is a 404 for carol.
    accounts("carol")
    carol = open_page("carol")
    assert carol.evaluate("async (u) => (await fetch(u)).status", href) == 404


def test_what_fails_says_why_and_is_not_sent(accounts, server, open_page):
    accounts("alice", "bob")
    alice = open_page("alice")
    open_chat(alice, "bob")
    alice.set_input_files("#file-input", [as_file("cat.png", b"<html><script>x</script></html>", "image/png")])
    expect(alice.locator("#tray .tray-item.failed .tray-error")).to_have_text("cat.png is not a valid PNG image.")
    say(alice, "with the bad file")
    expect(alice.locator("#announcer")).to_contain_text("remove the files that could not be uploaded")
    expect(alice.locator(".msg.mine")).to_have_count(0)
    alice.get_by_role("button", name="Remove cat.png").click()
    alice.press("#body", "Enter")
    expect(alice.locator(".msg.mine[data-id] .body")).to_have_text("with the bad file")
    # A file over 10 MB is refused before it is sent at all.
    alice.set_input_files("#file-input", [as_file("huge.txt", b"x" * (10 * 1024 * 1024 + 1), "text/plain")])
    expect(alice.locator("#tray .tray-error")).to_contain_text("Larger than 10 MB")


def test_drop_and_paste_attach_files(accounts, server, open_page):
    accounts("alice", "bob")
    alice = open_page("alice")
    open_chat(alice, "bob")
    data = list(picture((10, 160, 90), (300, 200)))
    alice.evaluate(
        """(bytes) => {
        const file = (name) => new File([new Uint8Array(bytes)], name, { type: "image/png" });
        const dropped = new DataTransfer();
        dropped.items.add(file("dropped.png"));
        const zone = document.getElementById("conversation");
        zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dropped, bubbles: true, cancelable: true }));
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dropped, bubbles: true, cancelable: true }));
        const pasted = new DataTransfer();
        pasted.items.add(file("pasted.png"));
        document.getElementById("body").dispatchEvent(
            new ClipboardEvent("paste", { clipboardData: pasted, bubbles: true, cancelable: true }));
    }""",
        data,
    )
    expect(alice.locator("#tray .tray-item.done")).to_have_count(2)
    expect(alice.locator("#tray .tray-name")).to_have_text(["dropped.png", "pasted.png"])
    alice.press("#body", "Enter")  # files alone, no text
    expect(alice.locator(".msg.mine[data-id] .thumb")).to_have_count(2)


def queued_with_a_file(accounts, server, open_page):
    """Alice uploads minutes.pdf to send to bob, then the server goes away
    and her message with it waits in the outbox. Returns her page."""
    accounts("alice", "bob")
    alice = open_page("alice")
    open_chat(alice, "bob")
    alice.set_input_files("#file-input", [as_file("minutes.pdf", PDF, "application/pdf")])
    expect(alice.locator("#tray .tray-item.done")).to_have_count(1)
    server.stop()
    alice.wait_for_selector("#status[data-state=offline]")
    say(alice, "the minutes")
    expect(alice.locator(".msg.pending .file-card .file-name")).to_have_text("minutes.pdf")
    return alice


def test_uploaded_files_wait_in_the_outbox_across_a_reload(accounts, server, open_page):
    alice = queued_with_a_file(accounts, server, open_page)
    server.start()
    alice.reload()
    alice.wait_for_selector("#status[data-state=online]", timeout=20_000)
    open_chat(alice, "bob")
    sent = alice.locator(".msg.mine[data-id] .file-card .file-name")
    expect(sent).to_have_text("minutes.pdf", timeout=20_000)
    from messaging.models import Attachment

    assert Attachment.objects.get().message.body == "the minutes"


def test_an_upload_removed_before_its_message_went_says_to_choose_it_again(accounts, server, open_page):
    from messaging.models import Attachment

    alice = queued_with_a_file(accounts, server, open_page)
    # A day passes: chat_cleanup removes the upload that was never sent.
    Attachment.objects.all().delete()
    server.start()
    error = alice.locator(".msg.pending.failed .send-error")
    expect(error).to_contain_text("Choose the file again", timeout=20_000)
    shot(alice, "outbox-file-gone")
    assert not Attachment.objects.exists()
