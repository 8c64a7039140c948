"""Seed users (and optionally conversations and rooms) for demos and load tests."""

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
# Names or ids looked up per query (within every database's limit of parameters).
PER_QUERY = 1000


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
        parser.add_argument(
            "--rooms", type=int, default=0, help="also make this many rooms PREFIX-room1.. (those missing)"
        )
        parser.add_argument(
            "--room-size",
            type=int,
            default=10,
            help="members of each room, drawn from the users (default %(default)s; at most the users)",
        )
        parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable conversations")

    def handle(
        self,
        *args: Any,
        users: int,
        prefix: str,
        password: str,
        messages: int,
        rooms: int,
        room_size: int,
        seed: int | None,
        **options: Any,
    ) -> None:
        if users < 1:
            raise CommandError("--users must be at least 1")
        if rooms < 0 or room_size < 1:
            raise CommandError("--rooms must be at least 0 and --room-size at least 1")
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
        if rooms:
            self.seed_rooms(prefix, names, rooms, room_size, seed, progress)

    @staticmethod
    def user_ids(names: list[str]) -> list[int]:
        """The ids of the active users among `names`, in order: ids, not
        rows, so that 100,000 users are not 100,000 objects in memory."""
        ids: list[int] = []
        for start in range(0, len(names), PER_QUERY):
            chunk = names[start : start + PER_QUERY]
            ids += get_user_model().objects.filter(username__in=chunk, is_active=True).values_list("pk", flat=True)
        return sorted(ids)

    @staticmethod
    def users(ids: set[int]) -> dict[int, Any]:
        """The users of `ids` (a batch's), by id."""
        found: dict[int, Any] = {}
        wanted = sorted(ids)
        for start in range(0, len(wanted), PER_QUERY):
            found |= get_user_model().objects.in_bulk(wanted[start : start + PER_QUERY])
        return found

    def seed_rooms(
        self, prefix: str, names: list[str], count: int, size: int, seed: int | None, progress: bool
    ) -> None:
        """Rooms PREFIX-room1..N, each of `size` users drawn at random (all
        of them if fewer), the first its admin."""
        ids = self.user_ids(names)
        rng = random.Random(seed)
        size = min(size, len(ids))
        drawn = [(f"{prefix}-room{i}", rng.sample(ids, size)) for i in range(1, count + 1)]
        # Only the members drawn, as rows.
        people = self.users({i for _, members in drawn for i in members})
        wanted = [(name, [people[i] for i in members]) for name, members in drawn]
        try:
            with tqdm(total=count, unit="room", disable=not progress) as bar:
                made = messaging.rooms_seed(rooms=wanted, progress=bar.update)
        except ServiceError as e:
            raise CommandError(e.message) from None
        self.stdout.write(f"{made} room(s) of {size} member(s) made, {count - made} already there.")

    def seed_messages(self, names: list[str], count: int, seed: int | None, progress: bool) -> None:
        ids = self.user_ids(names)
        if len(ids) < 2:
            raise CommandError("Need at least two users for conversations")
        chunks = (ids[i : i + PER_QUERY] for i in range(0, len(ids), PER_QUERY))
        if any(Message.objects.filter(sender_id__in=chunk).exists() for chunk in chunks):
            self.stdout.write("They have messages already; none added.")
            return
        rng = random.Random(seed)
        sent = 0
        with tqdm(total=count, unit="msg", disable=not progress) as bar:
            for start in range(0, count, BATCH):
                pairs = [rng.sample(ids, 2) for _ in range(min(BATCH, count - start))]
                people = self.users({i for pair in pairs for i in pair})  # this batch's only
                requests = [
                    messaging.SendRequest(
                        sender=people[sender],
                        to_username=people[recipient].username,
                        body=rng.choice(LINES),
                        rate_limit=False,
                    )
                    for sender, recipient in pairs
                ]
                # A refusal (the recipient blocks the sender) is skipped, as a user would move on.
                results = messaging.messages_send(requests=requests)
                sent += sum(not isinstance(r, ServiceError) for r in results)
                bar.update(len(requests))
        self.stdout.write(f"{sent} message(s) sent.")
