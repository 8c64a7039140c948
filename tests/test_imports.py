"""The import's services against the database: reading the old files
(legacy.files), hashing in parallel and importing users, messages, blocks
and the whole import (legacy.services). The command is in test_commands.py."""

import json
from datetime import UTC, datetime
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.hashers import check_password, identify_hasher
from django.db import connection
from django.test.utils import CaptureQueriesContext

from legacy import services
from legacy.files import legacy_read
from messaging.models import Block, Delivery, Message

from .helpers import make_user
from .legacy import write_legacy_copy, write_legacy_sample

pytestmark = pytest.mark.django_db
User = get_user_model()
PARIS = ZoneInfo("Europe/Paris")
WRITES = ("INSERT", "UPDATE", "DELETE")


def writes(queries):
    return [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(WRITES)]


# --- Reading the files ------------------------------------------------------------


def test_read_files_with_a_byte_order_mark(tmp_path):
    folder = tmp_path / "server_resources"
    (folder / "user_data").mkdir(parents=True)
    (folder / "user_pass.csv").write_text("ann,pw-1\nben,pw-2\n", encoding="utf-8-sig")
    content = {"signup_timestamp": "2017-04-13 10:00:00", "to_be_delivered": [], "blocked": ["ben"]}
    (folder / "user_data" / "ann.json").write_text(json.dumps(content), encoding="utf-8-sig")
    legacy = legacy_read(path=tmp_path, zone=PARIS)
    assert list(legacy.users) == ["ann", "ben"]  # not "\ufeffann"
    assert legacy.files["ann"].blocked == ["ben"] and legacy.skipped == []
    assert legacy.files["ann"].signup_timestamp == datetime(2017, 4, 13, 10, tzinfo=PARIS)


def test_read_the_sample_reports_what_it_skips(tmp_path):
    legacy = legacy_read(path=write_legacy_sample(tmp_path), zone=PARIS)
    assert "walt" in legacy.files  # saved with a BOM
    assert [where for where, _ in legacy.skipped] == [
        "user_pass.csv line 6",
        "user_pass.csv line 7",
        "dave.json",
        "frank.json",
    ]


# --- Hashing and users ------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])
def test_passwords_hash_in_parallel_gives_passwords_that_check(jobs):
    passwords = [f"secret-{i}" for i in range(40)] + ['comma, "quotes"', "ünïcode"]
    done = []
    encoded = services.passwords_hash(passwords=passwords, jobs=jobs, progress=lambda n, total: done.append((n, total)))
    assert len(encoded) == len(passwords) and len(set(encoded)) == len(passwords)  # one salt each
    for password, e in zip(passwords, encoded, strict=True):
        assert identify_hasher(e).algorithm == "md5"  # the settings' hasher, in the workers too
        assert check_password(password, e)
    assert not check_password("secret-1", encoded[0])
    assert done[-1] == (len(passwords), len(passwords))


def test_users_import_creates_new_users_leaves_others():
    make_user("existing")
    users = [
        services.UserImport(username="ann", password="pw-ann", date_joined=datetime(2017, 1, 1, tzinfo=UTC)),
        services.UserImport(username="existing", password="other"),
        services.UserImport(username="ANN", password="pw-2"),  # the same name as people read it
        services.UserImport(username="bad name", password="pw"),
    ]
    results = services.users_import(users=users, jobs=2)
    assert [r.created for r in results] == [True, False, False, False]
    assert results[3].user is None and results[3].error.startswith("Username:")
    ann = User.objects.get(username="ann")
    assert results[0].user == ann and results[2].user == ann and ann.date_joined.year == 2017
    assert authenticate(username="ann", password="pw-ann")
    assert not authenticate(username="existing", password="other")
    again = services.users_import(users=users)
    assert [r.created for r in again] == [False, False, False, False]
    assert User.objects.count() == 2


def test_users_import_dry_run_hashes_and_writes_nothing():
    make_user("existing")
    users = [services.UserImport(username=n, password="pw") for n in ("ann", "existing", "ben")]
    with (
        mock.patch("django.contrib.auth.hashers.make_password", side_effect=AssertionError("hashed")),
        mock.patch("legacy.services.users.passwords_hash", side_effect=AssertionError("hashed")),
        CaptureQueriesContext(connection) as queries,
    ):
        results = services.users_import(users=users, dry_run=True)
    assert [r.created for r in results] == [True, False, True]
    assert results[0].user.pk is None and writes(queries) == []
    assert User.objects.count() == 1


# --- Messages and blocks ------------------------------------------------------------


def test_messages_import_in_bulk_is_idempotent():
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    when = datetime(2017, 4, 12, 18, 22, 3, 123456, tzinfo=PARIS)
    items = [
        services.MessageImport(sender=bob, recipient=alice, body="hi", sent_at=when),
        services.MessageImport(sender=bob, recipient=alice, body="hi", sent_at=when),  # held twice
        services.MessageImport(sender=carol, recipient=alice, body="all", sent_at=when, kind="broadcast"),
        services.MessageImport(sender=carol, recipient=bob, body="all", sent_at=when, kind="broadcast"),
    ]
    with CaptureQueriesContext(connection) as queries:
        results = services.messages_import(messages=items)
    assert [(r.created, r.state) for r in results] == [
        (True, "pending"),
        (False, "already imported"),
        (True, "pending"),
        (False, "pending"),
    ]
    assert len(writes(queries)) == 2  # one insert of messages, one of deliveries
    assert Message.objects.count() == 2 and Delivery.objects.count() == 3
    broadcast = Message.objects.get(kind="broadcast")
    assert broadcast.recipient is None and broadcast.deliveries.count() == 2
    assert Message.objects.get(kind="private").sent_at == when
    again = services.messages_import(messages=items)
    assert [(r.created, r.state) for r in again] == [(False, "already imported")] * 4
    assert Message.objects.count() == 2 and Delivery.objects.count() == 3


def test_messages_import_delivers_nothing_from_a_blocked_sender():
    alice, bob, dave = make_user("alice"), make_user("bob"), make_user("dave")
    Block.objects.create(blocker=alice, blocked=bob)
    when = datetime(2017, 4, 12, tzinfo=UTC)
    items = [
        services.MessageImport(sender=bob, recipient=alice, body="hi", sent_at=when),
        services.MessageImport(sender=dave, recipient=alice, body="hi", sent_at=when),
    ]
    results = services.messages_import(messages=items, blocks=[(alice, dave)], dry_run=True)
    assert [r.state for r in results] == ["blocked", "blocked"]
    results = services.messages_import(messages=items)
    assert [r.state for r in results] == ["blocked", "pending"]


def test_blocks_import():
    alice, bob, gone = make_user("alice"), make_user("bob"), make_user("gone")
    User.objects.filter(pk=gone.pk).update(is_active=False)
    gone.refresh_from_db()
    pairs = [(alice, bob), (alice, bob), (alice, alice), (bob, gone)]
    results = services.blocks_import(blocks=pairs)
    assert [(r.created, r.error) for r in results] == [
        (True, None),
        (False, None),
        (False, "You cannot block yourself."),
        (False, "There is no user 'gone'."),
    ]
    assert Block.objects.count() == 1
    assert [r.created for r in services.blocks_import(blocks=pairs)] == [False] * 4


# --- The whole import ------------------------------------------------------------------


def test_legacy_import_dry_run_reports_what_commit_does(tmp_path):
    legacy = legacy_read(path=write_legacy_copy(tmp_path, users=60, messages=400, seed=3), zone=PARIS)
    with (
        mock.patch("django.contrib.auth.hashers.make_password", side_effect=AssertionError("hashed")),
        mock.patch("legacy.services.users.ProcessPoolExecutor", side_effect=AssertionError("hashed")),
        CaptureQueriesContext(connection) as queries,
    ):
        dry = services.legacy_import(legacy=legacy)
    assert writes(queries) == []
    assert User.objects.count() == 0 and Message.objects.count() == 0
    done = services.legacy_import(legacy=legacy, commit=True, jobs=2)
    assert dry.counts == done.counts and dry.lines == done.lines
    assert done.counts["users"] == 60 and done.counts["messages"] > 300 and done.counts["blocks"] > 0
    assert User.objects.count() == 60 and Delivery.objects.count() == done.counts["deliveries"]
    # Run again: nothing new, and a dry run now says the same.
    again = services.legacy_import(legacy=legacy, commit=True)
    assert again.counts["users existing"] == 60
    assert (again.counts["users"], again.counts["messages"], again.counts["deliveries"], again.counts["blocks"]) == (
        0,
        0,
        0,
        0,
    )
    assert services.legacy_import(legacy=legacy).counts == again.counts
    assert Delivery.objects.count() == done.counts["deliveries"]
