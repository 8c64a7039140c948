"""The admin at size (issue 23): what each changelist asks the database.

Speed is the bench's (bench/admin_bench.py, docs/performance.md); here, at
small sizes, the shape of the queries that keeps it: no COUNT(*) of a whole
table (only up to the cap), no scan for a date hierarchy or a filter's
choices, the same number of queries whatever the number of rows, and the
filters that must use an index do.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import LoginAttempt, SignupAttempt
from accounts.paging import COUNT_CAP, CappedPaginator
from messaging import services
from messaging.admin import MessageAdmin, UserAdmin
from messaging.models import Attachment, Message, Room

from .helpers import make_user

pytestmark = pytest.mark.django_db

TODAY = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
WEEK = f"__gte={TODAY - timedelta(days=7)}&{{0}}__lt={TODAY + timedelta(days=1)}".replace("+", "%2B")


def dated(field: str) -> str:
    return f"{field}{WEEK.format(field)}"


LISTS = [
    "/admin/accounts/user/",
    "/admin/accounts/user/?online=yes",
    "/admin/accounts/user/?online=no",
    "/admin/accounts/user/?locked=yes",
    "/admin/accounts/user/?locked=no",
    "/admin/accounts/user/?is_staff__exact=1",
    "/admin/accounts/user/?q=user",
    "/admin/accounts/user/?o=-3",
    "/admin/messaging/message/",
    "/admin/messaging/message/?kind__exact=private",
    "/admin/messaging/message/?kind__exact=broadcast",
    "/admin/messaging/message/?kind__exact=room",
    "/admin/messaging/message/?deleted=yes",
    "/admin/messaging/message/?deleted=no",
    "/admin/messaging/message/?" + dated("sent_at"),
    "/admin/messaging/message/?o=-4",
    "/admin/messaging/message/?q=hello",
    "/admin/messaging/message/?q=from:user1",
    "/admin/messaging/message/?q=to:user2+hello",
    "/admin/messaging/room/",
    "/admin/messaging/room/?size=2-10",
    "/admin/messaging/room/?q=user1",
    "/admin/messaging/block/",
    "/admin/messaging/block/?q=user1",
    "/admin/accounts/loginattempt/",
    "/admin/accounts/loginattempt/?active_lock=yes",
    "/admin/accounts/loginattempt/?result__exact=failure",
    "/admin/accounts/loginattempt/?" + dated("at"),
    "/admin/accounts/loginattempt/?q=user1",
    "/admin/accounts/signupattempt/",
    "/admin/messaging/attachment/",
    "/admin/messaging/attachment/?content_type=image%2Fpng",
    "/admin/messaging/attachment/?" + dated("created_at"),
    "/admin/messaging/attachment/?q=file",
]


@pytest.fixture
def staff(client):
    root = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)
    return client


def populate(n: int) -> None:
    """n more of everything each list shows, of every kind its filters pick."""
    start = Message.objects.count()
    users = [make_user(f"user{start + i}") for i in range(1, 2 * n + 2)]
    room = services.room_create(user=users[0], name=f"room{start}", usernames=[u.username for u in users[1:3]]).room
    now = timezone.now()
    for i in range(n):
        a, b = users[2 * i], users[2 * i + 1]
        sent = services.message_send(sender=a, to_username=b.username, body=f"hello {i}").message
        services.message_broadcast(sender=b, body=f"hello all {i}")
        services.message_room_send(sender=users[0], room_id=room["id"], body=f"hello room {i}")
        gone = services.message_send(sender=b, to_username=a.username, body="regret").message
        services.message_delete(user=b, message_id=gone.pk)
        services.block_create(blocker=a, username=b.username)
        services.presence_claim(user=a, channel_name=f"c-{a.username}")
        for result in ("success", "failure"):
            LoginAttempt.objects.create(username=a.username, ip="10.0.0.1", result=result)
        LoginAttempt.objects.create(
            username=b.username, ip="10.0.0.2", result="failure", locked_until=now + timedelta(minutes=5)
        )
        SignupAttempt.objects.create(username=a.username, ip="10.0.0.3")
        for message in (sent, None):
            Attachment.objects.create(
                uploader=a, message=message, name=f"file{i}.png", size=10, content_type="image/png",
                stored=f"x/{start}-{i}-{bool(message)}", created_at=now,
            )  # fmt: skip


def queries_of(client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.get("Location"))
    return [q["sql"] for q in queries]


@pytest.mark.parametrize("url", LISTS)
def test_no_list_counts_or_scans_a_whole_table(staff, url):
    """Each list counts at most COUNT_CAP + 1 rows (Django's own counted the
    filtered table and the whole table, every page), and asks for no
    distinct values or first and last dates of a table (a date hierarchy,
    a filter offering every value in the column)."""
    populate(2)
    for sql in queries_of(staff, url):
        if sql.startswith("SELECT COUNT(*)"):
            assert f"LIMIT {COUNT_CAP + 1}" in sql, sql
        assert not re.search(r"^SELECT DISTINCT|\bMIN\(|\bMAX\(", sql), sql


@pytest.mark.parametrize("url", LISTS)
def test_a_list_asks_the_same_queries_for_more_rows(staff, url):
    """No query per row (a user, a message's sender, an attachment's
    message): the pages of 2 and of 6 rows of each kind ask as many."""
    populate(2)
    queries_of(staff, url)  # once first: Django caches the content types
    few = queries_of(staff, url)
    populate(4)
    assert len(queries_of(staff, url)) == len(few), url


def test_change_pages_ask_the_same_queries_for_more_rows(staff):
    populate(1)
    message = Attachment.objects.filter(message__isnull=False).first().message
    user = Message.objects.get(pk=message.pk).sender
    room = Room.objects.get()
    pages = [
        f"/admin/messaging/message/{message.pk}/change/",
        f"/admin/accounts/user/{user.pk}/change/",
        f"/admin/messaging/room/{room.pk}/change/",
    ]
    [queries_of(staff, url) for url in pages]  # once first: Django caches the content types
    few = [len(queries_of(staff, url)) for url in pages]
    for i in range(3):  # more files on the message, blocks of the user, members of the room
        Attachment.objects.create(
            uploader=make_user(f"up{i}"), message=message, name="f.pdf", size=1, content_type="application/pdf",
            stored=f"y/{i}", created_at=timezone.now(),
        )  # fmt: skip
        services.block_create(blocker=user, username=f"up{i}")
        services.room_members_add(user=room.members.get(admin=True).user, room_id=room.pk, usernames=[f"up{i}"])
    assert [len(queries_of(staff, url)) for url in pages] == few


def test_past_the_cap_the_count_shows_as_at_least_and_the_pages_stop(staff, monkeypatch):
    monkeypatch.setattr(CappedPaginator, "cap", 3)
    monkeypatch.setattr(MessageAdmin, "list_per_page", 2)
    monkeypatch.setattr(UserAdmin, "list_per_page", 2)
    populate(2)  # 8 messages, 6 users
    assert "3+ messages" in staff.get("/admin/messaging/message/").content.decode()
    assert "Select all 3+ users" in staff.get("/admin/accounts/user/").content.decode()
    assert "3+ results" in staff.get("/admin/messaging/message/?q=hello").content.decode()
    assert staff.get("/admin/messaging/message/?p=2").status_code == 200
    assert staff.get("/admin/messaging/message/?p=3").status_code == 302  # ?e=1: Django's "no such page"
    # Under the cap, the count is the count.
    assert "1 message\n" in staff.get("/admin/messaging/message/?deleted=no&q=room+1").content.decode()


def test_message_search_finds_words_senders_and_recipients(staff):
    alice, bob, carol = make_user("alice"), make_user("Bob"), make_user("carol")
    services.message_send(sender=alice, to_username="Bob", body="lunch at noon?")
    services.message_send(sender=bob, to_username="alice", body="lunch sounds good")
    services.message_send(sender=carol, to_username="alice", body="dinner later")

    def found(q: str) -> set[str]:
        rows = staff.get("/admin/messaging/message/", {"q": q}).context["cl"].result_list
        return {m.body for m in rows}

    assert found("lunch") == {"lunch at noon?", "lunch sounds good"}
    assert found("lun") == {"lunch at noon?", "lunch sounds good"}  # the last word, as a prefix
    assert found("lunch good") == {"lunch sounds good"}
    assert found("from:bob") == {"lunch sounds good"}  # a name as people read it: any case
    assert found("to:alice") == {"lunch sounds good", "dinner later"}
    assert found("to:alice from:carol") == {"dinner later"}
    assert found("from:alice noon") == {"lunch at noon?"}
    assert found("from:nobody") == set()
    assert found('"') == found("🍕") == set()  # nothing to look for: nothing found


def test_with_a_date_filter_the_list_is_in_date_order(staff):
    """Newest first by the filtered column, so one index serves both."""
    populate(1)
    cl = staff.get("/admin/messaging/message/?" + dated("sent_at")).context["cl"]
    assert cl.queryset.query.order_by[0] == "-sent_at"
    sent = [m.sent_at for m in cl.result_list]
    assert len(sent) > 1 and sent == sorted(sent, reverse=True)
    assert staff.get("/admin/messaging/message/").context["cl"].queryset.query.order_by[0] == "-id"


def plan_of(sql: str, params) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")  # a tiny table would be scanned anyway
            try:
                cursor.execute("EXPLAIN " + sql, params)
                return "\n".join(row[0] for row in cursor.fetchall())
            finally:
                cursor.execute("SET enable_seqscan = on")
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


@pytest.mark.parametrize(
    ("url", "index"),
    [
        ("/admin/messaging/message/?kind__exact=broadcast", "messaging_msg_broadcast"),
        ("/admin/messaging/message/?kind__exact=room", "messaging_msg_in_rooms"),
        ("/admin/messaging/message/?deleted=yes", "messaging_msg_deleted"),
        ("/admin/messaging/message/?" + dated("sent_at"), "messaging_message_sent_at"),
        ("/admin/accounts/loginattempt/?active_lock=yes", "accounts_attempt_locked"),
        ("/admin/accounts/user/?locked=yes", "accounts_attempt_locked"),
    ],
)
def test_the_filters_of_rare_rows_go_through_their_index(staff, url, index):
    """A filter that picks a few rows out of millions reads them from an
    index (messaging 0008 and 0009, accounts 0006): both its count and its page."""
    populate(1)
    with CaptureQueriesContext(connection) as queries:
        assert staff.get(url).status_code == 200
    table = "accounts_loginattempt" if "accounts" in index else "messaging_message"
    listed = [
        q
        for q in queries.captured_queries
        if (f'FROM "{table}"' in q["sql"] or f"FROM {table}" in q["sql"]) and not q["sql"].startswith("EXPLAIN")
    ]
    assert len(listed) >= 1
    for query in listed:
        # Captured SQL has its parameters filled in; EXPLAIN it as it is.
        plan = plan_of(query["sql"], None)
        assert index in plan, plan


def test_counts_of_a_page_are_read_for_its_rows(staff):
    """The "pending for" and a room's messages (its deleted ones left out) are
    read for the rows of the page, on the list and on each one's page."""
    alice, bob = make_user("alice"), make_user("bob")
    make_user("carol")
    waiting = services.message_send(sender=alice, to_username="bob", body="still waiting").message
    room = services.room_create(user=alice, name="team", usernames=["bob", "carol"]).room
    kept = services.message_room_send(sender=alice, room_id=room["id"], body="stays").message
    gone = services.message_room_send(sender=bob, room_id=room["id"], body="goes").message
    services.message_delete(user=bob, message_id=gone.pk)
    messages = {m.pk: m for m in staff.get("/admin/messaging/message/").context["cl"].result_list}
    assert messages[waiting.pk].pending_count == 1
    assert messages[kept.pk].pending_count == 2  # bob and carol, offline
    page = staff.get(f"/admin/messaging/message/{waiting.pk}/change/").content.decode()
    assert '<div class="readonly">1</div>' in page
    [listed] = staff.get("/admin/messaging/room/").context["cl"].result_list
    assert listed.message_total == 1
    assert '<div class="readonly">1</div>' in staff.get(f"/admin/messaging/room/{room['id']}/change/").content.decode()


def test_login_attempts_are_searched_by_whole_name_or_address(staff):
    LoginAttempt.objects.create(username="alice", ip="10.0.0.1", result="failure")
    LoginAttempt.objects.create(username="alicia", ip="2001:db8::1", result="success")

    def found(q: str) -> set[str]:
        rows = staff.get("/admin/accounts/loginattempt/", {"q": q}).context["cl"].result_list
        return {a.username for a in rows}

    assert found("alice") == {"alice"} and found("ali") == set()
    assert found("10.0.0.1") == {"alice"} and found("2001:db8:0::1") == {"alicia"}


def test_postgresql_counts_nothing_when_it_expects_far_more_than_the_cap(staff, monkeypatch):
    """On PostgreSQL the planner's estimate (no row read) says "10,000+"
    when it expects more than twice the cap; SQLite counts up to the cap."""
    monkeypatch.setattr(CappedPaginator, "cap", 3)
    populate(2)  # 8 messages
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE messaging_message")  # as autovacuum would
    counts = [sql for sql in queries_of(staff, "/admin/messaging/message/") if sql.startswith("SELECT COUNT(*)")]
    if connection.vendor == "postgresql":
        assert counts == []
    else:
        assert len(counts) == 1 and "LIMIT 4" in counts[0]
    assert "3+ messages" in staff.get("/admin/messaging/message/").content.decode()


@pytest.mark.parametrize("few", [0, 1000])
def test_a_search_finds_the_same_whichever_way_it_reads_the_index(staff, monkeypatch, few):
    """PostgreSQL reads the matching ids from the GIN index first when it
    expects at most FEW_MATCHES of them, and walks the list otherwise: the
    same messages either way (SQLite has one way)."""
    from messaging import selectors

    monkeypatch.setattr(selectors, "FEW_MATCHES", few)
    populate(3)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE messaging_message")
    rows = staff.get("/admin/messaging/message/", {"q": "hello ro"}).context["cl"].result_list
    assert sorted(m.body for m in rows) == ["hello room 0", "hello room 1", "hello room 2"]
