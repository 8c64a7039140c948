"""Account services against the database, the HTTP pages with Django's client."""

import re
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts import selectors, services
from accounts.models import LoginAttempt, NameHold, PasswordResetAttempt, SignupAttempt, User
from core.errors import ServiceError

from .helpers import PASSWORD, make_user


def run_parallel(func, n):
    """Run func n times at once in threads (each with its own DB connection)."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def worker(i):
        try:
            barrier.wait()
            results[i] = func()
        except ServiceError as e:
            results[i] = e.code
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def authenticate(username="alice", password=PASSWORD, ip="127.0.0.1"):
    return services.user_authenticate(username=username, password=password, ip=ip)


def codes_of(username="alice", password="wrong", ip="127.0.0.1", times=1):
    out = []
    for _ in range(times):
        try:
            authenticate(username, password, ip)
            out.append("ok")
        except ServiceError as e:
            out.append(e.code)
    return out


@pytest.mark.django_db
class TestSignup:
    def test_creates_a_user_with_a_hashed_password(self):
        user = services.user_signup(username="zoë", password=PASSWORD)
        assert user.username == "zoë" and user.check_password(PASSWORD)
        assert PASSWORD not in user.password
        assert list(SignupAttempt.objects.values_list("ip", "username")) == [("0.0.0.0", "zoë")]

    def test_the_loser_of_a_race_for_a_name_is_told_it_is_taken(self, monkeypatch):
        services.user_signup(username="alice", password=PASSWORD)
        # The other sign-up commits between the check and the insert.
        monkeypatch.setattr(services, "_name_unavailable", lambda key: False)
        with pytest.raises(ServiceError) as e:
            services.user_signup(username="Alice", password=PASSWORD)
        assert (e.value.code, e.value.message) == ("username_taken", "The username 'Alice' is taken.")

    @pytest.mark.parametrize("username", ["", "has space", "x" * 151, "semi;colon"])
    def test_rejects_bad_usernames(self, username):
        with pytest.raises(ServiceError) as e:
            services.user_signup(username=username, password=PASSWORD)
        assert e.value.code == "invalid"

    @pytest.mark.parametrize("password", ["short", "password123", "1234567890", "alice-the-user"])
    def test_rejects_weak_passwords(self, password):
        with pytest.raises(ServiceError) as e:
            services.user_signup(username="alice-the-user", password=password)
        assert e.value.code == "invalid"

    def test_a_weak_password_is_told_every_rule_it_breaks(self):
        with pytest.raises(ServiceError) as e:
            services.user_signup(username="alice", password="12345")
        assert e.value.message.startswith("Password: This password is too short.")
        assert e.value.message.endswith(". This password is too common. This password is entirely numeric.")

    def test_an_email_is_stored_normalised_and_a_bad_one_refused(self):
        user = services.user_signup(username="alice", password=PASSWORD, email="  Alice@EXAMPLE.com ")
        assert user.email == "Alice@example.com"
        with pytest.raises(ServiceError) as e:
            services.user_signup(username="bob", password=PASSWORD, email="bob@")
        assert (e.value.code, e.value.message) == ("invalid", "Email: enter a valid email address.")
        assert not User.objects.filter(username="bob").exists()
        assert services.user_email_set(user=user, email="alice@example.org") == "alice@example.org"
        assert services.user_email_set(user=user, email="") == ""
        assert User.objects.get(pk=user.pk).email == ""

    def test_a_deleted_accounts_name_is_held_until_the_hold_ends(self):
        alice = services.user_signup(username="alice", password=PASSWORD, email="alice@example.com")
        User.objects.filter(pk=alice.pk).update(first_name="Alice", last_name="Liddell", is_staff=True)
        alice.refresh_from_db()
        services.account_anonymise(user=alice)
        gone = User.objects.get(pk=alice.pk)
        assert (gone.username, gone.email, gone.first_name, gone.last_name) == (f"deleted-{alice.pk}", "", "", "")
        assert not (gone.is_active or gone.is_staff or gone.is_superuser or gone.has_usable_password())
        for name in ("alice", "ALICE", f"deleted-{alice.pk + 1}"):
            with pytest.raises(ServiceError) as e:
                services.user_signup(username=name, password=PASSWORD)
            assert e.value.code == "username_taken", name
        services.user_signup(username="bob", password=PASSWORD)  # a hold is for its name only
        NameHold.objects.update(until=timezone.now() - timedelta(seconds=1))
        services.user_signup(username="alice", password=PASSWORD)

    def test_names_are_unique_ignoring_case(self):
        services.user_signup(username="alice", password=PASSWORD)
        for name in ("alice", "ALICE"):
            with pytest.raises(ServiceError) as e:
                services.user_signup(username=name, password=PASSWORD)
            assert e.value.code == "username_taken"


@pytest.mark.django_db
class TestLockout:
    def test_unknown_user_and_wrong_password_look_alike(self):
        make_user("alice")
        assert codes_of("alice") == codes_of("nobody") == ["invalid_credentials"]

    def test_three_failures_lock_the_pair_for_the_lockout(self, settings):
        make_user("alice")
        assert codes_of(times=3) == ["invalid_credentials"] * 3
        assert codes_of(password=PASSWORD) == ["locked"]  # right password, not checked
        assert codes_of(ip="10.0.0.2", password=PASSWORD) == ["ok"]
        assert services.login_lock_remaining(username="alice", ip="127.0.0.1") == settings.LOGIN_LOCKOUT_SECONDS

    def test_the_lock_ends_after_the_lockout(self, settings):
        make_user("alice")
        codes_of(times=3)
        LoginAttempt.objects.update(locked_until=timezone.now() - timedelta(seconds=1))
        assert codes_of(password=PASSWORD) == ["ok"]

    def test_after_a_lock_ends_the_count_starts_again(self):
        make_user("alice")
        codes_of(times=3)
        assert codes_of(password=PASSWORD) == ["locked"]  # a refusal is no failure
        LoginAttempt.objects.filter(locked_until__isnull=False).update(
            locked_until=timezone.now() - timedelta(seconds=1)
        )
        assert codes_of(times=2) == ["invalid_credentials"] * 2  # not locked again at once
        assert codes_of(password=PASSWORD) == ["ok"]
        # A success starts it again too, even with an ended lock before it.
        assert codes_of(times=2) == ["invalid_credentials"] * 2
        assert codes_of(password=PASSWORD) == ["ok"]

    def test_a_success_resets_the_count(self):
        make_user("alice")
        codes_of(times=2)
        assert codes_of(password=PASSWORD) == ["ok"]
        assert codes_of(times=2) == ["invalid_credentials"] * 2
        assert codes_of(password=PASSWORD) == ["ok"]

    def test_limit_and_duration_come_from_settings(self, settings):
        settings.LOGIN_FAILURE_LIMIT = 5
        settings.LOGIN_LOCKOUT_SECONDS = 7
        make_user("alice")
        assert codes_of(times=6) == ["invalid_credentials"] * 5 + ["locked"]
        assert services.login_lock_remaining(username="alice", ip="127.0.0.1") == 7

    def test_the_failure_before_the_lock_warns_and_the_last_says_for_how_long(self, settings):
        make_user("alice")
        messages = []
        for _ in range(3):
            with pytest.raises(ServiceError) as e:
                authenticate(password="wrong")
            messages.append(e.value.message)
        wrong = "Wrong username or password."
        assert messages == [
            wrong,
            f"{wrong} One more wrong password locks this name for a minute.",
            f"{wrong} This name is now locked for a minute.",
        ]
        with pytest.raises(ServiceError) as e:
            authenticate()
        assert re.fullmatch(r"Too many logins\. Try again in \d+ seconds\.", e.value.message)
        settings.LOGIN_LOCKOUT_SECONDS = 7
        assert services.lockout_warning(0) == " This name is now locked for 7 seconds."

    def test_unlock_clears_the_lock(self):
        make_user("alice")
        codes_of(times=4)
        services.login_unlock(username="alice")
        assert codes_of(password=PASSWORD) == ["ok"]

    def test_unlock_of_one_address_leaves_the_others_and_the_successes(self):
        make_user("alice")
        codes_of(password=PASSWORD)
        codes_of(times=3)
        codes_of(times=3, ip="10.0.0.2")
        assert services.login_unlock(username="alice", ip="127.0.0.1") == 3
        assert codes_of(password=PASSWORD) == ["ok"]
        assert codes_of(password=PASSWORD, ip="10.0.0.2") == ["locked"]
        assert LoginAttempt.objects.filter(result=LoginAttempt.Result.SUCCESS).count() == 2

    def test_inactive_users_cannot_log_in(self):
        make_user("alice", is_active=False)
        assert codes_of(password=PASSWORD) == ["invalid_credentials"]


@pytest.mark.django_db
def test_a_resume_token_is_a_django_login_that_lasts_the_token_lifetime(settings, rf):
    from importlib import import_module

    from django.contrib.auth import get_user

    settings.CHAT_TOKEN_SECONDS = 600
    alice = make_user("alice")
    request = rf.get("/")
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(services.session_create(user=alice))
    assert get_user(request) == alice
    assert request.session.get_expiry_age() == 600


@pytest.mark.django_db
def test_a_password_change_needs_the_old_password_and_a_good_new_one():
    alice = make_user("alice", email="alice@example.org")
    change = dict(user=alice, ip="127.0.0.1")
    with pytest.raises(ServiceError) as e:
        services.password_change(old_password="wrong", new_password="zx-new-pass-77", **change)
    assert (e.value.code, e.value.message) == ("invalid_credentials", "Your current password is wrong.")
    with pytest.raises(ServiceError) as e:
        services.password_change(old_password=PASSWORD, new_password="12345", **change)
    assert e.value.code == "invalid" and e.value.message.startswith("Password: This password is too short.")
    with pytest.raises(ServiceError) as e:
        services.password_change(old_password=PASSWORD, new_password="alice@example.org", **change)
    assert "too similar to the email address" in e.value.message  # checked against this user
    services.password_change(old_password=PASSWORD, new_password="zx-new-pass-77", **change)
    assert User.objects.get(pk=alice.pk).check_password("zx-new-pass-77")
    codes_of(times=3)  # locked: the old password is checked like a login
    with pytest.raises(ServiceError) as e:
        services.password_change(old_password="zx-new-pass-77", new_password="zx-newer-pass-78", **change)
    assert e.value.code == "locked"


@pytest.mark.django_db
def test_reset_requests_are_budgeted_per_address_and_per_account(settings):
    settings.CHAT_RESETS_PER_ADDRESS, settings.CHAT_RESETS_PER_ACCOUNT = 4, 1
    emails = [" Alice@Example.com", "alice@example.com", "ALICE@example.com "]  # one address
    budget = [services.password_reset_budget(email=email, ip="10.0.0.1") for email in emails]
    assert budget == [True, False, False]  # answered as usual, and nothing is sent
    assert services.password_reset_budget(email="bob@example.com", ip="10.0.0.1")
    with pytest.raises(ServiceError) as e:
        services.password_reset_budget(email="carol@example.com", ip="10.0.0.1")
    assert e.value.code == "rate_limited" and e.value.message.startswith("Too many requests from your address.")
    assert 1 <= e.value.extra["retry_after"] <= settings.CHAT_RESET_WINDOW_SECONDS
    assert services.password_reset_budget(email="carol@example.com", ip="10.0.0.2")
    PasswordResetAttempt.objects.update(at=timezone.now() - timedelta(seconds=settings.CHAT_RESET_WINDOW_SECONDS + 1))
    assert services.password_reset_budget(email="alice@example.com", ip="10.0.0.1")
    settings.CHAT_RESETS_PER_ACCOUNT = 0  # no limit
    assert all(services.password_reset_budget(email="dave@example.com", ip="10.0.0.3") for _ in range(3))


@pytest.mark.django_db
def test_bulk_created_users_share_one_password_and_taken_names_are_skipped():
    make_user("Alice")
    done = []
    names = ["alice", "bob", "ｃarol", "dave", "erin"]  # a fullwidth c: stored NFKC
    assert services.user_bulk_create(usernames=names, password=PASSWORD, batch_size=2, progress=done.append) == 4
    assert done == [2, 2, 1]
    assert sorted(User.objects.values_list("username", flat=True)) == ["Alice", "bob", "carol", "dave", "erin"]
    created = User.objects.exclude(username="Alice")
    assert all(u.check_password(PASSWORD) and u.username_key == u.username for u in created)
    assert services.user_bulk_create(usernames=["BOB", "frank"], password=PASSWORD) == 1
    with pytest.raises(ServiceError):
        services.user_bulk_create(usernames=["has space"], password=PASSWORD)


@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_attempts_get_no_more_than_the_limit_checked():
    make_user("alice")
    results = run_parallel(lambda: authenticate(password="wrong"), 10)
    assert sorted(results).count("invalid_credentials") == 3
    assert sorted(results).count("locked") == 7
    assert LoginAttempt.objects.filter(result="failure").count() == 3


# --- HTTP pages -------------------------------------------------------------------


@pytest.mark.django_db
class TestPages:
    def test_signup_page_creates_and_logs_in(self, client):
        response = client.post(
            "/accounts/signup/", {"username": "erin", "password1": PASSWORD, "password2": PASSWORD}, follow=True
        )
        assert response.wsgi_request.user.username == "erin"
        assert b"erin" in response.content

    def test_signup_page_shows_errors(self, client):
        make_user("erin")
        response = client.post("/accounts/signup/", {"username": "erin", "password1": "x", "password2": "y"})
        assert b"The two passwords differ" in response.content
        response = client.post("/accounts/signup/", {"username": "erin", "password1": PASSWORD, "password2": PASSWORD})
        assert b"is taken" in response.content

    def test_login_and_logout(self, client):
        make_user("alice")
        response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
        assert response.status_code == 302
        assert client.get("/").wsgi_request.user.username == "alice"
        client.post("/accounts/logout/")
        assert not client.get("/").wsgi_request.user.is_authenticated

    def test_login_lockout_says_how_long_and_shares_the_socket_count(self, client):
        make_user("alice")
        codes_of(times=2)  # as the WebSocket would, from the same IP
        response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert b"Please enter a correct username and password" in response.content
        assert b"This name is now locked for a minute." in response.content  # issue 24.5
        response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
        assert b"Try again in 60 seconds" in response.content
        assert not client.get("/").wsgi_request.user.is_authenticated
        assert codes_of(password=PASSWORD) == ["locked"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "engine",
    [
        "django.contrib.sessions.backends.db",
        "django.contrib.sessions.backends.cached_db",
        "django.contrib.sessions.backends.cache",
    ],
)
def test_a_session_is_checked_by_one_rule_with_any_engine(settings, engine):
    settings.SESSION_ENGINE = engine
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    tokens = {u.username: services.session_create(user=u) for u in (alice, bob, carol)}
    assert selectors.user_for_session(tokens["alice"]) == alice
    assert selectors.user_for_session(tokens["alice"] + "x" * (selectors.TOKEN_MAX + 1)) is None
    services.session_end(session_key=tokens["bob"])
    alice.set_password("brand-new-password-1")
    alice.save()
    carol.is_active = False
    carol.save()
    checks = selectors.sessions_check([*tokens.values(), "no-such-session"])
    assert checks[tokens["alice"]] == selectors.SessionCheck(user=alice, ended=selectors.SessionEnded.PASSWORD_CHANGED)
    assert checks[tokens["bob"]] == selectors.SessionCheck(user=None, ended=selectors.SessionEnded.GONE)
    assert checks[tokens["carol"]].ended is selectors.SessionEnded.DEACTIVATED
    assert checks["no-such-session"].ended is selectors.SessionEnded.GONE
    assert [selectors.user_for_session(t) for t in tokens.values()] == [None, None, None]


@pytest.mark.django_db
def test_failed_logins_and_lockouts_are_logged_without_the_password(caplog, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    make_user("alice")
    with caplog.at_level("WARNING", logger="chat"):
        for _ in range(3):
            with pytest.raises(ServiceError):
                services.user_authenticate(username="alice", password="guess-42", ip="192.0.2.7")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "guess-42" not in text
    failed, locked, refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("login ")]
    assert (failed, locked) == ("login failed: alice from 192.0.2.7", "login failed: alice from 192.0.2.7, now locked")
    seconds = re.fullmatch(r"login refused: alice from 192\.0\.2\.7 is locked for (\d+) s \(logins\)", refused)
    assert seconds and 1 <= int(seconds[1]) <= settings.LOGIN_LOCKOUT_SECONDS, refused


@pytest.mark.django_db
def test_the_active_user_count_follows_every_way_users_change():
    """Triggers keep it (broadcasts read it instead of counting users)."""
    from accounts.models import ActiveUserCount, User
    from accounts.selectors import active_user_count

    def real() -> int:
        return User.objects.filter(is_active=True).count()

    base = active_user_count()
    assert base == real()
    make_user("one")
    User.objects.bulk_create([User(username=f"bulk{i}") for i in range(5)] + [User(username="off", is_active=False)])
    assert active_user_count() == real() == base + 6
    User.objects.filter(username__startswith="bulk").update(is_active=False)
    User.objects.filter(username="off").update(is_active=True, last_login=None)
    User.objects.filter(username="one").update(last_login=None)  # no change of is_active
    assert active_user_count() == real() == base + 2
    User.objects.filter(username__in=["one", "bulk0"]).delete()
    assert active_user_count() == real() == base + 1
    ActiveUserCount.objects.all().delete()  # as a TRUNCATE leaves it
    assert active_user_count() == real() == base + 1
    make_user("two")
    assert active_user_count() == real() == base + 2
