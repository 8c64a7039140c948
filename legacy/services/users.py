"""Bringing over the old server's users: passwords hashed on every core,
then the users written in bulk. Accounts' own rules (the names, the
hashers) apply; only today's password rules do not, as the people already
have these passwords."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import hashers as django_hashers
from django.db import transaction

from accounts import names
from accounts.models import User as UserModel
from accounts.services import username_clean
from core.errors import ServiceError

from .. import hashing
from ..models import ImportedUser

User = get_user_model()


def passwords_hash(
    *, passwords: Sequence[str], jobs: int | None = None, progress: Callable[[int, int], None] | None = None
) -> list[str]:
    """`passwords` hashed as make_password hashes them, in the same order.

    Argon2 costs a tenth of a second or more of CPU per password, so they are
    hashed in chunks by `jobs` worker processes (default: one per core);
    `jobs=1` hashes here, in this process. `progress(done, total)` is
    called as chunks are done.
    """
    jobs = jobs or os.cpu_count() or 1
    total = len(passwords)
    if jobs == 1 or total < 2:
        encoded = []
        for password in passwords:
            encoded.append(django_hashers.make_password(password))
            if progress:
                progress(len(encoded), total)
        return encoded
    # Small chunks keep every worker busy to the end and the progress moving;
    # big enough that sending them costs nothing next to the hashing.
    size = max(1, min(32, len(passwords) // (jobs * 8)))
    chunks = [passwords[i : i + size] for i in range(0, len(passwords), size)]
    results: list[list[str]] = [[] for _ in chunks]
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(chunks)),
        initializer=hashing.worker_setup,
        initargs=(list(settings.PASSWORD_HASHERS),),
    ) as pool:
        futures = {pool.submit(hashing.hash_chunk, chunk): i for i, chunk in enumerate(chunks)}
        done = 0
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            done += len(results[i])
            if progress:
                progress(done, total)
    return [e for chunk in results for e in chunk]


@dataclass(frozen=True)
class UserImport:
    """A user brought over from elsewhere, with the password in clear."""

    username: str
    password: str
    date_joined: datetime | None = None


@dataclass(frozen=True)
class UserImported:
    """What users_import did with one UserImport: `user` is None (and
    `error` says why) when the name is not valid here. In a dry run a user
    to be created is not saved (no pk)."""

    user: UserModel | None
    created: bool = False
    error: str | None = None


def _existing_by_key(keys: Sequence[str], batch_size: int = 500) -> dict[str, UserModel]:
    found: dict[str, UserModel] = {}
    for i in range(0, len(keys), batch_size):
        for user in User.objects.filter(username_key__in=keys[i : i + batch_size]):
            if user.username_key is not None:
                found[user.username_key] = user
    return found


def users_import(
    *,
    users: Sequence[UserImport],
    dry_run: bool = False,
    jobs: int | None = None,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> list[UserImported]:
    """Create users brought over from elsewhere, in bulk; one result each.

    Passwords are hashed as any other but not held to today's rules (the
    people already have them), and a name that exists (or came earlier in
    `users`, as people read names) is left untouched (created False). Passwords are
    hashed in parallel (passwords_hash: `jobs`, `progress`) before a
    transaction is opened, so the database is not held while they are; the
    users are then written in one transaction, each recorded as imported
    (ImportedUser). A dry run hashes nothing and writes nothing, and
    returns the same results.
    """
    cleaned: list[str | ServiceError] = []
    for u in users:
        try:
            cleaned.append(username_clean(u.username))
        except ServiceError as e:
            cleaned.append(e)
    keys = [names.fold(c) for c in cleaned if isinstance(c, str)]
    existing = _existing_by_key(list(dict.fromkeys(keys)))
    seen: dict[str, UserModel] = dict(existing)
    new: dict[str, tuple[UserModel, str]] = {}
    results: list[UserImported] = []
    for u, name in zip(users, cleaned, strict=True):
        if isinstance(name, ServiceError):
            results.append(UserImported(user=None, error=name.message))
            continue
        key = names.fold(name)
        if key in seen:
            results.append(UserImported(user=seen[key]))
            continue
        user = User(username=name, username_key=key)
        if u.date_joined is not None:
            user.date_joined = u.date_joined
        seen[key] = user
        new[key] = (user, u.password)
        results.append(UserImported(user=user, created=True))
    if dry_run or not new:
        return results
    encoded = passwords_hash(passwords=[p for _, p in new.values()], jobs=jobs, progress=progress)
    for (user, _), password in zip(new.values(), encoded, strict=True):
        user.password = password
    with transaction.atomic():
        # Names taken while the passwords were hashed are left as they are.
        taken = _existing_by_key(list(new))
        User.objects.bulk_create([u for k, (u, _) in new.items() if k not in taken], batch_size=batch_size)
        missing = [k for k, (u, _) in new.items() if u.pk is None and k not in taken]
        saved = _existing_by_key(missing) if missing else {}
        ImportedUser.objects.bulk_create(
            [
                ImportedUser(user_id=saved[k].pk if u.pk is None else u.pk)
                for k, (u, _) in new.items()
                if k not in taken
            ],
            batch_size=batch_size,
        )
    out = []
    for r in results:
        held, key = r.user, str(r.user.username_key) if r.user else ""
        if held is not None and key in taken and held is not taken[key]:
            out.append(UserImported(user=taken[key]))
        elif held is not None and held.pk is None:
            out.append(UserImported(user=saved[key], created=r.created))
        else:
            out.append(r)
    return out


def users_not_imported(users: Iterable[UserModel], batch_size: int = 500) -> list[UserModel]:
    """Those of `users` (saved) that the import did not create: someone
    signed up, or was seeded, with the name."""
    saved = [u for u in users if u.pk is not None]
    imported: set[int] = set()
    for i in range(0, len(saved), batch_size):
        ids = [u.pk for u in saved[i : i + batch_size]]
        imported.update(ImportedUser.objects.filter(user_id__in=ids).values_list("user_id", flat=True))
    return [u for u in saved if u.pk not in imported]
