"""Pictures and files in messages (issue 21, protocol 1.2): the upload
service and its checks, sending, who may download, the views, the socket,
the storage (a folder on SQLite, S3 through moto on the scale-out stack)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import struct
import time
import zlib
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.files.storage import storages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from core.errors import ServiceError
from messaging import selectors, services
from messaging.models import Attachment, Delivery, Message

from .helpers import PASSWORD, amake_user, connected, make_user

pytestmark = [pytest.mark.usefixtures("attachment_store")]


# --- Files to upload ------------------------------------------------------------


def png(width=64, height=48, color=(200, 30, 30), exif_gps=False) -> bytes:
    image = Image.new("RGB", (width, height), color)
    out = io.BytesIO()
    options = {}
    if exif_gps:
        exif = Image.Exif()
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS: Paris
        exif[0x010F] = "SecretCam"
        options["exif"] = exif.tobytes()
    image.save(out, format="PNG", **options)
    return out.getvalue()


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (800, 600), (10, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid PNG header claiming 10 gigapixels, and a tiny body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
HTML = b"<!doctype html><script>alert(document.cookie)</script>"


def upload(user, data: bytes, name: str) -> Attachment:
    return services.attachment_upload(uploader=user, file=io.BytesIO(data), name=name, size=len(data))


def stored_names() -> list[str]:
    """Every file in the attachments storage."""
    store = storages["attachments"]

    def walk(path: str) -> list[str]:
        dirs, files = store.listdir(path)
        found = [f"{path}/{f}".lstrip("/") for f in files]
        for d in dirs:
            found += walk(f"{path}/{d}".lstrip("/"))
        return found

    try:
        return sorted(walk(""))
    except FileNotFoundError:
        return []


def read_stored(name: str) -> bytes:
    with storages["attachments"].open(name, "rb") as f:
        return f.read()


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def carol(db):
    return make_user("carol")


# --- The upload service -----------------------------------------------------------


def test_an_image_is_stored_re_encoded_without_exif_with_a_thumbnail(alice):
    a = upload(alice, jpeg_with_gps(), "holiday.jpg")
    assert (a.name, a.content_type, a.width, a.height) == ("holiday.jpg", "image/jpeg", 800, 600)
    stored = Image.open(io.BytesIO(read_stored(a.stored)))
    assert stored.format == "JPEG" and stored.size == (800, 600)
    assert not stored.getexif() and "exif" not in stored.info
    assert b"SecretCam" not in read_stored(a.stored)
    thumb = Image.open(io.BytesIO(read_stored(a.thumbnail)))
    assert max(thumb.size) == 400 and thumb.size == (400, 300)
    assert a.size == len(read_stored(a.stored))


def test_exif_is_stripped_from_pngs_too(alice):
    a = upload(alice, png(exif_gps=True), "map.png")
    data = read_stored(a.stored)
    assert b"SecretCam" not in data and not Image.open(io.BytesIO(data)).getexif()


@pytest.mark.parametrize(
    ("data", "name", "says"),
    [
        (HTML, "cat.png", "cat.png is not a valid PNG image"),
        (png()[:60], "cut.png", "cut.png is not a valid PNG image"),
        (png(), "photo.jpg", "photo.jpg is not a valid JPEG image"),
        (bomb_png(), "bomb.png", "bomb.png has too many pixels"),
        (HTML, "page.html", "are not accepted"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo.svg", "are not accepted"),
        (HTML, "report.pdf", "report.pdf is not the kind of file"),
        (b"\x00\x01binary", "notes.txt", "notes.txt is not plain text"),
        (b"x" * 10, "x" * 1000 + ".txt", "longer than 200 characters"),
        (b"x", "\x00\x01../", "no usable name"),
        (b"", "empty.txt", "is empty"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_stored(alice, data, name, says):
    with pytest.raises(ServiceError) as e:
        upload(alice, data, name)
    assert e.value.code == "invalid" and says in e.value.message
    assert not Attachment.objects.exists() and stored_names() == []


def test_names_lose_paths_and_control_characters(alice):
    a = upload(alice, b"hello\n", "../../etc/\x1b[31mpass\u202ewd.txt")
    assert a.name == "[31mpasswd.txt"
    assert "/" not in a.stored.split("/", 1)[1] and ".." not in a.stored
    b = upload(alice, b"hi", "C:\\Users\\me\\notes.txt")
    assert b.name == "notes.txt"


def test_a_file_over_the_limit_is_refused(alice, settings):
    settings.CHAT_ATTACHMENT_MAX_BYTES = 1024 * 1024
    with pytest.raises(ServiceError) as e:
        upload(alice, b"x" * (1024 * 1024 + 1), "big.txt")
    assert (e.value.code, e.value.message) == ("too_large", "big.txt is larger than 1 MiB.")
    assert not Attachment.objects.exists() and stored_names() == []
    upload(alice, b"x" * 1024 * 1024, "just.txt")  # the limit itself is allowed


def test_the_daily_quota_holds(alice, settings):
    settings.CHAT_ATTACHMENT_BYTES_PER_DAY = 2500
    upload(alice, b"x" * 1000, "a.txt")
    upload(alice, b"x" * 1000, "b.txt")
    with pytest.raises(ServiceError) as e:
        upload(alice, b"x" * 1000, "c.txt")
    assert e.value.code == "rate_limited" and "500 bytes are left" in e.value.message
    assert Attachment.objects.count() == 2 and len(stored_names()) == 2
    Attachment.objects.update(created_at=timezone.now() - timedelta(days=1, seconds=1))
    upload(alice, b"x" * 1000, "c.txt")


def test_the_quota_is_each_users_own_and_may_be_filled_exactly(alice, bob, settings):
    settings.CHAT_ATTACHMENT_BYTES_PER_DAY = 1000
    upload(bob, b"x" * 1000, "b.txt")  # bob's day, not alice's
    upload(alice, b"x" * 1000, "a.txt")
    settings.CHAT_ATTACHMENT_BYTES_PER_DAY = 500  # lowered below what she used
    with pytest.raises(ServiceError) as e:
        upload(alice, b"x", "c.txt")
    assert (e.value.code, e.value.message) == ("rate_limited", "You may upload 500 bytes a day; 0 bytes are left.")


def test_a_file_refused_once_stored_is_removed_again(alice, monkeypatch):
    """The quota checked again in the transaction (another upload of the
    same user got in first): the bytes already stored go."""
    from messaging.services import attachments

    checks = []
    check = attachments._quota_check

    def second_refuses(uploader, size, now):
        checks.append(uploader)
        if len(checks) == 2:
            raise ServiceError("rate_limited", "late")
        check(uploader, size, now)

    monkeypatch.setattr(attachments, "_quota_check", second_refuses)
    with pytest.raises(ServiceError):
        upload(alice, png(), "late.png")
    assert checks == [alice, alice]
    assert not Attachment.objects.exists() and stored_names() == []


def test_stored_names_keep_a_lower_case_extension_and_the_thumbnails_type(alice):
    out = io.BytesIO()
    Image.new("RGBA", (20, 10), (0, 0, 0, 0)).save(out, format="PNG")
    clear = upload(alice, out.getvalue(), "Dot.PNG")
    assert clear.stored.endswith(".png") and clear.thumbnail == clear.stored[: -len(".png")] + "-thumb.png"
    photo = upload(alice, jpeg_with_gps(), "holiday.jpg")
    assert photo.thumbnail == photo.stored[: -len(".jpg")] + "-thumb.jpg"


def test_office_archive_and_pdf_files_are_accepted(alice):
    for data, name in [
        (PDF, "a.pdf"),
        (b"PK\x03\x04rest", "b.docx"),
        (b"\x1f\x8bzz", "c.gz"),
        (b"caf\xc3\xa9\n", "d.txt"),
    ]:
        a = upload(alice, data, name)
        assert a.width is None and a.thumbnail == "" and read_stored(a.stored) == data


# --- Sending ----------------------------------------------------------------------


def test_a_message_carries_its_attachments_in_events_and_history(alice, bob, capture_pushes):
    pic, doc = upload(alice, png(), "pic.png"), upload(alice, PDF, "doc.pdf")
    with capture_pushes() as pushes:
        sent = services.message_send(sender=alice, to_username="bob", body="", attachments=[pic.pk, doc.pk])
    assert sent.message.body == ""
    event = pushes[0].event["frames"][0]
    assert [a["id"] for a in event["attachments"]] == [pic.pk, doc.pk]
    assert event["attachments"][0] == {
        "id": pic.pk,
        "name": "pic.png",
        "size": pic.size,
        "content_type": "image/png",
        "url": f"/files/{pic.pk}/",
        "width": 64,
        "height": 48,
        "thumbnail_url": f"/files/{pic.pk}/thumbnail/",
    }
    assert event["attachments"][1]["width"] is None and event["attachments"][1]["thumbnail_url"] is None
    for user, peer in [(alice, bob), (bob, alice)]:
        [obj] = selectors.message_history(user=user, peer=peer)
        assert obj["attachments"] == event["attachments"]
    [conv] = selectors.conversation_list(user=bob)
    assert conv["last"]["attachments"] == event["attachments"]
    [waiting] = services.delivery_flush_page(user=bob)
    assert waiting["attachments"] == event["attachments"]


def test_messages_without_attachments_say_so_and_a_body_is_still_required(alice, bob):
    services.message_send(sender=alice, to_username="bob", body="hi")
    [obj] = selectors.message_history(user=bob, peer=alice)
    assert obj["attachments"] == []
    with pytest.raises(ServiceError) as e:
        services.message_send(sender=alice, to_username="bob", body="  ")
    assert e.value.code == "invalid"


def test_a_broadcast_carries_attachments(alice, bob, capture_pushes):
    pic = upload(alice, png(), "pic.png")
    with capture_pushes() as pushes:
        services.message_broadcast(sender=alice, body="look", attachments=[pic.pk])
    assert pushes[0].event["frames"][0]["attachments"][0]["id"] == pic.pk
    services.presence_claim(user=bob, channel_name="c-bob")  # his login brings it
    [obj] = selectors.message_history(user=bob, peer=None)
    assert obj["attachments"][0]["id"] == pic.pk


@pytest.mark.parametrize("kind", ["send", "broadcast", "room"])
@pytest.mark.parametrize("case", ["someone_elses", "used_twice", "listed_twice", "too_many", "missing"])
def test_ids_that_may_not_be_sent_are_refused_and_nothing_changes(alice, bob, settings, case, kind):
    settings.CHAT_ATTACHMENTS_PER_MESSAGE = 3
    room = services.room_create(user=alice, name="r", usernames=["bob"]).room["id"]
    send = {
        "send": lambda **kw: services.message_send(sender=alice, to_username="bob", **kw),
        "broadcast": lambda **kw: services.message_broadcast(sender=alice, **kw),
        "room": lambda **kw: services.message_room_send(sender=alice, room_id=room, **kw),
    }[kind]
    mine = [upload(alice, b"x", f"{i}.txt").pk for i in range(4)]
    theirs = upload(bob, b"x", "b.txt").pk
    if case == "used_twice":
        services.message_send(sender=alice, to_username="bob", body="first", attachments=[mine[0]])
    ids = {
        "someone_elses": [theirs],
        "used_twice": [mine[0]],
        "listed_twice": [mine[1], mine[1]],
        "too_many": mine,
        "missing": [999_999],
    }[case]
    before = list(Attachment.objects.order_by("pk").values_list("pk", "message_id"))
    count = Message.objects.count()
    with pytest.raises(ServiceError) as e:
        send(body="x", attachments=ids)
    not_yours = f"Attachment {ids[0]} is not an upload of yours that is still unsent."
    assert (e.value.code, e.value.message) == (
        "invalid",
        {
            "listed_twice": "The same attachment is listed twice.",
            "too_many": "A message carries at most 3 attachments.",
        }.get(case, not_yours),
    )
    assert Message.objects.count() == count
    assert list(Attachment.objects.order_by("pk").values_list("pk", "message_id")) == before
    send(body="x", attachments=mine[1:])  # as many as allowed


def test_attachments_keep_the_order_they_were_sent_in(alice, bob):
    first, second = upload(alice, b"1", "1.txt"), upload(alice, b"2", "2.txt")
    services.message_send(sender=alice, to_username="bob", body="x", attachments=[second.pk, first.pk])
    [obj] = selectors.message_history(user=bob, peer=alice)
    assert [a["name"] for a in obj["attachments"]] == ["2.txt", "1.txt"]


def test_one_batch_cannot_send_an_upload_twice(alice, bob):
    a = upload(alice, b"x", "a.txt")
    requests = [
        services.SendRequest(sender=alice, to_username="bob", body=str(i), attachments=(a.pk,)) for i in range(2)
    ]
    first, second = services.messages_send(requests=requests)
    assert isinstance(first, services.Sent) and isinstance(second, ServiceError)
    assert Attachment.objects.get().message_id == first.message.pk


def test_history_costs_the_same_queries_with_many_attachments(alice, bob, django_assert_max_num_queries):
    services.message_send(sender=alice, to_username="bob", body="plain")
    with django_assert_max_num_queries(100) as few:
        selectors.message_history(user=bob, peer=alice)
    for i in range(5):
        ids = [upload(alice, b"x", f"{i}-{j}.txt").pk for j in range(3)]
        services.message_send(sender=alice, to_username="bob", body=str(i), attachments=ids)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = selectors.message_history(user=bob, peer=alice)
    assert [len(m["attachments"]) for m in page] == [0, 3, 3, 3, 3, 3]


def test_a_room_message_carries_attachments_to_its_members_only(alice, bob, carol):
    room = services.room_create(user=alice, name="trip", usernames=["bob"]).room["id"]
    pic = upload(alice, png(), "pic.png")
    services.message_room_send(sender=alice, room_id=room, body="", attachments=[pic.pk])
    [waiting] = services.delivery_flush_page(user=bob)
    assert waiting["room"] == room and waiting["attachments"][0]["id"] == pic.pk
    [obj] = selectors.message_history(user=bob, peer=None, room_id=room)
    assert obj["attachments"][0]["name"] == "pic.png"
    assert selectors.attachment_for_download(user=bob, attachment_id=pic.pk) == pic
    with pytest.raises(ServiceError):
        selectors.attachment_for_download(user=carol, attachment_id=pic.pk)
    # A member who leaves no longer sees the room's messages, nor their files.
    services.room_leave(user=bob, room_id=room)
    with pytest.raises(ServiceError):
        selectors.attachment_for_download(user=bob, attachment_id=pic.pk)


# --- Who may download ---------------------------------------------------------------


def test_who_may_download(alice, bob, carol):
    a = upload(alice, PDF, "a.pdf")
    assert selectors.attachment_for_download(user=alice, attachment_id=a.pk) == a
    for user in [bob, carol, None]:
        with pytest.raises(ServiceError):
            selectors.attachment_for_download(user=user, attachment_id=a.pk)
    services.message_send(sender=alice, to_username="bob", body="doc", attachments=[a.pk])
    for user in [alice, bob]:
        assert selectors.attachment_for_download(user=user, attachment_id=a.pk) == a
    with pytest.raises(ServiceError):
        selectors.attachment_for_download(user=carol, attachment_id=a.pk)


def test_deleting_a_message_deletes_its_files(alice, bob, django_capture_on_commit_callbacks):
    a = upload(alice, png(), "a.png")
    sent = services.message_send(sender=alice, to_username="bob", body="x", attachments=[a.pk])
    assert len(stored_names()) == 2
    with django_capture_on_commit_callbacks(execute=True):
        services.message_delete(user=alice, message_id=sent.message.pk)
    assert not Attachment.objects.exists() and stored_names() == []
    with pytest.raises(ServiceError):
        selectors.attachment_for_download(user=bob, attachment_id=a.pk)


def test_unsent_uploads_are_removed_after_a_day(alice, bob, django_capture_on_commit_callbacks):
    old, fresh, sent = (upload(alice, b"x", f"{n}.txt") for n in ("old", "fresh", "sent"))
    services.message_send(sender=alice, to_username="bob", body="x", attachments=[sent.pk])
    Attachment.objects.filter(pk__in=[old.pk, sent.pk]).update(created_at=timezone.now() - timedelta(days=2))
    from django.core.management import call_command

    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("chat_cleanup", stdout=out)
    assert "Removed 1 unsent upload" in out.getvalue()
    assert set(Attachment.objects.values_list("pk", flat=True)) == {fresh.pk, sent.pk}
    assert old.stored not in stored_names() and fresh.stored in stored_names()


def test_unsent_uploads_are_removed_in_batches(alice, monkeypatch, django_capture_on_commit_callbacks):
    """delete() loads every row it deletes (the signal removes the files):
    a great many abandoned uploads go a batch at a time."""
    from messaging.services import attachments

    monkeypatch.setattr(attachments, "PRUNE_BATCH", 2)
    [upload(alice, b"x", f"{n}.txt") for n in range(5)]
    Attachment.objects.update(created_at=timezone.now() - timedelta(days=2))
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        assert services.attachments_unsent_prune() == 5
    deletes = [q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "messaging_attachment"')]
    assert len(deletes) == 3  # 2 + 2 + 1
    assert not Attachment.objects.exists() and stored_names() == []


def test_a_deactivated_users_files_stay_with_their_messages(alice, bob):
    a = upload(alice, PDF, "a.pdf")
    services.message_send(sender=alice, to_username="bob", body="x", attachments=[a.pk])
    services.user_deactivate(user=alice)
    assert selectors.attachment_for_download(user=bob, attachment_id=a.pk) == a
    assert a.stored in stored_names()


# --- The views ----------------------------------------------------------------------


def _post(client: Client, data: bytes, name: str, **extra):
    return client.post("/files/", {"file": _named(data, name)}, **extra)


def _named(data: bytes, name: str):
    f = io.BytesIO(data)
    f.name = name
    return f


def _logged_in(user, *, csrf=False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def _token(user) -> str:
    from accounts import services as accounts

    return accounts.session_create(user=user)


def test_upload_without_login_is_refused(db):
    r = _post(Client(), PDF, "a.pdf")
    assert r.status_code == 401 and r.json()["code"] == "not_logged_in"
    r = _post(Client(), PDF, "a.pdf", HTTP_AUTHORIZATION="Bearer not-a-session")
    assert r.status_code == 401
    assert not Attachment.objects.exists() and stored_names() == []


def test_cookie_uploads_need_the_csrf_token_bearer_ones_do_not(alice):
    client = _logged_in(alice, csrf=True)
    r = _post(client, PDF, "a.pdf")
    assert r.status_code == 403 and r.json()["code"] == "forbidden" and not Attachment.objects.exists()
    client.get("/")  # the page sets the CSRF cookie
    r = _post(client, PDF, "a.pdf", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["name"] == "a.pdf" and body["url"] == f"/files/{body['id']}/"
    r = _post(Client(enforce_csrf_checks=True), PDF, "b.pdf", HTTP_AUTHORIZATION=f"Bearer {_token(alice)}")
    assert r.status_code == 201 and r.json()["name"] == "b.pdf"


def test_the_view_answers_bad_files_clearly(alice, settings):
    client = _logged_in(alice)
    r = _post(client, HTML, "cat.png")
    assert r.status_code == 400 and r.json() == {
        "type": "error",
        "ref": None,
        "code": "invalid",
        "message": "cat.png is not a valid PNG image.",
    }
    settings.CHAT_ATTACHMENT_MAX_BYTES = 1000
    r = _post(client, b"x" * 200_000, "big.txt")
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    r = _post(client, b"x" * 1500, "big.txt")
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    r = client.post("/files/", {})
    assert r.status_code == 400 and "field `file`" in r.json()["message"]
    assert not Attachment.objects.exists() and stored_names() == []


def test_downloads_are_checked_every_time_and_unseen_files_are_404(alice, bob, carol):
    a = upload(alice, PDF, "a b.pdf")
    pic = upload(alice, png(), "pic.png")
    alice_c, bob_c, carol_c = _logged_in(alice), _logged_in(bob), _logged_in(carol)
    r = alice_c.get(f"/files/{a.pk}/")
    assert r.status_code == 200 and b"".join(r.streaming_content) == PDF
    assert r["Content-Type"] == "application/pdf"
    assert r["Content-Disposition"] == 'attachment; filename="a b.pdf"'
    assert r["X-Content-Type-Options"] == "nosniff"
    assert bob_c.get(f"/files/{a.pk}/").status_code == 404
    sent = services.message_send(sender=alice, to_username="bob", body="x", attachments=[a.pk, pic.pk])
    assert bob_c.get(f"/files/{a.pk}/").status_code == 200
    r = bob_c.get(f"/files/{pic.pk}/")
    assert r.status_code == 200 and r["Content-Disposition"].startswith("inline") and r["Content-Type"] == "image/png"
    r = bob_c.get(f"/files/{pic.pk}/thumbnail/")
    assert r.status_code == 200 and Image.open(io.BytesIO(b"".join(r.streaming_content))).size == (64, 48)
    assert bob_c.get(f"/files/{a.pk}/thumbnail/").status_code == 404
    r = Client().get(f"/files/{a.pk}/", HTTP_AUTHORIZATION=f"Bearer {_token(bob)}")
    assert r.status_code == 200
    for client in [carol_c, Client()]:
        assert client.get(f"/files/{a.pk}/").status_code == 404
        assert client.get(f"/files/{pic.pk}/thumbnail/").status_code == 404
    assert bob_c.get("/files/999999/").status_code == 404
    # As in history: a block keeps what was delivered (acked), drops what was pending.
    services.delivery_ack(user=bob, ids=[sent.message.pk])
    services.block_create(blocker=bob, username="alice")
    assert bob_c.get(f"/files/{a.pk}/").status_code == 200
    later = upload(alice, PDF, "later.pdf")
    services.block_delete(blocker=bob, username="alice")
    services.message_send(sender=alice, to_username="bob", body="y", attachments=[later.pk])
    services.block_create(blocker=bob, username="alice")
    assert bob_c.get(f"/files/{later.pk}/").status_code == 404


def test_behind_nginx_the_download_is_an_internal_redirect(alice, settings):
    """With CHAT_FILES_ACCEL_REDIRECT, nginx sends a file of the disk
    storage (Django answers with the redirect and no body); a file in S3
    is not on nginx's disk, so there Django still sends it itself."""
    settings.CHAT_FILES_ACCEL_REDIRECT = "/_files/"
    a = upload(alice, PDF, "a.pdf")
    r = _logged_in(alice).get(f"/files/{a.pk}/")
    assert r.status_code == 200 and r["Content-Disposition"].startswith("attachment")
    if "FileSystem" in settings.STORAGES["attachments"]["BACKEND"]:
        assert r["X-Accel-Redirect"] == f"/_files/{a.stored}" and r.content == b""
    else:
        assert not r.has_header("X-Accel-Redirect") and b"".join(r.streaming_content) == PDF
    assert Client().get(f"/files/{a.pk}/").status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_the_asgi_guard_refuses_an_upload_too_large_as_it_streams(settings):
    """Neither a Content-Length over the limit nor a body that grows past it
    (no Content-Length) reaches Django: 413 at once, nothing kept."""
    from channels.testing import ApplicationCommunicator

    from messaging.uploads import UploadGuard

    settings.CHAT_ATTACHMENT_MAX_BYTES = 1000
    reached = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            reached.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def post(headers, chunks):
        scope = {"type": "http", "method": "POST", "path": "/files/", "headers": headers}
        comm = ApplicationCommunicator(UploadGuard(app), scope)
        for i, chunk in enumerate(chunks):
            await comm.send_input({"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1})
        start = await comm.receive_output(2)
        body = await comm.receive_output(2)
        return start["status"], json.loads(body["body"]) if start["status"] != 200 else None

    status, error = await post([(b"content-length", b"999999999")], [b""])
    assert status == 413 and error["code"] == "too_large" and reached == []
    status, error = await post([], [b"x" * 40_000] * 3)
    assert status == 413 and sum(reached) < 3 * 40_000
    reached.clear()
    assert (await post([], [b"x" * 100]))[0] == 200


@pytest.mark.django_db(transaction=True)
async def test_a_few_uploads_at_a_time_go_on_to_django(settings):
    """Past the guard, at most CHAT_UPLOAD_CONCURRENCY uploads are handled
    at once (each is a Django thread competing for the event loop's GIL);
    the others wait their turn, and every one is answered."""
    from channels.testing import ApplicationCommunicator

    from messaging.uploads import UploadGuard

    settings.CHAT_UPLOAD_CONCURRENCY = 2  # the runtime makes its slots at the first upload
    inside, most = 0, 0

    async def app(scope, receive, send):
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await receive()
        await asyncio.sleep(0.1)
        inside -= 1
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def post():
        scope = {"type": "http", "method": "POST", "path": "/files/", "headers": [(b"content-length", b"3")]}
        comm = ApplicationCommunicator(UploadGuard(app), scope)
        await comm.send_input({"type": "http.request", "body": b"abc", "more_body": False})
        return (await comm.receive_output(5))["status"]

    assert await asyncio.gather(*(post() for _ in range(6))) == [201] * 6
    assert most == 2


# --- The socket ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_send_and_broadcast_with_attachments_over_the_socket():
    alice_user = await amake_user("alice")
    await amake_user("bob")
    pic = await sync_to_async(upload)(alice_user, png(), "pic.png")
    doc = await sync_to_async(upload)(alice_user, PDF, "doc.pdf")
    other = await sync_to_async(upload)(alice_user, b"hello", "x.txt")
    alice, bob = await connected("alice"), await connected("bob")
    await alice.ok("send", to="bob", body="", attachments=[pic.pk, doc.pk])
    event = await bob.event("message")
    assert [a["name"] for a in event["attachments"]] == ["pic.png", "doc.pdf"] and event["body"] == ""
    history = await bob.ok("history", **{"with": "alice"})
    assert history["messages"][0]["attachments"] == event["attachments"]
    error = await alice.error("send", "invalid", to="bob", body="again", attachments=[pic.pk])
    assert "not an upload of yours" in error["message"]
    await alice.error("send", "invalid", to="bob", body="x", attachments="nope")
    await alice.error("send", "invalid", to="bob", body="x", attachments=list(range(1, 12)))
    await alice.error("send", "invalid", to="bob", body="", attachments=[])
    await alice.ok("broadcast", body="all", attachments=[other.pk])
    event = await bob.event("message")
    assert event["kind"] == "broadcast" and event["attachments"][0]["name"] == "x.txt"
    room = (await alice.ok("room_create", name="trip", members=["bob"]))["room"]["id"]
    await bob.event("room")
    pic2 = await sync_to_async(upload)(alice_user, png(), "room.png")
    await alice.ok("send", room=room, body="", attachments=[pic2.pk])
    event = await bob.event("message", room=room)
    assert event["attachments"][0]["name"] == "room.png"
    plain = await alice.ok("send", to="bob", body="plain")
    event = await bob.event("message", id=plain["id"])
    assert event["attachments"] == []
    await alice.close()
    await bob.close()


# --- The S3 store -------------------------------------------------------------------


def test_the_s3_store_through_moto(alice, bob, s3_server, settings):
    """The scale-out storage: django-storages' S3 backend against moto's
    server (run on every stack, so the S3 path never goes untested)."""
    from .conftest import s3_storage_setting

    settings.STORAGES = {**settings.STORAGES, "attachments": s3_storage_setting(s3_server)}
    pic = upload(alice, jpeg_with_gps(), "p.jpg")
    assert type(storages["attachments"]).__name__ == "S3Storage"
    assert b"SecretCam" not in read_stored(pic.stored)
    services.message_send(sender=alice, to_username="bob", body="x", attachments=[pic.pk])
    r = _logged_in(bob).get(f"/files/{pic.pk}/")
    assert r.status_code == 200 and Image.open(io.BytesIO(b"".join(r.streaming_content))).size == (800, 600)
    assert _logged_in(make_user("dave")).get(f"/files/{pic.pk}/").status_code == 404


def test_password_helper_is_the_tests_one():
    assert PASSWORD


# --- The admin ----------------------------------------------------------------------


def test_the_admin_lists_a_messages_attachments_and_deletes_one(alice, bob, django_capture_on_commit_callbacks):
    a, b = upload(alice, png(), "pic.png"), upload(alice, PDF, "doc.pdf")
    sent = services.message_send(sender=alice, to_username="bob", body="x", attachments=[a.pk, b.pk])
    staff = _logged_in(make_user("root", is_staff=True, is_superuser=True))
    page = staff.get(f"/admin/messaging/message/{sent.message.pk}/change/").content.decode()
    for text in ("pic.png", "doc.pdf", "application/pdf", "image/png", "alice"):
        assert text in page
    assert staff.get("/admin/messaging/attachment/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        r = staff.post(f"/admin/messaging/attachment/{b.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302
    assert list(Attachment.objects.values_list("pk", flat=True)) == [a.pk]
    assert b.stored not in stored_names() and a.stored in stored_names()
    [obj] = selectors.message_history(user=bob, peer=alice)
    assert [x["name"] for x in obj["attachments"]] == ["pic.png"]


def test_the_data_export_lists_each_messages_files(alice, bob):
    a = upload(alice, PDF, "a.pdf")
    services.message_send(sender=alice, to_username="bob", body="x", attachments=[a.pk])
    services.message_send(sender=alice, to_username="bob", body="plain")
    data = json.loads(b"".join(_logged_in(bob).get("/account/data.json").streaming_content))
    assert [[f["name"] for f in m["attachments"]] for m in data["messages_received"]] == [["a.pdf"], []]


def test_uploads_are_checked_in_other_processes_at_a_lower_priority(alice, monkeypatch):
    """Parsing and Pillow run out of the server process (its event loop keeps
    its GIL), niced below it; a worker that dies is replaced."""
    from messaging.runtime import runtime

    outcomes = []
    check = runtime.upload_check

    async def spy(job):
        outcome = await check(job)
        outcomes.append(outcome)
        return outcome

    monkeypatch.setattr(runtime, "upload_check", spy)
    client = _logged_in(alice)
    assert _post(client, png(), "pic.png").status_code == 201
    assert _post(client, HTML, "cat.png").status_code == 400
    assert _post(client, PDF, "a.pdf").status_code == 201
    workers = {o.pid for o in outcomes}
    assert len(outcomes) == 3 and os.getpid() not in workers
    worker = workers.pop()
    assert os.getpriority(os.PRIO_PROCESS, worker) > os.getpriority(os.PRIO_PROCESS, 0)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not runtime.upload_pool._broken and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _post(client, PDF, "b.pdf").status_code == 201
    assert outcomes[-1].pid != worker and Attachment.objects.count() == 3


def test_an_upload_process_ends_with_its_server():
    """A server killed (it never stops its pool) leaves no upload process behind."""
    import subprocess
    import sys

    code = "import django; django.setup(); from messaging.runtime import runtime; import os, time; "
    code += "print(runtime._upload_pool().submit(os.getpid).result(), flush=True); time.sleep(60)"
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    worker = int(server.stdout.readline())
    server.kill()
    server.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the upload process outlived its server")


def test_uploads_are_counted_for_metrics(alice):
    from core import metrics

    def count(result):
        return metrics.registry.get_sample_value("chat_uploads_total", {"result": result}) or 0

    stored, refused, size = (
        count("stored"),
        count("invalid"),
        metrics.registry.get_sample_value("chat_upload_bytes_total"),
    )
    client = _logged_in(alice)
    assert _post(client, PDF, "a.pdf").status_code == 201
    assert _post(client, HTML, "cat.png").status_code == 400
    assert (count("stored"), count("invalid")) == (stored + 1, refused + 1)
    assert metrics.registry.get_sample_value("chat_upload_bytes_total") == size + len(PDF)


@pytest.mark.parametrize("prewarm", [True, False])
async def test_the_upload_processes_start_at_the_first_login_unless_told_not_to(settings, prewarm):
    """CHAT_UPLOAD_PREWARM: on, the first upload finds its processes started
    (importing Django costs them a second); off, they wait for one."""
    from messaging.runtime import Runtime

    settings.CHAT_UPLOAD_PREWARM = prewarm
    runtime = Runtime()
    runtime.clear_dead_processes = False
    await runtime.start()
    try:
        assert (runtime.upload_pool is not None) is prewarm
    finally:
        await runtime.stop()


def test_a_redelivered_message_carries_its_attachments_and_its_reply(alice, bob, settings, capture_pushes):
    settings.CHAT_REDELIVER_SECONDS = 30
    services.presence_claim(user=bob, channel_name="c-bob")
    question = services.message_send(sender=bob, to_username="alice", body="send it?").message
    a = upload(alice, PDF, "a.pdf")
    services.message_send(sender=alice, to_username="bob", body="here", attachments=[a.pk], reply_to=question.pk)
    Delivery.objects.update(pushed_at=timezone.now() - timedelta(seconds=31))
    with capture_pushes() as pushes:
        assert services.delivery_redeliver(channel_names=["c-bob"]) == 1
    [frame] = pushes[0].event["frames"]
    assert [x["name"] for x in frame["attachments"]] == ["a.pdf"]
    assert frame["reply_to"] == {"id": question.pk, "from": "bob", "excerpt": "send it?"}
