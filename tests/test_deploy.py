"""deploy/nginx.conf, run: nginx with TLS in front of two server processes.

The repository's file is used as it is, with only its ports, certificate
and static folder replaced (``render``), so a change that breaks the
WebSocket upgrade, the forwarded headers or the static files fails here.
Runs on both stacks; on the embedded one the processes share no channel
layer, so a message between them arrives by the re-push of its pending
delivery instead of live.
"""

import asyncio
import contextlib
import datetime
import http.client
import http.cookiejar
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from django.conf import settings

from accounts.models import LoginAttempt
from messaging.models import Attachment, Presence

from .conftest import need
from .helpers import PASSWORD
from .servers import ROOT, Peer, Server, free_port, signup

pytestmark = pytest.mark.django_db(transaction=True)

CONF = ROOT / "deploy" / "nginx.conf"
# An address of this machine other than nginx's own, for the client: what
# the servers record must be the client's address, not the proxy's.
CLIENT_ADDRESS = "127.0.0.3"


def nginx_binary():
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


def render(text, replacements):
    """The config with each pattern replaced; a pattern that no longer
    matches is an error, so the file and this test cannot drift apart."""
    for pattern, new in replacements.items():
        text, count = re.subn(pattern, new, text, flags=re.MULTILINE)
        assert count, f"deploy/nginx.conf has no line matching {pattern!r}"
    return text


def self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class Nginx:
    """nginx in the foreground with every file of its own under `tmp_path`."""

    def __init__(self, tmp_path, upstreams, static_root, media_root):
        self.binary = nginx_binary()
        self.dir = tmp_path
        self.https_port, self.http_port = free_port(), free_port()
        cert, key = self_signed(tmp_path)
        self.cert = cert
        site = render(
            CONF.read_text(),
            {
                r"^(\s*)server 127\.0\.0\.1:8001;.*\n(\s*server 127\.0\.0\.1:\d+;.*\n)*": "".join(
                    f"    server 127.0.0.1:{port};\n" for port in upstreams
                ),
                r"listen 443 ssl;.*": f"listen 127.0.0.1:{self.https_port} ssl;",
                r"listen 80;.*": f"listen 127.0.0.1:{self.http_port};",
                r"^\s*listen \[::\]:\d+.*\n": "",
                r"ssl_certificate .*": f"ssl_certificate {cert};",
                r"ssl_certificate_key .*": f"ssl_certificate_key {key};",
                r"alias /srv/chat/static/;.*": f"alias {static_root}/;",
                r"alias /srv/chat/var/media/;.*": f"alias {media_root}/;",
            },
        )
        (tmp_path / "chat.conf").write_text(site)
        mime = "include /etc/nginx/mime.types;" if os.path.exists("/etc/nginx/mime.types") else ""
        # As root, nginx's workers would run as nobody, who cannot enter
        # pytest's private temporary folder.
        user = "user root;" if os.geteuid() == 0 else ""
        temp = " ".join(
            f"{kind}_temp_path {tmp_path}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (tmp_path / "nginx.conf").write_text(
            f"""daemon off;
{user}
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 256; }}
http {{
    {mime}
    access_log {tmp_path}/access.log;
    {temp}
    include {tmp_path}/chat.conf;
}}
"""
        )
        self.proc = None

    def command(self, *extra):
        return [
            self.binary,
            "-p",
            str(self.dir),
            "-c",
            str(self.dir / "nginx.conf"),
            "-e",
            str(self.dir / "error.log"),
            *extra,
        ]

    def start(self):
        check = subprocess.run(self.command("-t"), check=False, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (self.dir / "nginx.pid").exists():
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def ssl(self):
        """A client context that trusts the test certificate only."""
        return ssl.create_default_context(cafile=str(self.cert))

    @property
    def url(self):
        return f"wss://127.0.0.1:{self.https_port}/ws/chat/"

    @property
    def origin(self):
        return f"https://127.0.0.1:{self.https_port}"


@pytest.fixture
def proxied(transactional_db, tmp_path, attachment_store):
    """Two server processes behind deploy/nginx.conf, trusting its
    forwarded headers as deploy/chat.env.example says; static files
    collected for nginx."""
    need(nginx_binary() is not None, "nginx (`make nginx` installs Debian's)")
    static_root = tmp_path / "static"
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, "STATIC_ROOT": str(static_root)},
        check=True,
    )
    # Without a shared channel layer, cross-process messages come by the re-push.
    # Attachments on disk, sent by nginx (on the scale-out stack they are in
    # S3, from attachment_store's environment, and the processes stream them).
    media_root = tmp_path / "media"
    env = {"TRUSTED_PROXIES": "127.0.0.1", "MEDIA_ROOT": str(media_root), "CHAT_FILES_ACCEL_REDIRECT": "/_files/"}
    if not settings.REDIS_URL:
        env["CHAT_REDELIVER_SECONDS"] = "1"
    with contextlib.ExitStack() as stack:
        servers = []
        for _ in range(2):
            servers.append(server := Server(**env))
            stack.callback(server.stop)
            server.start()
        (tmp_path / "nginx").mkdir()
        nginx = Nginx(tmp_path / "nginx", [s.port for s in servers], static_root, media_root)
        stack.callback(nginx.stop)
        yield nginx.start(), servers


def pids_of(*usernames):
    rows = dict(Presence.objects.filter(user__username__in=usernames).values_list("user__username", "pid"))
    return [rows.get(name) for name in usernames]


async def test_chat_over_wss_through_nginx_between_two_processes(proxied):
    nginx, servers = proxied
    await signup(servers[0].url, "alice", "bob")
    # The client says it is somebody else; nginx must overwrite that.
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    async with (
        Peer(nginx.url, ssl=nginx.ssl, local_addr=(CLIENT_ADDRESS, 0), additional_headers=spoofed) as a,
        Peer(nginx.url, ssl=nginx.ssl, local_addr=(CLIENT_ADDRESS, 0)) as b,
    ):
        await a.ok("login", username="alice", password=PASSWORD)
        await b.ok("login", username="bob", password=PASSWORD)
        # least_conn put the two WebSockets on the two processes.
        pids = await asyncio.to_thread(pids_of, "alice", "bob")
        assert sorted(pids) == sorted(s.proc.pid for s in servers)

        sent = await a.ok("send", to="bob", body="through nginx")
        assert (await b.event("message", timeout=10))["id"] == sent["id"]
        await b.ok("send", to="alice", body="and back")
        assert (await a.event("message", timeout=10))["body"] == "and back"

    # The servers saw the client's address, from X-Forwarded-For.
    ips = await asyncio.to_thread(lambda: set(LoginAttempt.objects.values_list("ip", flat=True)))
    assert ips == {CLIENT_ADDRESS}


async def test_login_page_session_socket_and_static_files_through_nginx(proxied):
    nginx, servers = proxied
    await signup(servers[0].url, "alice")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=nginx.ssl),
        urllib.request.HTTPCookieProcessor(jar := http.cookiejar.CookieJar()),
    )

    def get(path, data=None, headers=None):
        request = urllib.request.Request(nginx.origin + path, data=data, headers=headers or {})
        with opener.open(request, timeout=10) as response:
            assert response.headers["Strict-Transport-Security"]
            return response.status, response.geturl(), response.read()

    # Static files: from STATIC_ROOT, as collectstatic wrote them.
    status, _, body = await asyncio.to_thread(get, "/static/chat/chat.js")
    assert status == 200 and body == (ROOT / "static" / "chat" / "chat.js").read_bytes()

    # The login form over https: Django's CSRF check compares the page's
    # Origin with the scheme and host nginx forwarded.
    _, _, page = await asyncio.to_thread(get, "/accounts/login/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    form = urllib.parse.urlencode({"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token}).encode()
    status, landed, _ = await asyncio.to_thread(
        get, "/accounts/login/", form, {"Origin": nginx.origin, "Referer": nginx.origin + "/accounts/login/"}
    )
    assert (status, urllib.parse.urlparse(landed).path) == (200, "/")
    assert any(c.name == "sessionid" for c in jar)

    # Plain http is sent to https.
    plain = http.client.HTTPConnection("127.0.0.1", nginx.http_port, timeout=10)
    plain.request("GET", "/accounts/login/", headers={"Host": "chat.example.com"})
    response = plain.getresponse()
    assert (response.status, response.headers["Location"]) == (301, "https://chat.example.com/accounts/login/")
    plain.close()

    # The page's own WebSocket: its Origin and session cookie, logged in by the session.
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    async with Peer(
        nginx.url, ssl=nginx.ssl, origin=nginx.origin, additional_headers={"Cookie": cookie}
    ) as page_socket:
        assert (await page_socket.ok("whoami"))["username"] == "alice"


def _multipart(field: str, name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "chat-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def test_attachments_through_nginx(proxied):
    """Upload with a resume token, send by id, download after the check:
    from MEDIA_ROOT by nginx's internal location (X-Accel-Redirect), or
    streamed by the process from S3 on the scale-out stack. Someone who
    cannot see the message gets 404; the internal location is not reachable
    from outside; a body over nginx's limit never reaches a process."""
    nginx, servers = proxied
    await signup(servers[0].url, "alice", "bob", "carol")
    pdf = b"%PDF-1.4\n" + os.urandom(300_000) + b"\n%%EOF\n"

    def call(method, path, token, data=None, content_type=None):
        connection = http.client.HTTPSConnection("127.0.0.1", nginx.https_port, context=nginx.ssl, timeout=20)
        headers = {"Authorization": f"Bearer {token}", "Host": f"127.0.0.1:{nginx.https_port}"}
        if content_type:
            headers["Content-Type"] = content_type
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        result = response.status, dict(response.headers), response.read()
        connection.close()
        return result

    async with Peer(nginx.url, ssl=nginx.ssl) as a, Peer(nginx.url, ssl=nginx.ssl) as b:
        alice = (await a.ok("login", username="alice", password=PASSWORD))["token"]
        bob = (await b.ok("login", username="bob", password=PASSWORD))["token"]
        body, content_type = _multipart("file", "report.pdf", pdf)
        status, _, answer = await asyncio.to_thread(call, "POST", "/files/", alice, body, content_type)
        assert status == 201, answer
        attachment = json.loads(answer)
        sent = await a.ok("send", to="bob", body="", attachments=[attachment["id"]])
        event = await b.event("message", timeout=10)
        assert event["id"] == sent["id"] and event["attachments"] == [attachment]

        status, headers, data = await asyncio.to_thread(call, "GET", attachment["url"], bob)
        assert status == 200 and data == pdf
        assert headers["Content-Type"] == "application/pdf"
        assert headers["Content-Disposition"] == 'attachment; filename="report.pdf"'
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Strict-Transport-Security"]
        assert "X-Accel-Redirect" not in headers

        async with Peer(nginx.url, ssl=nginx.ssl) as c:
            carol = (await c.ok("login", username="carol", password=PASSWORD))["token"]
        assert (await asyncio.to_thread(call, "GET", attachment["url"], carol))[0] == 404
        stored = await asyncio.to_thread(lambda: Attachment.objects.get(pk=attachment["id"]).stored)
        assert (await asyncio.to_thread(call, "GET", f"/_files/{stored}", bob))[0] == 404

        big, content_type = _multipart("file", "big.txt", b"x" * (12 * 1024 * 1024))
        status, _, _ = await asyncio.to_thread(call, "POST", "/files/", alice, big, content_type)
        assert status == 413
