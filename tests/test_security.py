"""What a hostile client cannot do: the findings of issue 10, one by one,
through the services, the consumer and the HTTP pages. The ones that need
a real server (floods, ghosts, descriptors) are in test_abuse.py."""

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from accounts import services as accounts
from accounts.models import LoginAttempt, NameHold, PasswordResetAttempt, SignupAttempt
from chatsite.proxies import client_of
from core.addresses import trusted_networks
from core.errors import ServiceError
from messaging import services
from messaging.models import ClientRequest, Edit, Message
from messaging.writer import Writer

from .helpers import PASSWORD, ProtocolClient, amake_user, connected, make_user
from .servers import ROOT, Server

User = get_user_model()


def login_codes(username, password, ip="127.0.0.1", times=1):
    codes = []
    for _ in range(times):
        try:
            accounts.user_authenticate(username=username, password=password, ip=ip)
            codes.append("ok")
        except ServiceError as e:
            codes.append(e.code)
    return codes


# --- 1. The admin's login goes through the lockout ----------------------------------


@pytest.mark.django_db
def test_admin_login_is_locked_like_every_other_login(client):
    make_user("root", is_staff=True, is_superuser=True)
    for _ in range(3):
        response = client.post("/admin/login/", {"username": "root", "password": "guess"})
        assert response.status_code == 200
    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert b"Try again in" in response.content
    assert not client.get("/admin/").wsgi_request.user.is_authenticated
    assert LoginAttempt.objects.filter(username="root", result="locked").exists()


@pytest.mark.django_db
def test_a_name_locked_on_the_socket_cannot_log_in_to_the_admin(client):
    make_user("root", is_staff=True, is_superuser=True)
    assert login_codes("root", "wrong", times=3) == ["invalid_credentials"] * 3
    client.post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert not client.get("/admin/").wsgi_request.user.is_authenticated


# --- 4. What one address can make the server hash -----------------------------------


@pytest.mark.django_db
def test_failed_logins_per_address_are_budgeted_across_usernames(settings):
    settings.CHAT_PASSWORD_FAILURES_PER_ADDRESS = 5
    make_user("alice")
    for i in range(5):
        assert login_codes(f"random{i}", "x") == ["invalid_credentials"]
    with pytest.raises(ServiceError) as refused:
        accounts.user_authenticate(username="alice", password=PASSWORD, ip="127.0.0.1")
    # Until the oldest failure leaves the window: about all of it.
    retry_after = refused.value.extra["retry_after"]
    assert refused.value.code == "locked"
    assert settings.CHAT_PASSWORD_WINDOW_SECONDS - 30 <= retry_after <= settings.CHAT_PASSWORD_WINDOW_SECONDS
    assert refused.value.message == f"Too many failed logins from your address. Try again in {retry_after} seconds."
    assert login_codes("alice", PASSWORD, ip="10.9.9.9") == ["ok"]  # another address
    # The refusal is on record, and the budget frees up as failures age.
    assert LoginAttempt.objects.filter(username="alice", result="locked").count() == 1
    LoginAttempt.objects.update(at=timezone.now() - timedelta(seconds=settings.CHAT_PASSWORD_WINDOW_SECONDS + 1))
    assert login_codes("alice", PASSWORD) == ["ok"]


@pytest.mark.django_db
def test_successful_logins_spend_none_of_the_address_budget(settings):
    settings.CHAT_PASSWORD_FAILURES_PER_ADDRESS = 2
    make_user("alice")
    for _ in range(3):
        assert login_codes("alice", PASSWORD) == ["ok"]
    assert login_codes("random", "x") == ["invalid_credentials"]
    assert login_codes("alice", PASSWORD) == ["ok"]


@pytest.mark.django_db
def test_an_exempt_address_has_no_budget_but_keeps_the_lockout(settings):
    """An operator may spare this machine's load generators the address
    budgets (CHAT_ADDRESS_BUDGET_EXEMPT=127.0.0.0/8,::1); the (username,
    IP) lockout still holds for it."""
    settings.CHAT_ADDRESS_BUDGET_EXEMPT = ["127.0.0.0/8", "::1"]
    settings.CHAT_SIGNUPS_PER_ADDRESS = 1
    settings.CHAT_PASSWORD_FAILURES_PER_ADDRESS = 2
    for i in range(3):
        accounts.user_signup(username=f"local{i}", password=PASSWORD, ip="127.0.0.1")
        accounts.user_signup(username=f"v6local{i}", password=PASSWORD, ip="::1")
    for i in range(3):
        assert login_codes(f"random{i}", "x") == ["invalid_credentials"]
    assert login_codes("local0", PASSWORD) == ["ok"]
    assert login_codes("local1", "wrong", times=4) == ["invalid_credentials"] * 3 + ["locked"]
    accounts.user_signup(username="remote", password=PASSWORD, ip="10.0.0.1")
    with pytest.raises(ServiceError) as refused:
        accounts.user_signup(username="remote2", password=PASSWORD, ip="10.0.0.1")
    assert refused.value.code == "rate_limited"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ["127.0.0.0/8", "::1"]), ("", []), (" ", []), ("127.0.0.1, ::1", ["127.0.0.1", "::1"])],
)
def test_empty_means_nobody_is_exempt(value, expected):
    """`CHAT_ADDRESS_BUDGET_EXEMPT=` (empty) used to fall back to loopback,
    so "exempt nobody" could not be said. Unset, this machine is spared."""
    env = {k: v for k, v in os.environ.items() if k != "CHAT_ADDRESS_BUDGET_EXEMPT"}
    if value is not None:
        env["CHAT_ADDRESS_BUDGET_EXEMPT"] = value
    code = "from chatsite import settings; print(json.dumps(settings.CHAT_ADDRESS_BUDGET_EXEMPT))"
    out = subprocess.run(
        [sys.executable, "-c", f"import json; {code}"], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == expected


@pytest.mark.django_db(transaction=True)
async def test_a_proxy_nobody_trusted_is_not_exempt_and_says_so(settings, monkeypatch):
    """With nginx on this machine and TRUSTED_PROXIES forgotten, every
    client is 127.0.0.1: if loopback is exempt, requests carrying
    X-Forwarded-For are not spared (they come through a proxy), and the log
    says, once, what to fix. Without the header, loopback is spared."""
    settings.CHAT_ADDRESS_BUDGET_EXEMPT = ["127.0.0.0/8", "::1"]
    settings.CHAT_SIGNUPS_PER_ADDRESS = 1
    settings.CHAT_PASSWORD_FAILURES_PER_ADDRESS = 1
    warnings = []
    monkeypatch.setattr(accounts, "_warned", set())
    monkeypatch.setattr(accounts.log, "warning", lambda text, *args: warnings.append(text % args))
    await amake_user("alice")
    proxied = await ProtocolClient(headers=[(b"x-forwarded-for", b"198.51.100.7")]).connect()
    await proxied.ok("signup", username="first", password=PASSWORD)
    await proxied.error("signup", "rate_limited", username="second", password=PASSWORD)
    await proxied.error("login", "invalid_credentials", username="first", password="guess")
    await proxied.error("login", "locked", username="nobody", password="guess")
    await proxied.close()
    [warning] = [w for w in warnings if w.startswith("A proxy at")]
    assert "127.0.0.1" in warning and "every client behind it has its address" in warning
    assert warning.endswith("CHAT_ADDRESS_BUDGET_EXEMPT does not spare it. List the proxy in TRUSTED_PROXIES.")
    local = await connected()  # this machine itself, no proxy header
    for name in ("third", "fourth"):
        await local.ok("signup", username=name, password=PASSWORD)
    await local.close()


@pytest.mark.parametrize(
    ("exempt", "trusted", "warned"),
    [
        ([], [], False),
        (["127.0.0.0/8", "::1"], [], True),  # nginx on this machine connects from loopback
        (["::1"], [], True),
        (["10.0.0.0/8"], ["10.0.0.5"], True),  # the trusted proxy itself is spared
        (["192.0.2.0/24"], ["10.0.0.5"], False),
    ],
)
def test_check_deploy_warns_when_the_exemption_spares_a_proxy(settings, exempt, trusted, warned):
    settings.CHAT_ADDRESS_BUDGET_EXEMPT, settings.TRUSTED_PROXIES = exempt, trusted
    ids = [m.id for m in run_checks(include_deployment_checks=True)]
    assert ("accounts.W001" in ids) is warned


@pytest.mark.django_db(transaction=True)
def test_the_server_warns_at_start_when_the_exemption_spares_a_proxy():
    """daphne runs no system checks: behind a proxy the warning is logged
    as it starts."""
    server = Server(CHAT_ADDRESS_BUDGET_EXEMPT="127.0.0.0/8,::1", TRUSTED_PROXIES="10.0.0.5").start()
    server.stop()
    assert "CHAT_ADDRESS_BUDGET_EXEMPT spares 127.0.0.0/8, ::1/128" in server.log_text()
    quiet = Server(CHAT_ADDRESS_BUDGET_EXEMPT="", TRUSTED_PROXIES="10.0.0.5").start()
    quiet.stop()
    assert "CHAT_ADDRESS_BUDGET_EXEMPT" not in quiet.log_text()


@pytest.mark.django_db
def test_refused_while_locked_attempts_are_recorded():
    make_user("alice")
    login_codes("alice", "wrong", times=3)
    assert login_codes("alice", PASSWORD, times=2) == ["locked", "locked"]
    assert LoginAttempt.objects.filter(username="alice", result="locked").count() == 2


@pytest.mark.django_db
def test_signups_per_address_are_budgeted_and_probing_counts(settings):
    settings.CHAT_SIGNUPS_PER_ADDRESS = 3
    make_user("taken")
    with pytest.raises(ServiceError):
        accounts.user_signup(username="taken", password=PASSWORD, ip="10.0.0.1")  # a probe counts
    with pytest.raises(ServiceError):
        accounts.user_signup(username="bad name", password=PASSWORD, ip="10.0.0.1")
    accounts.user_signup(username="newbie", password=PASSWORD, ip="10.0.0.1")
    with pytest.raises(ServiceError) as refused:
        accounts.user_signup(username="another", password=PASSWORD, ip="10.0.0.1")
    assert refused.value.code == "rate_limited" and refused.value.extra["retry_after"] >= 1
    assert not User.objects.filter(username="another").exists()
    accounts.user_signup(username="another", password=PASSWORD, ip="10.0.0.2")
    assert SignupAttempt.objects.filter(ip="10.0.0.1").count() == 3


@pytest.mark.django_db
def test_the_signup_page_says_when_an_address_signed_up_too_often(client, settings):
    settings.CHAT_SIGNUPS_PER_ADDRESS = 1
    client.post("/accounts/signup/", {"username": "one", "password1": PASSWORD, "password2": PASSWORD})
    response = Client().post("/accounts/signup/", {"username": "two", "password1": PASSWORD, "password2": PASSWORD})
    assert b"Too many sign-ups from your address" in response.content
    assert not User.objects.filter(username="two").exists()


@pytest.mark.django_db(transaction=True)
async def test_the_socket_signup_budget_answers_rate_limited(settings):
    settings.CHAT_SIGNUPS_PER_ADDRESS = 1
    c = await connected()
    await c.ok("signup", username="one", password=PASSWORD)
    reply = await c.error("signup", "rate_limited", username="two", password=PASSWORD)
    assert reply["retry_after"] >= 1
    await c.close()


@pytest.mark.django_db(transaction=True)
async def test_password_hashes_queue_up_to_the_concurrency(settings, monkeypatch):
    settings.CHAT_HASHING_CONCURRENCY = 1
    await amake_user("alice")
    running, peak = 0, 0
    real = accounts.user_authenticate

    def slow_authenticate(**kwargs):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            import time

            time.sleep(0.05)
            return real(**kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(accounts, "user_authenticate", slow_authenticate)
    clients = [await connected() for _ in range(4)]
    replies = await asyncio.gather(
        *(c.request("login", username=f"nobody{i}", password="x") for i, c in enumerate(clients))
    )
    assert [r["code"] for r in replies] == ["invalid_credentials"] * 4
    assert peak == 1
    for c in clients:
        await c.close()


# --- 5. Broadcasts ------------------------------------------------------------------


@pytest.mark.django_db
def test_broadcasts_have_their_own_rate_limit(settings):
    settings.CHAT_BROADCAST_RATE_COUNT = 2
    alice = make_user("alice")
    make_user("bob")
    services.message_broadcast(sender=alice, body="1")
    services.message_broadcast(sender=alice, body="2")
    with pytest.raises(ServiceError) as refused:
        services.message_broadcast(sender=alice, body="3")
    assert refused.value.code == "rate_limited"
    services.message_send(sender=alice, to_username="bob", body="private still fine")


@pytest.mark.django_db
def test_rate_limits_are_logged_once_a_window_however_fast_the_flood(settings, caplog, monkeypatch):
    from messaging.services import messages

    monkeypatch.setattr(messages, "_rate_limit_logged", {})
    settings.CHAT_RATE_LIMIT_COUNT = 1
    alice = make_user("alice")
    make_user("bob")
    services.message_send(sender=alice, to_username="bob", body="one")
    with caplog.at_level("WARNING", logger="chat"):
        for _ in range(5):
            with pytest.raises(ServiceError):
                services.message_send(sender=alice, to_username="bob", body="more")
    lines = [r.getMessage() for r in caplog.records if "rate limited" in r.getMessage()]
    assert lines == [f"rate limited: user {alice.pk} sends faster than the limit"]


def test_a_batch_holds_a_few_broadcasts_and_the_rest_wait():
    alice = User(pk=1, username="alice")
    writer = Writer()
    broadcasts = [services.BroadcastRequest(sender=alice, body=f"b{i}") for i in range(10)]
    send = services.SendRequest(sender=alice, to_username="bob", body="s")
    writer.queue = [(r, None) for r in [*broadcasts, send]]
    first = [r for r, _ in writer._next_batch()]
    assert first == [*broadcasts[:4], send]
    assert [r for r, _ in writer.queue] == broadcasts[4:]


@pytest.mark.django_db(transaction=True)
async def test_pending_messages_at_login_come_in_pages_each_once_in_order(monkeypatch):
    from messaging import connection

    monkeypatch.setattr(connection, "PENDING_PAGE", 100)
    alice = await amake_user("alice")
    await amake_user("bob")
    for i in range(350):
        await sync_to_async(services.message_send)(sender=alice, to_username="bob", body=f"m{i}", rate_limit=False)
    b = await connected()
    assert (await b.login("bob"))["pending"] == 350
    got = [(await b.event("message"))["body"] for _ in range(350)]
    assert got == [f"m{i}" for i in range(350)]
    await b.no_frame(0.2)
    await b.close()


# --- 6. Logging out, password changes and deactivation end sockets -----------------


def cookie_of(username):
    http = Client()
    assert http.login(username=username, password=PASSWORD)
    return http, f"sessionid={http.cookies['sessionid'].value}".encode()


@pytest.mark.django_db(transaction=True)
async def test_an_http_logout_ends_the_socket_of_that_session():
    """At once: the pump (every 60 s in tests) never ticks here."""
    await amake_user("alice")
    http, cookie = await sync_to_async(cookie_of)("alice")
    c = await ProtocolClient(headers=[(b"cookie", cookie)]).connect()
    assert (await c.ok("whoami"))["username"] == "alice"
    await sync_to_async(http.post)("/accounts/logout/")
    ended = await c.event("session_ended")
    assert "logged out" in ended["reason"] and ended["action"] == "login"
    assert await c.closed_with() == 4003


@pytest.mark.django_db(transaction=True)
async def test_a_saved_password_or_deactivation_ends_the_socket_at_once():
    """However the account is saved (no service: the shell, a management
    command), its socket ends then, not at the pump's next check."""
    await amake_user("alice")
    await amake_user("bob")
    a = await connected("alice")
    b = await connected("bob")
    alice = await sync_to_async(User.objects.get)(username="alice")
    alice.set_password("brand-new-password-1")
    await sync_to_async(alice.save)()
    ended = await a.event("session_ended")
    assert "password" in ended["reason"] and ended["action"] == "login"
    assert await a.closed_with() == 4003
    bob = await sync_to_async(User.objects.get)(username="bob")
    bob.last_name = "Unchanged login"
    await sync_to_async(bob.save)(update_fields=["last_name"])
    assert (await b.ok("whoami"))["username"] == "bob"  # nothing that ends a login
    bob.is_active = False
    await sync_to_async(bob.save)()
    ended = await b.event("session_ended")
    assert "deactivated" in ended["reason"] and ended["action"] == "stop"
    assert await b.closed_with() == 4003


@pytest.mark.django_db(transaction=True)
def test_a_logout_or_a_save_goes_on_when_ending_the_socket_fails(monkeypatch, caplog):
    """Ending the socket at once is a courtesy: the pump's check would."""

    def broken(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services, "presence_session_logged_out", broken)
    monkeypatch.setattr(services, "presence_user_recheck", broken)
    make_user("alice")
    http, _ = cookie_of("alice")
    assert http.post("/accounts/logout/").status_code == 302
    assert http.get("/").status_code == 302  # logged out all the same
    alice = User.objects.get(username="alice")
    alice.set_password("brand-new-password-1")
    alice.save()
    assert User.objects.get(username="alice").check_password("brand-new-password-1")
    assert "could not end the connections of a session logging out" in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_the_pumps_sessions_check_ends_what_no_signal_told_of(settings):
    """An UPDATE sends no signal; the pump's check of every socket finds it."""
    settings.CHAT_PUMP_SECONDS = 0.1
    settings.CHAT_SESSIONS_CHECK_SECONDS = 0.1
    await amake_user("bob")
    b = await connected("bob")
    await sync_to_async(User.objects.filter(username="bob").update)(is_active=False)
    ended = await b.event("session_ended")
    assert "deactivated" in ended["reason"] and ended["action"] == "stop"
    assert await b.closed_with() == 4003


@pytest.mark.django_db(transaction=True)
async def test_the_admin_password_change_ends_the_socket_at_once():
    await amake_user("alice")
    a = await connected("alice")
    staff = Client()
    await sync_to_async(lambda: staff.force_login(make_user("root", is_staff=True, is_superuser=True)))()
    alice = await sync_to_async(User.objects.get)(username="alice")
    await sync_to_async(staff.post)(
        f"/admin/accounts/user/{alice.pk}/password/", {"password1": "zx-new-pass-77", "password2": "zx-new-pass-77"}
    )
    assert "password" in (await a.event("session_ended"))["reason"]
    assert await a.closed_with() == 4003


@pytest.mark.django_db(transaction=True)
async def test_takeover_rechecks_the_session():
    """An anonymous socket opened while the user was online cannot become
    the user once that session is logged out."""
    await amake_user("alice")
    http, cookie = await sync_to_async(cookie_of)("alice")
    first = await ProtocolClient(headers=[(b"cookie", cookie)]).connect()
    spare = await ProtocolClient(headers=[(b"cookie", cookie)]).connect()
    assert (await spare.event("error"))["code"] == "already_online"
    await sync_to_async(http.post)("/accounts/logout/")
    await spare.error("login", "bad_request", takeover=True)
    await first.close()
    await spare.close()


@pytest.mark.django_db(transaction=True)
async def test_anonymous_connections_must_log_in_in_time(settings):
    # Long enough for a login on a loaded machine; the idle one is closed then.
    settings.CHAT_LOGIN_DEADLINE_SECONDS = 1
    await amake_user("alice")
    idle = await connected()
    punctual = await connected("alice")
    assert await idle.closed_with() == 1008
    await asyncio.sleep(1.1)
    await punctual.ok("online")
    await punctual.close()


# --- 9. Proxies ---------------------------------------------------------------------


def scope(peer, *headers):
    return {"client": (peer, 1234), "headers": [(k.encode(), v.encode()) for k, v in headers]}


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("203.0.113.9", [("x-forwarded-for", "1.2.3.4")], "203.0.113.9"),  # not a proxy: ignored
        ("127.0.0.1", [("x-forwarded-for", "1.2.3.4")], "1.2.3.4"),
        ("127.0.0.1", [("x-forwarded-for", "6.6.6.6, 1.2.3.4")], "1.2.3.4"),  # the proxy's hop, not the client's
        ("127.0.0.1", [("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")], "1.2.3.4"),  # two proxies
        ("127.0.0.1", [("x-forwarded-for", "1.2.3.4, not-an-ip")], "127.0.0.1"),
        ("127.0.0.1", [], "127.0.0.1"),
        ("::ffff:127.0.0.1", [("x-forwarded-for", "[2001:db8::1]:443")], "2001:db8::1"),
        ("bogus", [("x-forwarded-for", "1.2.3.4")], "0.0.0.0"),
    ],
)
def test_the_client_address_behind_trusted_proxies(peer, headers, expected):
    address, _ = client_of(scope(peer, *headers), trusted_networks(["127.0.0.1", "10.0.0.0/8"]))
    assert address == expected


@pytest.mark.django_db(transaction=True)
async def test_rotating_forwarded_for_does_not_dodge_the_lockout(settings):
    await amake_user("alice")
    attacker = await connected()
    for i in range(3):
        attacker.comm.scope["headers"] = [(b"x-forwarded-for", f"198.51.100.{i}".encode())]
        await attacker.error("login", "invalid_credentials", username="alice", password="guess")
    await attacker.error("login", "locked", username="alice", password=PASSWORD)
    await attacker.close()
    assert set(await sync_to_async(lambda: set(LoginAttempt.objects.values_list("ip", flat=True)))()) == {"127.0.0.1"}


@pytest.mark.django_db(transaction=True)
async def test_behind_a_trusted_proxy_each_client_has_its_own_lockout(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    await amake_user("alice")
    behind = [
        await ProtocolClient(headers=[(b"x-forwarded-for", f"198.51.100.{i}".encode())]).connect() for i in (1, 2)
    ]
    for _ in range(3):
        await behind[0].error("login", "invalid_credentials", username="alice", password="guess")
    await behind[0].error("login", "locked", username="alice", password=PASSWORD)
    await behind[1].login("alice")  # another client behind the same proxy
    for c in behind:
        await c.close()


@pytest.mark.django_db
def test_the_login_form_records_a_valid_address(client):
    make_user("alice")
    client.post("/accounts/login/", {"username": "alice", "password": "wrong"}, REMOTE_ADDR="<script>")
    assert LoginAttempt.objects.get().ip in ("127.0.0.1", "0.0.0.0")


# --- 10. Look-alike names -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("first", "second"),
    [("Émile", "émile"), ("alice", "ALICE"), ("alice", "Ａｌｉｃｅ"), ("straße", "STRASSE"), ("ǅemal", "džemal")],
)
def test_names_people_read_as_one_are_taken(first, second):
    accounts.user_signup(username=first, password=PASSWORD)
    with pytest.raises(ServiceError) as taken:
        accounts.user_signup(username=second, password=PASSWORD)
    assert taken.value.code == "username_taken"


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["аlice", "pаypal", "Αlpha_a"])
def test_names_mixing_alphabets_are_refused(name):
    with pytest.raises(ServiceError) as refused:
        accounts.user_signup(username=name, password=PASSWORD)
    assert refused.value.code == "invalid" and "one alphabet" in refused.value.message


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "control",
    [
        "\u202a",
        "\u202b",
        "\u202c",
        "\u202d",
        "\u202e",
        "\u2066",
        "\u2067",
        "\u2068",
        "\u2069",
        "\u200e",
        "\u200f",
        "\u061c",
    ],
)
async def test_names_with_direction_controls_are_refused_clearly(control):
    """ "\u202eecila" shows as "alice": a name may carry no control that
    changes the direction of text, and the error says why, on the socket
    as on the page (one service), and in the admin (the model's field)."""
    client = await connected()
    refused = await client.error("signup", "invalid", username=f"{control}ecila", password=PASSWORD)
    assert "direction controls" in refused["message"] and f"U+{ord(control):04X}" in refused["message"]
    assert "Enter a valid username" not in refused["message"]
    await client.close()
    with pytest.raises(ValidationError) as invalid:
        await sync_to_async(User(username=f"ali{control}ce", password="x").full_clean)()
    assert "direction controls" in str(invalid.value)


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["José", "Дмитрий", "σοφία", "山田たろう", "김철수", "user_42", "zoë.o'"[:-1]])
def test_names_in_one_script_are_welcome(name):
    assert accounts.user_signup(username=name, password=PASSWORD).username == name


@pytest.mark.django_db
def test_stored_names_are_nfkc():
    assert accounts.user_signup(username="ｂｏｂ", password=PASSWORD).username == "bob"


# --- 11. Smaller things -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_deep_refs_and_non_json_numbers_are_bad_requests():
    await amake_user("alice")
    c = await connected("alice")
    for raw in [
        '{"type": "online", "ref": ' + "[" * 970 + "]" * 970 + "}",
        '{"type": "online", "ref": ' + "[" * 40 + "]" * 40 + "}",
        '{"type": "online", "ref": NaN}',
        '{"type": "online", "ref": Infinity}',
        '{"type": "ack", "ids": [-Infinity]}',
    ]:
        await c.send_raw(raw)
        assert (await c.reply())["code"] == "bad_request", raw[:40]
    await c.send_raw(json.dumps({"type": "online", "ref": [[[[["deep enough"]]]]]}))
    assert (await c.reply())["ref"] == [[[[["deep enough"]]]]]
    await c.close()


@pytest.mark.django_db(transaction=True)
async def test_overlong_strings_never_reach_the_database():
    """On PostgreSQL a 60,000-character name in a varchar(150) was an
    internal_error; now every such field is refused first."""
    await amake_user("alice")
    c = await connected()
    name = "x" * 60000
    await c.error("login", "invalid_credentials", username=name, password="x")
    await c.error("login", "invalid_credentials", username="alice", password="p" * 5000)
    await c.error("signup", "invalid", username=name[:2000], password=PASSWORD)
    await c.login("alice")
    await c.error("send", "unknown_user", to=name[:1000], body="hi")
    await c.error("block", "unknown_user", username=name[:1000])
    await c.error("history", "unknown_user", **{"with": name[:1000]})
    await c.error("typing", "unknown_user", to=name[:1000])
    await c.error("send", "invalid", to="alice", body="x", client_id="c" * 65)
    await c.error("search", "invalid", query="q" * 201)
    assert not await sync_to_async(LoginAttempt.objects.filter(username__startswith="xxx").exists)()
    await c.close()


@pytest.mark.django_db
def test_old_records_are_pruned(settings):
    alice, _ = make_user("alice"), make_user("bob")
    LoginAttempt.objects.create(username="alice", ip="10.0.0.1", result="failure")
    LoginAttempt.objects.create(username="alice", ip="10.0.0.1", result="failure")
    old = timezone.now() - timedelta(days=settings.CHAT_LOGIN_ATTEMPTS_KEEP_DAYS + 1)
    LoginAttempt.objects.filter(pk=LoginAttempt.objects.order_by("id").first().pk).update(at=old)
    services.message_send(sender=alice, to_username="bob", body="x", client_id="a")
    services.message_send(sender=alice, to_username="bob", body="y", client_id="b")
    ClientRequest.objects.filter(client_id="a").update(created_at=timezone.now() - timedelta(days=2))
    edited = Message.objects.get(body="x").pk
    for body in ("x2", "x3"):
        services.message_edit(user=alice, message_id=edited, body=body)
    Edit.objects.filter(pk=Edit.objects.order_by("id").first().pk).update(edited_at=timezone.now() - timedelta(hours=2))
    for email in ("old@example.com", "new@example.com"):
        PasswordResetAttempt.objects.create(ip="10.0.0.1", email=email)
    window = timedelta(seconds=settings.CHAT_RESET_WINDOW_SECONDS + 1)
    PasswordResetAttempt.objects.filter(email="old@example.com").update(at=timezone.now() - window)
    for key, until in (("gone", timezone.now() - timedelta(days=1)), ("held", timezone.now() + timedelta(days=1))):
        NameHold.objects.create(username_key=key, until=until)
    assert services.records_prune() == {
        "client ids": 1,
        "login attempts": 1,
        "edits": 1,
        "reset requests": 1,
        "name holds": 1,
    }
    assert PasswordResetAttempt.objects.get().email == "new@example.com"
    assert NameHold.objects.get().username_key == "held"
    assert LoginAttempt.objects.count() == 1 and ClientRequest.objects.get().client_id == "b"
    assert Message.objects.count() == 2 and Edit.objects.count() == 1  # the messages stay


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/accounts/login/", "locked", "/accounts/signup/", "/admin/login/"])
def test_every_page_has_a_csp_without_inline_script(client, url):
    make_user("alice")
    if url == "/":
        client.login(username="alice", password=PASSWORD)
    if url == "locked":  # the login page counting a lockout down
        for _ in range(4):
            response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert b"Try again in" in response.content
    else:
        response = client.get(url)
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
    html = response.content.decode()
    inline = [
        tag for tag in re.findall(r"<script\b[^>]*>", html) if "src=" not in tag and "application/json" not in tag
    ]
    assert inline == [], inline
    assert not re.search(r"\son[a-z]+=\"", html), "inline event handler"


def test_acks_do_not_hold_back_the_requests_queued_behind_them():
    """A broadcast to thousands comes back as thousands of acks: a send or
    a broadcast queued behind them goes in the next batch, beside a few of
    them; acks alone go many to a batch; the rest wait, in order."""
    from messaging import writer as writer_module

    alice = User(pk=1, username="alice")
    writer = Writer()
    acks = [services.AckRequest(user=alice, ids=[i]) for i in range(1, writer_module.MAX_ACKS_PER_BATCH + 1001)]
    send = services.SendRequest(sender=alice, to_username="bob", body="s")
    broadcast = services.BroadcastRequest(sender=alice, body="b")
    writer.queue = [(r, None) for r in [*acks, send, broadcast]]
    beside = writer_module.MAX_ACKS_BESIDE
    assert [r for r, _ in writer._next_batch()] == [*acks[:beside], send, broadcast]
    alone = [r for r, _ in writer._next_batch()]
    assert alone == acks[beside : beside + writer_module.MAX_ACKS_PER_BATCH]
    assert [r for r, _ in writer.queue] == acks[beside + writer_module.MAX_ACKS_PER_BATCH :]


@pytest.mark.django_db
async def test_a_broken_batch_is_applied_again_apart_with_its_acks_together(monkeypatch, caplog):
    """A request that breaks the batch's transaction fails alone: the others
    are applied again, one by one, and the acks (thousands after a
    broadcast) together, in one transaction and one logged failure."""
    from messaging import writer as writer_module

    alice = User(pk=1, username="alice")
    good = services.SendRequest(sender=alice, to_username="bob", body="good")
    bad = services.SendRequest(sender=alice, to_username="bob", body="bad")
    acks = [services.AckRequest(user=alice, ids=[i]) for i in range(1, 4)]
    calls = []

    def apply(*, requests):
        calls.append(list(requests))
        if bad in requests:
            raise RuntimeError("broken")
        return [f"done {i}" for i, _ in enumerate(requests)]

    monkeypatch.setattr(writer_module.services, "requests_apply", apply)
    writer = Writer()
    with caplog.at_level("ERROR", logger="chat"):
        results = await asyncio.gather(
            *(writer.submit(r) for r in [acks[0], good, bad, *acks[1:]]), return_exceptions=True
        )
    assert calls == [[acks[0], good, bad, *acks[1:]], acks, [good], [bad]]
    assert results[0] == "done 0" and results[1] == "done 0" and results[3:] == ["done 1", "done 2"]
    assert isinstance(results[2], RuntimeError)
    assert [r.getMessage() for r in caplog.records] == ["request failed"]
