"""Import the old socket server's files: users, blocks, undelivered messages.

Dry run by default (everything is done in a transaction that is rolled back,
so the report is exactly what --commit would do); --commit writes it all in
one transaction. Running it again imports nothing twice.
"""

import csv
import io
import json
import unicodedata
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import services as accounts
from chatsite.errors import ServiceError
from messaging import services
from messaging.models import Block, Message

OPERATIONS = {6: Message.Kind.PRIVATE, 7: Message.Kind.BROADCAST}
STORED = 2


class Rollback(Exception):
    """Raised at the end of a dry run to undo everything."""


class Malformed(Exception):
    pass


def nfc(text):
    return unicodedata.normalize("NFC", text)


class Command(BaseCommand):
    help = "Import the old server's server_resources/ folder (user_pass.csv, user_data/*.json)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="the server_resources folder (or the folder that holds it)")
        parser.add_argument("--commit", action="store_true", help="write the import (default: dry run)")
        parser.add_argument(
            "--timezone",
            default=settings.TIME_ZONE,
            help="time zone of the old server's naive timestamps (default: %(default)s)",
        )

    def handle(self, *args, path, commit=False, timezone=None, **options):
        root = Path(path)
        if (root / "server_resources").is_dir():
            root = root / "server_resources"
        csv_path = root / "user_pass.csv"
        if not csv_path.is_file():
            raise CommandError(f"No user_pass.csv in {root}")
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CommandError(f"Unknown time zone {timezone!r}") from None
        self.counts = dict.fromkeys(
            ["users", "users existing", "messages", "deliveries", "blocks", "blocks existing", "skipped"], 0
        )
        try:
            with transaction.atomic():
                self.run(csv_path, root / "user_data")
                if not commit:
                    raise Rollback
        except Rollback:
            pass
        summary = ", ".join(f"{n} {what}" for what, n in self.counts.items())
        if commit:
            self.stdout.write(self.style.SUCCESS(f"Imported: {summary}."))
        else:
            self.stdout.write(f"Dry run, nothing written. Would import: {summary}.")
            self.stdout.write("Run again with --commit to import.")

    # --- Reporting ----------------------------------------------------------

    def note(self, text):
        self.stdout.write(f"  {text}")

    def skip(self, where, why):
        self.counts["skipped"] += 1
        self.stdout.write(self.style.WARNING(f"  skipped: {where}: {why}"))

    # --- The import ---------------------------------------------------------

    def run(self, csv_path, data_dir):
        rows = self.read_csv(csv_path)
        data = self.read_data(data_dir, rows)
        users = {}
        for name, (line, password) in rows.items():
            joined = data.get(name, {}).get("signup_timestamp")
            try:
                user, created = accounts.user_import(username=name, password=password, date_joined=joined)
            except ServiceError as e:
                self.skip(f"user_pass.csv line {line}", e.message)
                continue
            users[name] = user
            self.counts["users" if created else "users existing"] += 1
            self.note(f"user {name}: {'create' if created else 'exists, left as it is'}")
        for name, content in data.items():
            if name in users:
                self.import_messages(users[name], content, users)
        for name, content in data.items():
            if name in users:
                self.import_blocks(users[name], content, users)

    def read_csv(self, csv_path):
        """{username: (line number, password)}: first row wins."""
        rows: dict[str, tuple[int, str]] = {}
        try:
            text = csv_path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise CommandError(f"user_pass.csv is not UTF-8: {e}") from None
        reader = csv.reader(io.StringIO(text, newline=""))
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                self.skip(f"user_pass.csv line {reader.line_num}", f"not CSV ({e})")
                continue
            line = reader.line_num
            where = f"user_pass.csv line {line}"
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) == 1:
                self.skip(where, f"{row[0]}: no password")
                continue
            if len(row) != 2:
                self.skip(where, f"expected 'username,password', got {len(row)} field(s)")
                continue
            name, password = nfc(row[0].strip()), row[1]
            if not name or not password:
                self.skip(where, "empty username or password")
                continue
            if name in rows:
                self.skip(where, f"{name} again (line {rows[name][0]} is kept)")
                continue
            rows[name] = (line, password)
        return rows

    def read_data(self, data_dir, rows):
        """{username: parsed file} for the well-formed files of known users."""
        data: dict[str, object] = {}
        if not data_dir.is_dir():
            return data
        for path in sorted(data_dir.glob("*.json")):
            name = nfc(path.stem)
            if name not in rows:
                self.skip(path.name, "no such user in user_pass.csv")
                continue
            try:
                data[name] = self.parse_file(path)
            except Malformed as e:
                self.skip(path.name, str(e))
        return data

    def parse_file(self, path):
        try:
            raw = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as e:
            raise Malformed(f"not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise Malformed("not a JSON object")
        pending = raw.get("to_be_delivered", [])
        blocked = raw.get("blocked", [])
        if not isinstance(pending, list) or not isinstance(blocked, list):
            raise Malformed("'to_be_delivered' and 'blocked' must be lists")
        if not all(isinstance(b, str) for b in blocked):
            raise Malformed("'blocked' must list user names")
        messages = []
        for i, entry in enumerate(pending, start=1):
            if not isinstance(entry, dict):
                raise Malformed(f"message {i} is not an object")
            sender, body, op = entry.get("sender"), entry.get("message"), entry.get("operation")
            if not isinstance(sender, str) or not isinstance(body, str) or op not in OPERATIONS:
                raise Malformed(f"message {i} lacks sender, message or a known operation")
            if entry.get("status", STORED) != STORED:
                raise Malformed(f"message {i} has status {entry.get('status')!r}, not {STORED} (stored)")
            messages.append(
                {
                    "sender": nfc(sender),
                    "body": body,
                    "kind": OPERATIONS[op],
                    "sent_at": self.when(entry.get("timestamp"), i),
                }
            )
        joined = raw.get("signup_timestamp")
        return {
            "signup_timestamp": self.when(joined, "signup") if joined is not None else None,
            "messages": messages,
            "blocked": [nfc(b) for b in blocked],
        }

    def when(self, text, what):
        if not isinstance(text, str):
            raise Malformed(f"timestamp of {what} is missing")
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise Malformed(f"timestamp of {what} is not a date: {text!r}") from None
        return value if value.tzinfo else value.replace(tzinfo=self.zone)

    def import_messages(self, recipient, content, users):
        for i, m in enumerate(content["messages"], start=1):
            where = f"{recipient.username}.json message {i}"
            sender = users.get(m["sender"])
            if sender is None:
                self.skip(where, f"sender {m['sender']} does not exist")
                continue
            body = m["body"].strip()
            if not body or len(body) > settings.CHAT_MAX_BODY_CHARS:
                self.skip(where, "empty or longer than the chat allows")
                continue
            message, created, new = services.message_import(
                sender=sender, recipients=[recipient], body=body, sent_at=m["sent_at"], kind=m["kind"]
            )
            self.counts["messages"] += created
            self.counts["deliveries"] += new
            state = "pending" if new else "already imported"
            self.note(f"{m['kind']} from {sender.username} to {recipient.username}: {state}")

    def import_blocks(self, blocker, content, users):
        for name in content["blocked"]:
            where = f"{blocker.username}.json blocked"
            if name not in users:
                self.skip(where, f"{name} does not exist")
                continue
            if Block.objects.filter(blocker=blocker, blocked=users[name]).exists():
                self.counts["blocks existing"] += 1
                continue
            try:
                services.block_create(blocker=blocker, username=users[name].username)
            except ServiceError as e:
                self.skip(where, e.message)
                continue
            self.counts["blocks"] += 1
            self.note(f"{blocker.username} blocks {name}")
