"""The account page: password change and reset, email, download, delete."""

import contextlib
import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.http import StreamingHttpResponse
from django.test import Client
from django.utils import timezone

from accounts import selectors as account_selectors
from accounts import services as accounts
from accounts.models import NameHold
from core.errors import ServiceError
from messaging import services
from messaging.models import Block, Delivery, Message, Presence, ReadMark

from .helpers import PASSWORD, make_user
from .servers import free_port

pytestmark = pytest.mark.django_db
User = get_user_model()
NEW = "another-Horse-77"


def logged_in(user, ip="198.51.100.7"):
    client = Client(REMOTE_ADDR=ip)
    client.force_login(user)
    return client


def change(client, old, new, again=None):
    return client.post(
        "/account/",
        {"action": "password", "old_password": old, "new_password1": new, "new_password2": again or new},
    )


# --- The page ------------------------------------------------------------------------


def test_the_chat_page_links_to_the_account_page(client):
    client.force_login(make_user("alice"))
    assert 'href="/account/"' in client.get("/").content.decode()
    page = client.get("/account/").content.decode()
    for what in ("Change password", "Email", "Download (JSON)", "Delete my account"):
        assert what in page


def test_the_account_page_needs_a_login(client):
    response = client.get("/account/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert client.get("/account/data.json").status_code == 302
    assert client.post("/account/delete/", {"password": PASSWORD}).status_code == 302


# --- Change password -------------------------------------------------------------------


def test_change_password_keeps_this_session_and_ends_every_other(client):
    alice = make_user("alice")
    here, elsewhere = logged_in(alice), logged_in(alice)
    token = accounts.session_create(user=alice)
    assert account_selectors.user_for_session(token) == alice
    response = change(here, PASSWORD, NEW)
    assert response.status_code == 302 and response["Location"] == "/account/"
    assert here.get("/").status_code == 200  # still logged in here
    assert elsewhere.get("/").status_code == 302  # logged out there
    assert account_selectors.user_for_session(token) is None  # the resume token ended
    alice.refresh_from_db()
    assert alice.check_password(NEW)


def test_change_password_ends_the_live_socket_at_the_presence_check():
    alice = make_user("alice")
    token = accounts.session_create(user=alice)
    services.presence_claim(user=alice, channel_name="test.alice", session_key=token)
    assert services.presence_sessions_check(channel_names=["test.alice"]) == []
    assert change(logged_in(alice), PASSWORD, NEW).status_code == 302
    assert services.presence_sessions_check(channel_names=["test.alice"]) == ["test.alice"]
    assert not Presence.objects.filter(user=alice).exists()


def test_a_wrong_old_password_counts_toward_the_lockout(settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    alice = make_user("alice")
    client = logged_in(alice, ip="198.51.100.9")
    for _ in range(3):
        page = change(client, "not-it-at-all", NEW).content.decode()
        assert "Your current password is wrong." in page or "Too many logins" in page
    page = change(client, PASSWORD, NEW).content.decode()  # the right one, now locked
    assert "Too many logins" in page
    with pytest.raises(ServiceError, match="Too many"):
        accounts.user_authenticate(username="alice", password=PASSWORD, ip="198.51.100.9")
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_the_new_password_meets_the_validators():
    alice = make_user("alice")
    page = change(logged_in(alice), PASSWORD, "12345678").content.decode()
    assert "too common" in page or "entirely numeric" in page
    page = change(logged_in(alice), PASSWORD, NEW, again=NEW + "x").content.decode()
    assert "The two passwords differ." in page
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


# --- Email -----------------------------------------------------------------------------


def test_email_at_signup_is_optional_and_checked(client):
    form = {"username": "carol", "password1": NEW, "password2": NEW}
    assert client.post("/accounts/signup/", {**form, "email": "not an address"}).status_code == 200
    assert not User.objects.filter(username="carol").exists()
    assert client.post("/accounts/signup/", {**form, "email": "Carol@Example.COM"}).status_code == 302
    assert User.objects.get(username="carol").email == "Carol@example.com"
    assert Client().post("/accounts/signup/", {**form, "username": "dave"}).status_code == 302
    assert User.objects.get(username="dave").email == ""


def test_email_is_set_and_removed_on_the_account_page():
    alice = make_user("alice")
    client = logged_in(alice)
    assert client.post("/account/", {"action": "email", "email": "alice@example.com"}).status_code == 302
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"
    assert "valid email" in client.post("/account/", {"action": "email", "email": "nope"}).content.decode()
    client.post("/account/", {"action": "email", "email": ""})
    alice.refresh_from_db()
    assert alice.email == ""


# --- Forgotten password, by email through a real SMTP server -----------------------------------


@contextlib.contextmanager
def smtp_server(settings):
    """aiosmtpd on a free port; yields the list of messages it received."""
    from aiosmtpd.controller import Controller

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append((envelope.rcpt_tos, envelope.content.decode("utf-8", "replace")))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    try:
        yield received
    finally:
        controller.stop()


def reset_link(mail):
    import email
    from email import policy

    body = email.message_from_string(mail, policy=policy.default).get_body(("plain",)).get_content()
    return re.search(r"http://testserver(/accounts/reset/\S+/)", body).group(1)


def ask_reset(address, ip="198.51.100.20"):
    return Client(REMOTE_ADDR=ip).post("/accounts/password-reset/", {"email": address})


def test_password_reset_by_email_works_once(settings):
    alice = make_user("alice", email="alice@example.com")
    elsewhere = logged_in(alice)
    with smtp_server(settings) as received:
        response = ask_reset("alice@example.com")
        assert response.status_code == 302 and response["Location"] == "/accounts/password-reset/sent/"
    assert [to for to, _ in received] == [["alice@example.com"]]
    link = reset_link(received[0][1])
    client = Client()
    form = client.get(link, follow=True)
    assert "Choose a new password" in form.content.decode()
    set_url = form.redirect_chain[-1][0]
    weak = client.post(set_url, {"new_password1": "12345678", "new_password2": "12345678"})
    assert weak.status_code == 200  # the validators apply
    done = client.post(set_url, {"new_password1": NEW, "new_password2": NEW})
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    alice.refresh_from_db()
    assert alice.check_password(NEW)
    assert elsewhere.get("/").status_code == 302  # every session ended
    # Once only.
    assert "no longer works" in Client().get(link, follow=True).content.decode()


def test_a_reset_link_expires(settings, monkeypatch):
    from django.contrib.auth.tokens import PasswordResetTokenGenerator

    settings.PASSWORD_RESET_TIMEOUT = 3600
    make_user("alice", email="alice@example.com")
    with smtp_server(settings) as received:
        ask_reset("alice@example.com")
    link = reset_link(received[0][1])
    later = timezone.now().replace(tzinfo=None) + timedelta(hours=2)
    monkeypatch.setattr(PasswordResetTokenGenerator, "_now", lambda self: later)
    assert "no longer works" in Client().get(link, follow=True).content.decode()


def test_the_reset_page_never_tells_whether_an_address_has_an_account(settings):
    make_user("alice", email="alice@example.com")
    with smtp_server(settings) as received:
        known = ask_reset("alice@example.com", ip="198.51.100.30")
        unknown = ask_reset("nobody@example.com", ip="198.51.100.31")
        done_known = Client().get(known["Location"]).content
        done_unknown = Client().get(unknown["Location"]).content
    assert known.status_code == unknown.status_code == 302 and known["Location"] == unknown["Location"]
    assert done_known == done_unknown
    assert len(received) == 1


def test_reset_requests_are_limited_per_address_and_per_account(settings):
    settings.CHAT_RESETS_PER_ADDRESS = 2
    settings.CHAT_RESETS_PER_ACCOUNT = 1
    make_user("alice", email="alice@example.com")
    make_user("bob", email="bob@example.com")
    with smtp_server(settings) as received:
        # Per account: the second request, from elsewhere, looks the same and sends nothing.
        assert ask_reset("alice@example.com", ip="198.51.100.40").status_code == 302
        assert ask_reset("alice@example.com", ip="198.51.100.41").status_code == 302
        assert len(received) == 1
        # Per address: a third request from one address is refused, whatever the account.
        assert ask_reset("bob@example.com", ip="198.51.100.41").status_code == 302
        refused = ask_reset("carol@example.com", ip="198.51.100.41")
        assert refused.status_code == 200 and "Too many requests" in refused.content.decode()
    assert len(received) == 2


# --- Download my data -------------------------------------------------------------------


def test_download_my_data_as_json_streams_what_is_mine():
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    services.message_send(sender=alice, to_username="bob", body="hi bob", rate_limit=False)
    services.message_send(sender=bob, to_username="alice", body='<b>"hi"</b> alice', rate_limit=False)
    services.message_send(sender=bob, to_username="carol", body="not for alice", rate_limit=False)
    services.block_create(blocker=alice, username="carol")
    response = logged_in(alice).get("/account/data.json")
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "application/json" and "attachment" in response["Content-Disposition"]
    data = json.loads(b"".join(response.streaming_content))
    assert data["account"]["username"] == "alice"
    assert [m["body"] for m in data["messages_sent"]] == ["hi bob"]
    assert [m["body"] for m in data["messages_received"]] == ['<b>"hi"</b> alice']
    assert data["blocks"] == [{"blocked": "carol", "since": data["blocks"][0]["since"]}]
    assert "not for alice" not in json.dumps(data) and carol.username not in json.dumps(data["messages_received"])


def test_download_my_data_as_a_page_escapes_bodies():
    alice, bob = make_user("alice"), make_user("bob")
    services.message_send(sender=bob, to_username="alice", body="<script>alert(1)</script>", rate_limit=False)
    response = logged_in(alice).get("/account/data/")
    assert isinstance(response, StreamingHttpResponse)
    page = b"".join(response.streaming_content).decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page


def test_the_export_reads_its_rows_in_chunks(monkeypatch):
    """A long history is read a chunk at a time (iterator), never whole."""
    from django.db.models.query import QuerySet

    from messaging import views

    alice, bob = make_user("alice"), make_user("bob")
    for i in range(7):
        services.message_send(sender=bob, to_username="alice", body=f"m{i}", rate_limit=False)
    monkeypatch.setattr(views, "CHUNK", 2)
    chunk_sizes = []
    original = QuerySet.iterator

    def spy(self, chunk_size=None):
        chunk_sizes.append(chunk_size)
        return original(self, chunk_size=chunk_size)

    fetch_all = QuerySet._fetch_all

    def whole(self):
        if self.model in (Message, Block):
            pytest.fail("a whole queryset of messages or blocks was loaded")
        return fetch_all(self)

    monkeypatch.setattr(QuerySet, "iterator", spy)
    monkeypatch.setattr(QuerySet, "_fetch_all", whole)
    data = json.loads(b"".join(logged_in(alice).get("/account/data.json").streaming_content))
    assert len(data["messages_received"]) == 7 and chunk_sizes == [2, 2, 2]


# --- Delete my account -------------------------------------------------------------------


def test_delete_my_account_needs_the_password():
    alice = make_user("alice")
    client = logged_in(alice)
    response = client.post("/account/delete/", {"password": "wrong-one-here"}, follow=True)
    assert "was not deleted" in response.content.decode()
    alice.refresh_from_db()
    assert alice.is_active and alice.username == "alice"


def test_delete_my_account_removes_what_is_personal_and_keeps_the_other_side(settings):
    settings.CHAT_DELETED_NAME_DAYS = 30
    alice, bob = make_user("alice", email="alice@example.com"), make_user("bob")
    sent = services.message_send(sender=alice, to_username="bob", body="from alice", rate_limit=False).message
    waiting = services.message_send(sender=bob, to_username="alice", body="to alice", rate_limit=False).message
    make_user("carol")
    services.block_create(blocker=alice, username="carol")
    services.conversations_read(requests=[services.ReadRequest(user=alice, peer=bob, up_to=waiting.pk)])
    assert Delivery.objects.filter(recipient=alice, acked_at__isnull=True).exists()
    assert ReadMark.objects.filter(user=alice).exists() and Block.objects.filter(blocker=alice).exists()
    token = accounts.session_create(user=alice)
    elsewhere = logged_in(alice)
    client = logged_in(alice)
    response = client.post("/account/delete/", {"password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    alice.refresh_from_db()
    assert not alice.is_active and alice.username == f"deleted-{alice.pk}" and alice.email == ""
    assert not alice.has_usable_password()
    assert client.get("/").status_code == 302 and elsewhere.get("/").status_code == 302
    assert account_selectors.user_for_session(token) is None
    assert not Block.objects.filter(blocker=alice).exists()
    assert not Delivery.objects.filter(recipient=alice, acked_at__isnull=True).exists()
    assert not ReadMark.objects.filter(user=alice).exists()
    # Bob still reads the conversation, from the deleted user.
    assert Message.objects.filter(pk=sent.pk).exists()
    from messaging import selectors

    history = selectors.message_history(user=bob, peer=alice)
    assert [(m["from"], m["to"], m["body"]) for m in history] == [
        (f"deleted-{alice.pk}", "bob", "from alice"),
        ("bob", f"deleted-{alice.pk}", "to alice"),  # his own copy of what never reached her
    ]
    # The name is held for a while, then free again.
    with pytest.raises(ServiceError, match="taken"):
        accounts.user_signup(username="alice", password=NEW)
    with pytest.raises(ServiceError, match="taken"):
        accounts.user_signup(username="deleted-999", password=NEW)
    NameHold.objects.update(until=timezone.now() - timedelta(seconds=1))
    assert accounts.user_signup(username="Alice", password=NEW).username == "Alice"


def test_old_reset_requests_and_past_name_holds_are_pruned(settings):
    from accounts.models import PasswordResetAttempt

    now = timezone.now()
    PasswordResetAttempt.objects.create(ip="198.51.100.1", email="a@example.com")
    PasswordResetAttempt.objects.create(ip="198.51.100.1", email="b@example.com")
    PasswordResetAttempt.objects.filter(email="a@example.com").update(
        at=now - timedelta(seconds=settings.CHAT_RESET_WINDOW_SECONDS + 1)
    )
    NameHold.objects.create(username_key="gone", until=now - timedelta(days=1))
    NameHold.objects.create(username_key="held", until=now + timedelta(days=1))
    pruned = services.records_prune()
    assert pruned["reset requests"] == 1 and pruned["name holds"] == 1
    assert list(NameHold.objects.values_list("username_key", flat=True)) == ["held"]
    assert list(PasswordResetAttempt.objects.values_list("email", flat=True)) == ["b@example.com"]
