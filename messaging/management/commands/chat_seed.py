"""Seed users (and optionally conversations) for demos and load tests."""

import random
import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser
from tqdm import tqdm

from accounts import services as accounts
from core.errors import ServiceError
from messaging import services as messaging
from messaging.management.database import DatabaseCommand
from messaging.models import Message

LINES = [
    "hi!",
    "how are you?",
    "see you at the standup",
    "lunch?",
    "pushed the fix",
    "can you review my PR?",
    "on my way",
    "thanks!",
    "sounds good",
    "brb",
]

# Messages stored per transaction: messages_send writes a batch with one
# bulk insert of messages and one of deliveries.
BATCH = 500


class Command(DatabaseCommand):
    help = "Create N users PREFIX1..PREFIXN sharing one password; idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=100, help="how many users (default %(default)s)")
        parser.add_argument("--prefix", default="user", help="name prefix (default %(default)s)")
        parser.add_argument("--password", default="chat-password", help="their password (default %(default)s)")
        parser.add_argument(
            "--messages",
            type=int,
            default=0,
            help="also send this many random private messages among them, if they have none yet",
        )
        parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable conversations")

    def handle(
        self, *args: Any, users: int, prefix: str, password: str, messages: int, seed: int | None, **options: Any
    ) -> None:
        if users < 1:
            raise CommandError("--users must be at least 1")
        names = [f"{prefix}{i}" for i in range(1, users + 1)]
        # A bar on a terminal only: in a log or a pipe it would be noise.
        progress = options.get("verbosity", 1) > 0 and sys.stderr.isatty()
        try:
            with tqdm(total=len(names), unit="user", disable=not progress) as bar:
                created = accounts.user_bulk_create(usernames=names, password=password, progress=bar.update)
        except ServiceError as e:
            raise CommandError(f"Prefix {prefix!r} makes bad names: {e.message}") from None
        self.stdout.write(f"{created} user(s) created, {len(names) - created} already there.")
        if messages:
            self.seed_messages(names, messages, seed, progress)

    def seed_messages(self, names: list[str], count: int, seed: int | None, progress: bool) -> None:
        User = get_user_model()
        people = list(User.objects.filter(username__in=names, is_active=True))
        if len(people) < 2:
            raise CommandError("Need at least two users for conversations")
        if Message.objects.filter(sender__in=people).exists():
            self.stdout.write("They have messages already; none added.")
            return
        rng = random.Random(seed)
        sent = 0
        with tqdm(total=count, unit="msg", disable=not progress) as bar:
            for start in range(0, count, BATCH):
                requests = []
                for _ in range(min(BATCH, count - start)):
                    sender, recipient = rng.sample(people, 2)
                    requests.append(
                        messaging.SendRequest(
                            sender=sender, to_username=recipient.username, body=rng.choice(LINES), rate_limit=False
                        )
                    )
                # A refusal (the recipient blocks the sender) is skipped, as a user would move on.
                results = messaging.messages_send(requests=requests)
                sent += sum(not isinstance(r, ServiceError) for r in results)
                bar.update(len(requests))
        self.stdout.write(f"{sent} message(s) sent.")
