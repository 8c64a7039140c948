"""Seed a benchmark database: users, and messages waiting for one user.

    python -m bench.seed --users 1100 --prefix u --password P [--pending 10000 --to drain --sender drainsrc]
                         [--broadcasts 5000] [--rooms 100,1000]

Run with the benchmark's settings (``DJANGO_SETTINGS_MODULE=bench.cheap_hash_settings``):
users come from ``accounts.services.user_bulk_create`` (one MD5 hash for all);
pending messages are bulk-inserted as the project's own rows (a ``Message``
and its ``Delivery`` each, as ``messages_import`` writes them), in one
transaction: seconds for ten thousand, where ten thousand sends would take
a minute. ``--broadcasts N`` adds N broadcasts from the sender, stored as
the server stores them for users offline: the message alone, caught up at
login (messaging/services/mailbox.py). ``--rooms N,..`` makes a room ``bench-N`` of users 1 to N+1 for
each N (``messaging.services.rooms_seed``), the last one its admin: adding a
thousand members through ``room_add`` would tell each member online of each
one added, a million frames before the first measurement.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.cheap_hash_settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=0)
    parser.add_argument("--prefix", default="u")
    parser.add_argument("--password", required=True)
    parser.add_argument("--pending", type=int, default=0)
    parser.add_argument("--to", default="drain")
    parser.add_argument("--sender", default="drainsrc")
    parser.add_argument("--broadcasts", type=int, default=0, help="broadcasts waiting for every offline user")
    parser.add_argument("--rooms", default="", help="room sizes (members besides the sender), comma-separated")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import transaction
    from django.utils import timezone

    from accounts import services as accounts
    from accounts.models import User
    from messaging.models import Delivery, Message
    from messaging.services import rooms_seed

    names = [f"{args.prefix}{i}" for i in range(1, args.users + 1)]
    if args.pending or args.broadcasts:
        names += [args.to, args.sender]
    accounts.user_bulk_create(usernames=names, password=args.password)
    if args.pending or args.broadcasts:
        sender, recipient = User.objects.get(username=args.sender), User.objects.get(username=args.to)
        now = timezone.now()
        with transaction.atomic():
            for start in range(0, args.broadcasts, 2000):
                n = min(2000, args.broadcasts - start)
                Message.objects.bulk_create(
                    Message(kind=Message.Kind.BROADCAST, sender=sender, body=f"everyone {start + i}", sent_at=now)
                    for i in range(n)
                )
            for start in range(0, args.pending, 2000):
                n = min(2000, args.pending - start)
                messages = Message.objects.bulk_create(
                    Message(
                        kind=Message.Kind.PRIVATE,
                        sender=sender,
                        recipient=recipient,
                        body=f"waiting {start + i}",
                        sent_at=now,
                    )
                    for i in range(n)
                )
                Delivery.objects.bulk_create(Delivery(message=m, recipient=recipient) for m in messages)
    sizes = [int(n) for n in args.rooms.split(",") if n]
    if sizes:
        users = {u.username: u for u in User.objects.filter(username__in=names)}
        rooms = [(f"bench-{n}", [users[f"{args.prefix}{i}"] for i in range(n + 1, 0, -1)]) for n in sizes]
        rooms_seed(rooms=rooms)
    print(f"seeded {len(names)} users, {args.pending} pending, {args.broadcasts} broadcasts at {time.strftime('%X')}")


if __name__ == "__main__":
    main()
