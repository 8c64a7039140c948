"""`/send-file` in the terminal client, against a real server keeping files
where the test's storage is (a folder, or S3 on the scale-out stack): the
upload with the resume token, progress for big files, the send, how
attachments print, and what is refused."""

import asyncio
import http.client
import io
import json
import urllib.request

import pytest
from PIL import Image

from chatclient.client import ChatClient
from chatclient.text import render_message
from messaging.models import Attachment

from .helpers import PASSWORD
from .servers import Peer, Server, signup
from .test_terminal_client import Lines, client_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(transactional_db, attachment_store):
    srv = Server(**attachment_store).start()
    yield srv
    srv.stop()


def png_file(tmp_path, name="beach photo.png"):
    path = tmp_path / name
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 140, 200)).save(out, format="PNG")
    path.write_bytes(out.getvalue())
    return path


async def test_send_file_uploads_and_sends_to_the_current_conversation(server, tmp_path):
    await signup(server.url, "alice", "bob")
    alice, alice_lines = await client_for(server, "alice")
    bob, bob_lines = await client_for(server, "bob")
    await alice.execute("/send-file x")
    await alice_lines.wait_for("Choose where it goes first")
    await alice.execute("/msg bob")
    picture = png_file(tmp_path)
    await alice.execute(f'/send-file "{picture}" the beach')
    line = await bob_lines.wait_for("the beach")
    pk = (await asyncio.to_thread(lambda: Attachment.objects.get())).pk
    assert "alice: the beach\n    [file: beach photo.png, " in line
    assert line.endswith(f"] {server.http}/files/{pk}/")
    # The URL works with the recipient's token.
    request = urllib.request.Request(f"{server.http}/files/{pk}/", headers={"Authorization": f"Bearer {bob.token}"})
    with await asyncio.to_thread(urllib.request.urlopen, request, None, 10) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/png"
    # History shows it too, and a file alone puts the file on the first line.
    notes = tmp_path / "notes.txt"
    notes.write_text("remember the towels\n")
    await alice.execute(f"/send-file {notes}")
    line = await bob_lines.wait_for("notes.txt")
    assert "alice: [file: notes.txt, 20 bytes] " in line
    assert bob_lines.count("beach photo.png") == 1
    await bob.execute("/history alice")
    await asyncio.sleep(0.5)
    assert bob_lines.count("beach photo.png") == 2
    await alice.close()
    await bob.close()


async def test_big_files_show_progress_and_refusals_say_why(server, tmp_path):
    await signup(server.url, "alice", "bob")
    alice, lines = await client_for(server, "alice")
    await alice.execute("/msg bob")
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.4\n" + b"0" * (3 * 1024 * 1024) + b"\n%%EOF\n")
    await alice.execute(f"/send-file {big}")
    await lines.wait_for("(uploading big.pdf: 100% of 3.1 MB)")
    assert lines.count("(uploading big.pdf:") == 4
    fake = tmp_path / "cat.png"
    fake.write_text("<html><script>alert(1)</script></html>")
    await alice.execute(f"/send-file {fake}")
    await lines.wait_for("Not sent: cat.png is not a valid PNG image.")
    await alice.execute(f"/send-file {tmp_path / 'missing.pdf'}")
    await lines.wait_for("Not sent: Cannot read")
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"x" * (11 * 1024 * 1024))
    await alice.execute(f"/send-file {huge}")
    await lines.wait_for("Not sent: A file may be at most 10 MiB.")
    assert await asyncio.to_thread(lambda: Attachment.objects.count()) == 1
    await alice.close()


async def test_incoming_attachments_print_as_file_lines(server):
    await signup(server.url, "alice", "bob")
    lines = Lines()
    client = ChatClient(server.url, lines.append)
    await client.connect()
    assert await client.login("bob", PASSWORD) is None
    async with Peer(server.url) as alice:
        login = await alice.ok("login", username="alice", password=PASSWORD)
        body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF-1.4 tiny\r\n--b--\r\n'
        request = urllib.request.Request(
            f"{server.http}/files/",
            data=body,
            headers={"Authorization": f"Bearer {login['token']}", "Content-Type": "multipart/form-data; boundary=b"},
        )
        with await asyncio.to_thread(urllib.request.urlopen, request, None, 10) as response:
            attachment = json.loads(response.read())
        await alice.ok("broadcast", body="agenda", attachments=[attachment["id"]])
    line = await lines.wait_for("agenda")
    assert line.endswith(f"→ everyone: agenda\n    [file: a.pdf, 13 bytes] {server.http}/files/{attachment['id']}/")
    await client.close()


def test_rendering_of_attachments():
    m = {
        "kind": "private",
        "from": "bob",
        "to": "me",
        "body": "",
        "sent_at": "2020-01-01T10:00:00+00:00",
        "attachments": [
            {"name": "x\x1b[31m.jpg", "size": 2_100_000, "url": "/files/7/"},
            {"name": "y.pdf", "size": 840_000, "url": "/files/8/"},
        ],
    }
    text = render_message(m, "me", base="http://h:1")
    assert text.endswith(
        "bob: [file: x�[31m.jpg, 2.1 MB] http://h:1/files/7/\n    [file: y.pdf, 840 KB] http://h:1/files/8/"
    )


async def test_a_chunked_upload_over_the_limit_is_cut_off_as_it_streams(server):
    """No Content-Length to go by: daphne's server refuses once the body
    passes the limit, and nothing is stored."""
    await signup(server.url, "alice")
    async with Peer(server.url) as alice:
        token = (await alice.ok("login", username="alice", password=PASSWORD))["token"]

    def post() -> tuple[int, bytes]:
        def body():
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
            for _ in range(12 * 16):
                yield b"x" * 65536
            yield b"\r\n--b--\r\n"

        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=b"}
        try:
            connection.request("POST", "/files/", body=body(), headers=headers, encode_chunked=True)
        except OSError:
            pass  # the server may close before the whole body is sent
        response = connection.getresponse()
        return response.status, response.read()

    status, answer = await asyncio.to_thread(post)
    assert status == 413 and json.loads(answer)["code"] == "too_large"
    assert await asyncio.to_thread(lambda: Attachment.objects.count()) == 0
