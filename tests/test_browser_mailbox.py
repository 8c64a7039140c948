"""A stuffed mailbox on the page (issue 18, finding 1): what waited for a
user arrives whole in the browser, paced by the page's acks, and the
socket stays up (it used to close with 1008 at every login, for good)."""

import time

import pytest

from .test_browser import (  # noqa: F401  (fixtures)
    accounts,
    browser,
    new_page,
    open_chat,
    open_page,
    page_errors,
    password_hash,
    shot,
)

pytestmark = pytest.mark.browser


def stuff(sender, recipient, count, body):
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from messaging.models import Delivery, Message

    users = get_user_model().objects
    sender, recipient = users.get(username=sender), users.get(username=recipient)
    with transaction.atomic():
        messages = Message.objects.bulk_create(
            [
                Message(
                    kind=Message.Kind.PRIVATE, sender=sender, recipient=recipient, body=body, sent_at=timezone.now()
                )
                for _ in range(count)
            ]
        )
        Delivery.objects.bulk_create([Delivery(message=m, recipient=recipient) for m in messages])


def pending(username):
    from messaging.models import Delivery

    return Delivery.objects.filter(recipient__username=username, acked_at__isnull=True).count()


def test_a_stuffed_mailbox_arrives_whole_in_the_page(server, accounts, open_page):
    accounts("alice", "bob")
    stuff("bob", "alice", 400, "€" * 4000)  # about 4.8 MB waiting
    page = open_page("alice")
    deadline = time.monotonic() + 60
    while pending("alice"):
        assert time.monotonic() < deadline, f"{pending('alice')} still waiting"
        assert page.locator("#status").get_attribute("data-state") == "online", "the page lost its socket"
        time.sleep(0.2)
    # The conversation opens at its first unread message: 400 long ones,
    # loaded in pages of over a megabyte (which daphne refused to send).
    open_chat(page, "bob")
    page.locator("#messages .msg").first.wait_for(state="attached")
    shot(page, "stuffed-mailbox-arrived")
    assert page.locator("#status").get_attribute("data-state") == "online"
