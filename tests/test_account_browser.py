"""The account page in headless Chromium, reached from the chat page's
header; screenshots at phone and desktop widths go to test-artifacts/."""

import pytest

from . import test_browser as chat_browser
from .helpers import PASSWORD
from .servers import signup
from .test_browser import PHONE, WIDE, expect, run_async, shot

# The chat page's browser fixtures: one Chromium and one server per module.
browser, new_page, page_errors = chat_browser.browser, chat_browser.new_page, chat_browser.page_errors
open_page = chat_browser.open_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(("viewport", "name"), [(PHONE, "390"), (WIDE, "1280")])
def test_the_account_page_from_the_chat_header(server, open_page, viewport, name):
    run_async(signup(server.url, "alice", password=PASSWORD))
    page = open_page("alice", viewport=viewport)
    link = page.locator("#account-link")
    expect(link).to_be_visible()
    shot(page, f"chat-header-{name}")
    link.click()
    page.wait_for_url("**/account/")
    for heading in ("Your account", "Email", "Change password", "Your data", "Delete your account"):
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    # Nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # The download links sit in their section, not over the page.
    data = page.get_by_role("link", name="Download (JSON)").bounding_box()
    section = page.locator("section", has=page.get_by_role("heading", name="Your data")).bounding_box()
    assert section["y"] <= data["y"] <= section["y"] + section["height"]
    shot(page, f"account-{name}", full_page=True)
    # A wrong current password is said by the field, and nothing changes.
    page.fill("#id_old_password", "not-my-password")
    page.fill("#id_new_password1", "another-Horse-77")
    page.fill("#id_new_password2", "another-Horse-77")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("Your current password is wrong.")).to_be_visible()
    shot(page, f"account-error-{name}", full_page=True)
