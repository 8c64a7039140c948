"""Management commands through call_command."""

import contextlib
import gc
import io
import os
import subprocess
import sys
import weakref
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth import authenticate, get_user_model, hashers
from django.core.management import CommandError, call_command
from django.db.models.signals import post_init
from django.utils import timezone

from messaging import selectors, services
from messaging.models import Block, Delivery, Message, Presence, Room, RoomMember

from .helpers import make_user
from .legacy import write_legacy_copy, write_legacy_sample

pytestmark = pytest.mark.django_db
User = get_user_model()


def run(*args, **kwargs):
    out = io.StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


@pytest.fixture
def sample(tmp_path):
    return write_legacy_sample(tmp_path)


def write(folder, csv_text, files=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user_pass.csv").write_text(csv_text, encoding="utf-8")
    (folder / "user_data").mkdir(exist_ok=True)
    for name, text in (files or {}).items():
        (folder / "user_data" / name).write_text(text, encoding="utf-8")
    return folder


# --- chat_import ---------------------------------------------------------------


def test_import_is_a_dry_run_by_default(sample):
    out = run("chat_import", str(sample))
    assert "Dry run" in out and "7 users" in out
    assert User.objects.count() == 0 and Message.objects.count() == 0


def test_import_the_sample(sample):
    out = run("chat_import", str(sample.parent), "--commit")
    assert set(User.objects.values_list("username", flat=True)) == {
        "alice",
        "bob",
        "carol",
        "dave",
        "eve",
        "zoë",
        "walt",
    }
    # Passwords are hashed, and work.
    assert "wonderland42" not in User.objects.get(username="alice").password
    assert authenticate(username="alice", password="wonderland42")
    assert authenticate(username="carol", password="comma,inside")
    assert authenticate(username="dave", password='say "hi"')
    assert authenticate(username="zoë", password="ünïcode-pass")
    assert authenticate(username="bob", password="builder-2017")  # first row wins
    # Reported and skipped.
    assert "line 6: bob again" in out and "mallory: no password" in out
    assert "frank.json: no such user" in out and "dave.json: not valid JSON" in out
    assert "sender ghost does not exist" in out and "ghost does not exist" in out
    # Blocks and pending messages.
    assert set(Block.objects.values_list("blocker__username", "blocked__username")) == {
        ("alice", "dave"),
        ("carol", "bob"),
    }
    alice_pending = Delivery.objects.filter(recipient__username="alice", acked_at=None).select_related(
        "message__sender"
    )
    assert sorted((d.message.sender.username, d.message.kind) for d in alice_pending) == [
        ("bob", "private"),
        ("carol", "broadcast"),
        ("eve", "private"),
    ]
    html = Message.objects.get(sender__username="eve")
    assert html.body == '<b>bold?</b> & "quotes"' and html.sent_at.year == 2017
    assert Delivery.objects.filter(recipient__username="zoë").count() == 1
    assert User.objects.get(username="alice").date_joined.year == 2017
    # A data file saved with a byte order mark is read like any other.
    assert "walt.json" not in out
    assert Delivery.objects.filter(recipient__username="walt", message__body="saved on Windows").exists()


def test_import_twice_imports_nothing_twice(sample):
    run("chat_import", str(sample), "--commit")
    counts = (User.objects.count(), Message.objects.count(), Delivery.objects.count(), Block.objects.count())
    out = run("chat_import", str(sample), "--commit")
    assert "0 users, 7 users existing, 0 messages, 0 deliveries, 0 blocks" in out
    assert counts == (User.objects.count(), Message.objects.count(), Delivery.objects.count(), Block.objects.count())


def test_import_refuses_names_that_accounts_it_did_not_create_have(sample):
    """Someone signed up as "alice" (and "Bob") before the import: the old
    server's alice is not them, so nothing of hers may go to that account."""
    make_user("alice")
    make_user("Bob")
    for commit in ([], ["--commit"]):
        with pytest.raises(CommandError, match="--merge") as refused:
            run("chat_import", str(sample), *commit)
        assert "alice" in str(refused.value) and "bob (taken as Bob)" in str(refused.value)
    assert User.objects.count() == 2
    assert Message.objects.count() == 0 and Delivery.objects.count() == 0 and Block.objects.count() == 0


def test_import_with_merge_gives_an_existing_account_what_was_pending(sample):
    alice = make_user("alice")
    out = run("chat_import", str(sample), "--commit", "--merge")
    assert "6 users, 1 users existing" in out
    assert Block.objects.filter(blocker=alice, blocked__username="dave").exists()
    assert Delivery.objects.filter(recipient=alice).count() == 3
    # Accounts the import made are its own: a second run needs no --merge,
    # but alice's still does.
    with pytest.raises(CommandError, match="alice"):
        run("chat_import", str(sample), "--commit")
    alice.delete()  # the import makes its own alice now, and leaves the rest
    assert "1 users, 6 users existing" in run("chat_import", str(sample), "--commit")


def test_import_an_empty_folder(tmp_path):
    out = run("chat_import", str(write(tmp_path / "r", "")), "--commit")
    assert "0 users" in out


def test_import_without_a_csv_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="No user_pass.csv"):
        run("chat_import", str(tmp_path))


def test_import_bad_rows_and_names(tmp_path):
    folder = write(
        tmp_path / "r",
        "ok-user,secret-1\nbad name,secret\n,nopass-user\nthree,fields,here\nok-user,dupe\nAnother,pw\n",
        {"ok-user.json": '{"signup_timestamp": "2017-01-01 10:00:00", "to_be_delivered": [], "blocked": ["nobody"]}'},
    )
    out = run("chat_import", str(folder), "--commit")
    assert set(User.objects.values_list("username", flat=True)) == {"ok-user", "Another"}
    assert "line 2" in out and "line 3" in out and "line 4" in out and "line 5: ok-user again" in out
    assert "nobody does not exist" in out


def test_import_a_file_with_one_bad_entry_is_skipped_whole(tmp_path):
    good = '{"status": 2, "message": "hi", "operation": 6, "sender": "b", "timestamp": "2017-01-01 10:00:00"}'
    bad = '{"status": 2, "message": "hi", "operation": 99, "sender": "b", "timestamp": "2017-01-01 10:00:00"}'
    folder = write(
        tmp_path / "r",
        "a,pw-a\nb,pw-b\n",
        {"a.json": f'{{"to_be_delivered": [{good}, {bad}], "blocked": ["b"]}}'},
    )
    out = run("chat_import", str(folder), "--commit")
    assert "a.json: message 2" in out
    assert Message.objects.count() == 0 and Block.objects.count() == 0
    assert User.objects.count() == 2


def test_import_a_broadcast_to_several_is_one_message(tmp_path):
    entry = '{"status": 2, "message": "all", "operation": 7, "sender": "c", "timestamp": "2017-01-01 10:00:00"}'
    folder = write(
        tmp_path / "r",
        "a,pw\nb,pw\nc,pw\n",
        {"a.json": f'{{"to_be_delivered": [{entry}]}}', "b.json": f'{{"to_be_delivered": [{entry}]}}'},
    )
    run("chat_import", str(folder), "--commit", "--timezone", "Europe/Paris")
    message = Message.objects.get()
    assert message.kind == "broadcast" and message.deliveries.count() == 2
    assert message.sent_at.isoformat() == "2017-01-01T09:00:00+00:00"


def test_import_dry_run_hashes_and_writes_nothing(sample):
    with mock.patch("django.contrib.auth.hashers.make_password", side_effect=AssertionError("hashed")) as hasher:
        out = run("chat_import", str(sample))
    assert hasher.call_count == 0
    assert User.objects.count() == 0 and Message.objects.count() == 0 and Block.objects.count() == 0
    committed = run("chat_import", str(sample), "--commit", "--jobs", "2")
    would = out.split("Would import: ")[1].split(".")[0]
    assert f"Imported: {would}." in committed
    # Every line of the report is the same, too.
    assert out.splitlines()[:-2] == committed.splitlines()[:-1]


def test_import_in_parallel_gives_working_passwords(tmp_path):
    folder = write_legacy_copy(tmp_path, users=30, messages=200, seed=1)
    out = run("chat_import", str(folder), "--commit", "--jobs", "2")
    assert "30 users, 0 users existing" in out
    first = (folder / "user_pass.csv").read_text(encoding="utf-8").splitlines()[0]
    name, password = first.split(",")
    assert authenticate(username=name, password=password)
    assert "0 users, 30 users existing, 0 messages, 0 deliveries, 0 blocks" in run(
        "chat_import", str(folder), "--commit"
    )


def test_import_rejects_bad_jobs(sample):
    with pytest.raises(CommandError, match="--jobs"):
        run("chat_import", str(sample), "--jobs", "-1")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_import_progress_only_on_a_terminal(sample, capsys):
    run("chat_import", str(sample), "--commit")
    assert capsys.readouterr().err == ""  # stdout is not a terminal: no bar
    User.objects.all().delete()
    terminal = Terminal()
    call_command("chat_import", str(sample), "--commit", stdout=terminal)
    err = capsys.readouterr().err
    assert "hashing passwords" in err and "100%" in err and "writing messages" in err
    assert "hashing" not in terminal.getvalue()  # the report stays clean
    call_command("chat_import", str(sample), "--commit", "--verbosity", "0", stdout=Terminal())
    assert capsys.readouterr().err == ""


@pytest.mark.timeout(600)  # five Django processes: slow on a busy machine
def test_import_bench_runs(tmp_path):
    """bench/import_bench.py at a tiny size (it makes its own database)."""
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "bench/import_bench.py", "--users", "12", "--messages", "60", "--rounds", "1", "--jobs", "2"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr
    assert "Imported: 12 users" in done.stdout and "ratio" in done.stdout
    assert "again: Imported: 0 users, 12 users existing, 0 messages, 0 deliveries, 0 blocks" in done.stdout


# --- chat_seed -------------------------------------------------------------------


def test_seed_users_idempotent_with_messages():
    out = run(
        "chat_seed", "--users", "50", "--prefix", "load", "--password", "pw-for-all", "--messages", "30", "--seed", "1"
    )
    assert "50 user(s) created" in out and "30 message(s) sent" in out
    assert authenticate(username="load7", password="pw-for-all")
    out = run("chat_seed", "--users", "60", "--prefix", "load", "--messages", "30")
    assert "10 user(s) created, 50 already there" in out and "none added" in out
    assert Message.objects.count() == 30 and User.objects.count() == 60


def test_seed_rejects_bad_input():
    with pytest.raises(CommandError):
        run("chat_seed", "--users", "0")
    with pytest.raises(CommandError):
        run("chat_seed", "--users", "2", "--prefix", "bad prefix ")


def test_seed_rooms_in_bulk_idempotent(django_assert_max_num_queries):
    run("chat_seed", "--users", "300")
    with django_assert_max_num_queries(100):  # bulk: not a query per member (10,000)
        out = run("chat_seed", "--users", "300", "--rooms", "50", "--room-size", "200", "--seed", "3")
    assert "50 room(s) of 200 member(s) made, 0 already there." in out
    assert Room.objects.count() == 50 and RoomMember.objects.count() == 50 * 200
    assert RoomMember.objects.filter(admin=True).count() == 50
    assert set(Room.objects.values_list("name", flat=True)) == {f"user-room{i}" for i in range(1, 51)}
    assert not RoomMember.objects.exclude(user__username__startswith="user").exists()
    out = run("chat_seed", "--users", "300", "--rooms", "60", "--room-size", "200")
    assert "10 room(s) of 200 member(s) made, 50 already there." in out
    assert RoomMember.objects.count() == 60 * 200
    alice = User.objects.get(username="user1")
    assert len(selectors.room_list(user=alice)) == RoomMember.objects.filter(user=alice).count()


def test_seed_rooms_bigger_than_the_users_or_the_limit(settings):
    assert "3 room(s) of 5 member(s)" in run("chat_seed", "--users", "5", "--rooms", "3", "--room-size", "50")
    settings.CHAT_ROOM_MAX_MEMBERS = 4
    with pytest.raises(CommandError, match="at most 4"):
        run("chat_seed", "--users", "5", "--prefix", "x", "--rooms", "1", "--room-size", "5")
    with pytest.raises(CommandError):
        run("chat_seed", "--users", "5", "--rooms", "1", "--room-size", "0")


def test_seed_rooms_progress_only_on_a_terminal(capsys, monkeypatch):
    run("chat_seed", "--users", "3", "--rooms", "2")
    assert "room/s" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    run("chat_seed", "--users", "3", "--rooms", "4")
    err = capsys.readouterr().err
    assert "4/4" in err and "room/s" in err


def test_seed_ten_thousand_users_hashes_once():
    with mock.patch("django.contrib.auth.hashers.make_password", wraps=hashers.make_password) as hasher:
        run("chat_seed", "--users", "10000")
    assert hasher.call_count == 1
    assert User.objects.count() == 10000


@contextlib.contextmanager
def rows_made(model):
    """Yields (made, most alive at once): the model's instances made inside,
    and the most that were in memory together (a loaded list keeps them
    all; a stream drops each before the next)."""
    alive: weakref.WeakSet = weakref.WeakSet()
    made: list[int] = []
    most = [0]

    def seen(sender, instance, **kwargs):
        gc.collect()  # a row and its select_related row refer to each other: only the collector frees them
        alive.add(instance)
        made.append(1)
        most[0] = max(most[0], len(alive))

    post_init.connect(seen, sender=model)
    try:
        yield made, most
    finally:
        post_init.disconnect(seen, sender=model)


def test_seed_holds_ids_not_every_user():
    """At 100,000 users chat_seed kept every one as a row to draw senders
    and members from: now ids, and rows only of the users a batch sends as
    or a room is made of."""
    run("chat_seed", "--users", "300")
    with rows_made(User) as (made, _):
        out = run("chat_seed", "--users", "300", "--messages", "5", "--rooms", "2", "--room-size", "3", "--seed", "1")
    assert "5 message(s) sent" in out and "2 room(s) of 3 member(s) made" in out
    assert len(made) < 60  # the 10 senders and recipients, the 6 members, what sending reads: not 300 (twice)
    assert RoomMember.objects.count() == 6


def test_createsuperuser_works_with_the_custom_user():
    call_command("createsuperuser", username="admin", email="a@example.com", interactive=False, stdout=io.StringIO())
    assert User.objects.get(username="admin").is_superuser


# --- chat_presence -----------------------------------------------------------------


def test_presence_lists_and_prunes():
    alice, bob = make_user("alice"), make_user("bob")
    assert "Nobody is online" in run("chat_presence")
    services.presence_claim(user=alice, channel_name="c1")
    services.presence_claim(user=bob, channel_name="c2")
    # alice's connection lives in a server process (our parent will do);
    # bob's process stopped heartbeating an hour ago.
    Presence.objects.filter(user=alice).update(pid=os.getppid())
    Presence.objects.filter(user=bob).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    out = run("chat_presence")
    assert "alice" in out and "online" in out and "STALE" in out
    out = run("chat_presence", "--prune")
    assert "Pruned 1" in out and "bob" in out
    assert list(Presence.objects.values_list("user__username", flat=True)) == ["alice"]


def test_presence_streams_the_list(monkeypatch):
    """Ten thousand online are listed a chunk of rows at a time, never all
    of them in memory."""
    from messaging.management.commands import chat_presence

    monkeypatch.setattr(chat_presence, "CHUNK", 10)
    users = User.objects.bulk_create(User(username=f"p{i}", username_key=f"p{i}") for i in range(60))
    now = timezone.now()
    Presence.objects.bulk_create(
        Presence(user=u, channel_name=f"c{u.pk}", host="h", pid=1, connected_at=now, heartbeat_at=now) for u in users
    )
    with rows_made(Presence) as (made, most):
        out = run("chat_presence")
    assert out.count(" online ") == 60 and len(made) == 60
    assert most[0] <= 2
