"""Who is online: the one live connection of each user, in the database."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Q, QuerySet
from django.utils import timezone

from accounts import selectors as account_selectors
from accounts.models import User as UserModel
from accounts.services import account_deactivate
from core.errors import ServiceError

from .. import events
from ..models import Presence
from ..selectors import online_cutoff, pending_count, pending_rows
from .mailbox import broadcasts_fence, mailbox_catch_up, mailbox_mark, mailboxes_catch_up

User = get_user_model()

# Who this server process is, for the presence rows of its connections.
HOST = socket.gethostname()[:255]
PID = os.getpid()


def _presence_end(*, user_id: int, username: str, channel_name: str, last_seen: datetime) -> bool:
    """Delete the row if `channel_name` still holds it, record when the user
    was last seen, and tell everyone they went offline. The one teardown:
    from here on broadcasts wait for the user's next login (mailbox)."""
    broadcasts_fence(exclusive=False)
    deleted, _ = Presence.objects.filter(user_id=user_id, channel_name=channel_name).delete()
    if deleted:
        mailbox_mark(user_ids=[user_id])
        User.objects.filter(pk=user_id).update(last_seen=last_seen)
        events.push_presence(username, online=False)
    return bool(deleted)


_CHUNK = 500  # ids in one IN list (SQLite's older builds allow 999 parameters)


def _presence_end_rows(rows: QuerySet[Presence], *, last_seen: datetime) -> list[str]:
    """_presence_end for many rows at once, in the caller's transaction: a
    statement per 500 users (their last_seen, their rows), one cursor write
    per 500, and one presence event per thousand names, instead of a
    transaction and an event per connection. Returns the usernames."""
    broadcasts_fence(exclusive=False)
    # Locked (PostgreSQL): a takeover by another process waits until this
    # commits, so the rows read are the rows deleted.
    ended = list(rows.order_by("user_id").select_for_update(of=("self",)).values_list("user_id", "user__username"))
    ids = [user_id for user_id, _ in ended]
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        User.objects.filter(pk__in=chunk).update(last_seen=last_seen)
        Presence.objects.filter(pk__in=chunk).delete()
    if ids:
        mailbox_mark(user_ids=ids)
    names = sorted(name for _, name in ended)
    events.push_presence_many(names, online=False)
    return names


def presence_claim(*, user: UserModel, channel_name: str, takeover: bool = False, session_key: str = "") -> str | None:
    """Make `channel_name` the user's one live connection; return the channel
    it replaced, if any.

    Raises already_online when a live connection holds it and `takeover` is
    false; with `takeover`, the old connection is told and closed, and no
    presence change is announced (the user stays online). A row left by a
    dead connection (stale heartbeat) is simply replaced.
    """
    return _claim(user, channel_name, takeover, session_key, count=False)[0]


def presence_login(
    *, user: UserModel, channel_name: str, takeover: bool = False, session_key: str = ""
) -> tuple[str | None, int]:
    """What a login does at the database, in one transaction: presence_claim,
    and how many messages wait for the user (selectors.pending_count) once
    the claim has caught their mailbox up. If the count fails, the claim is
    undone with it. Returns the channel replaced and that count."""
    request = ClaimRequest(user=user, channel_name=channel_name, takeover=takeover, session_key=session_key)
    (result,) = presence_logins(requests=[request])
    if isinstance(result, ServiceError):
        raise result
    return result


@dataclass(frozen=True)
class ClaimRequest:
    """A login's claim, for presence_logins (the writer batches them)."""

    user: UserModel
    channel_name: str
    takeover: bool = False
    session_key: str = ""
    # Asked in the database thread, when the claim's turn comes: a client
    # that gave up waiting (its request timed out in a restart's storm) has
    # closed the socket and logs in again elsewhere; a claim now would be
    # work for nobody, and its release more.
    gone: Callable[[], bool] | None = None


def presence_logins(*, requests: Sequence[ClaimRequest]) -> list[tuple[str | None, int] | ServiceError]:
    """presence_login for many logins in one transaction: a restart brings
    thousands back at once, and a statement for all of them costs about
    what one costs. The users without a presence row (all of them after a
    restart) are claimed together: one insert, their mailboxes caught up,
    their last login, what waits for each, one presence event; any other
    (a takeover, a stale row, a user twice in the batch, a race with
    another process) goes presence_login's way, one by one. Each result is
    the channel replaced and the count waiting, or the ServiceError that
    refused it; an exception undoes them all."""
    results: list[tuple[str | None, int] | ServiceError] = []
    claims: list[int] = []
    for i, request in enumerate(requests):
        gone = request.gone is not None and request.gone()
        results.append(ServiceError("unavailable", "The connection closed before the login.") if gone else (None, 0))
        if not gone:
            claims.append(i)
    if not claims:
        return results
    with transaction.atomic():
        broadcasts_fence(exclusive=False)
        held = _held([requests[i].user.pk for i in claims])
        # Rows are locked in the order of their users, here and in every
        # statement that locks many (_presence_end_rows): two batches, or a
        # batch and a process's stop, cannot wait for each other in a cycle.
        claims.sort(key=lambda i: requests[i].user.pk)
        together: dict[int, int] = {}  # user id -> index
        one_by_one = []
        for i in claims:
            user_id = requests[i].user.pk
            if user_id in held or user_id in together:
                one_by_one.append(i)
            else:
                together[user_id] = i
        if together:
            now = timezone.now()
            rows = [Presence(user=requests[i].user, **_row(requests[i], now)) for i in together.values()]
            try:
                with transaction.atomic():
                    Presence.objects.bulk_create(rows)
            except IntegrityError:  # another process claimed one of them meanwhile
                one_by_one, together = claims, {}
        if together:
            users = [requests[i].user for i in together.values()]
            mailboxes_catch_up(users=users)
            User.objects.filter(pk__in=list(together)).update(last_login=now)
            waiting = pending_rows(user_ids=list(together))
            for user_id, i in together.items():
                results[i] = (None, waiting.get(user_id, 0))
            events.push_presence_many([user.username for user in users], online=True)
        for i in one_by_one:
            request = requests[i]
            try:
                results[i] = _claim(
                    request.user, request.channel_name, request.takeover, request.session_key, count=True
                )
            except ServiceError as e:
                results[i] = e
    return results


def _held(user_ids: list[int]) -> set[int]:
    """Which of these users have a presence row (any process's)."""
    return set(Presence.objects.filter(user_id__in=user_ids).values_list("user_id", flat=True))


def _row(request: ClaimRequest, now: datetime) -> dict[str, Any]:
    """The fields of a login's presence row, but its user."""
    return {
        "channel_name": request.channel_name,
        "host": HOST,
        "pid": PID,
        "connected_at": now,
        "heartbeat_at": now,
        "session_key": request.session_key,
    }


def _claim(
    user: UserModel, channel_name: str, takeover: bool, session_key: str, *, count: bool
) -> tuple[str | None, int]:
    """presence_claim's transaction; with `count`, what waits is counted in
    it. The way of a claim that finds a row (presence_logins claims the
    others together)."""
    now = timezone.now()
    fields = _row(ClaimRequest(user=user, channel_name=channel_name, session_key=session_key), now)
    for _ in range(3):
        with transaction.atomic():
            broadcasts_fence(exclusive=False)
            try:
                with transaction.atomic():
                    Presence.objects.create(user=user, **fields)
                replaced = None
                came_online = True
                mailbox_catch_up(user=user)
            except IntegrityError:
                row = Presence.objects.select_for_update().filter(user=user).first()
                if row is None:
                    continue  # released meanwhile: try the insert again
                alive = row.heartbeat_at >= online_cutoff(now)
                if alive and not takeover:
                    raise ServiceError(
                        "already_online", "You are already connected elsewhere; log in with takeover to move here."
                    ) from None
                replaced = row.channel_name
                came_online = not alive
                for name, value in fields.items():
                    setattr(row, name, value)
                row.save()
                # Present all along (a broadcast writes a row for a stale
                # row too): nothing to catch up.
            User.objects.filter(pk=user.pk).update(last_login=now)
            pending = pending_count(user=user, online=True) if count else 0
            if replaced:
                events.push_session_replaced(replaced)
            if came_online:
                events.push_presence(user.username, online=True)
            return replaced, pending
    raise ServiceError("already_online", "Could not claim the connection; try again.")


def presence_release(*, user: UserModel, channel_name: str) -> bool:
    """Forget this connection; the user goes offline if it was theirs."""
    with transaction.atomic():
        return _presence_end(
            user_id=user.pk, username=user.username, channel_name=channel_name, last_seen=timezone.now()
        )


def presence_disconnect(
    *, user: UserModel, reason: str = "An administrator ended your session.", action: events.EndAction = "stop"
) -> bool:
    """End the user's live connection, wherever it is; `action` tells the
    client what to do next (reconnect, log in again, or stop)."""
    with transaction.atomic():
        broadcasts_fence(exclusive=False)
        row = Presence.objects.select_for_update().filter(user=user).first()
        if row is None:
            return False
        _presence_end(user_id=user.pk, username=user.username, channel_name=row.channel_name, last_seen=timezone.now())
        events.push_session_ended(row.channel_name, reason=reason, action=action)
    return True


def presence_release_process() -> list[str]:
    """At a graceful stop: every connection of this process goes offline in
    one transaction (before, each socket's close released its own row, a
    transaction and a presence event each: 34 s for 5,000). The sockets are
    told to reconnect after; returns the usernames."""
    with transaction.atomic():
        return _presence_end_rows(Presence.objects.filter(host=HOST, pid=PID), last_seen=timezone.now())


def user_deactivate(*, user: UserModel) -> None:
    """Deactivate an account: it can no longer log in, and its live
    connection ends."""
    account_deactivate(user=user)
    presence_disconnect(user=user, reason="Your account was deactivated.")


def presence_expire() -> list[str]:
    """Remove presence whose heartbeat stopped (a dead process); notify offline."""
    cutoff = online_cutoff()
    expired = []
    for row in Presence.objects.filter(heartbeat_at__lt=cutoff).select_related("user"):
        with transaction.atomic():
            if Presence.objects.filter(pk=row.pk, heartbeat_at__lt=cutoff).exists() and _presence_end(
                user_id=row.pk, username=row.user.username, channel_name=row.channel_name, last_seen=row.heartbeat_at
            ):
                expired.append(row.user.username)
    return expired


def presence_clear_dead_processes(keep: Iterable[str] = ()) -> list[str]:
    """At server start: drop what a crashed process on this host left behind.

    A row of this host whose process no longer runs (or whose pid is ours
    but whose channel is not in `keep`: an earlier process had our pid) is
    dead for sure; rows of other hosts are left to the heartbeat expiry.
    """
    keep = set(keep)
    here = Presence.objects.filter(host=HOST)
    dead = [pid for pid in set(here.values_list("pid", flat=True)) if pid != PID and not _pid_alive(pid)]
    mine_left = Q(pid=PID) & ~Q(channel_name__in=keep) if keep else Q(pid=PID)
    if not dead and not here.filter(mine_left).exists():
        return []
    # In one go: after a restart of 10,000 connections, one transaction each
    # kept the new process from serving their logins.
    with transaction.atomic():
        return _presence_end_rows(here.filter(Q(pid__in=dead) | mine_left), last_seen=timezone.now())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def presence_tick(*, channel_names: Iterable[str], expire: bool = True) -> list[str]:
    """One server process's heartbeat: refresh its connections' rows (those
    a third of the presence timeout old), end
    those that lost theirs (taken over or expired), and (with `expire`)
    expire what dead processes left. Returns the channel names that were
    ended."""
    now = timezone.now()
    names = list(channel_names)
    # This process's rows, in one query, and their heartbeat in one more:
    # at 10,000 connections, lists of their names (20 IN queries of 500 a
    # tick, twice) cost most of an idle process's CPU to build.
    mine = Presence.objects.filter(host=HOST, pid=PID)
    rows = set(mine.values_list("channel_name", flat=True))
    held = set(names)
    # A row of ours that no connection here holds (its release failed) is
    # not refreshed: it expires, as it did when rows were refreshed by name.
    leaked = list(rows - held)
    # A row is written again once a third of the timeout old, not at every
    # tick: at 10,000 connections each tick rewrote 10,000 rows (on
    # PostgreSQL as many dead row versions, and their index entries) to
    # keep them as far inside the timeout as this does.
    due = Q(heartbeat_at__lt=now - timedelta(seconds=settings.CHAT_PRESENCE_TIMEOUT_SECONDS / 3))
    if len(leaked) <= 500:
        mine.exclude(channel_name__in=leaked).filter(due).update(heartbeat_at=now)
    else:
        ours = list(rows & held)
        for i in range(0, len(ours), 500):
            Presence.objects.filter(due, channel_name__in=ours[i : i + 500]).update(heartbeat_at=now)
    lost = [name for name in names if name not in rows]
    for name in lost:
        events.push_session_ended(name, reason="Your connection expired; reconnect.", action="reconnect")
    if expire:
        presence_expire()
    return lost


def presence_sessions_check(
    *, channel_names: Iterable[str], verified: MutableMapping[str, int] | None = None
) -> list[str]:
    """End this process's connections whose login no longer holds
    (accounts.selectors.sessions_check, with any session engine): the
    session they logged in with was logged out or expired, the user's
    password changed, or the account was deactivated. The pump's safety
    net, every CHAT_SESSIONS_CHECK_SECONDS: what Django tells of (a logout,
    a saved user) ends the socket at once (presence_session_logged_out,
    presence_user_recheck); this finds the rest (an expiry, an UPDATE from
    the shell, another session engine's store).

    `verified` (the caller's, kept from tick to tick) remembers, per
    channel name, a fingerprint of what each valid verdict rested on: the
    session's stored data, its user's password hash and active flag. A
    connection whose fingerprint did not change is valid still and is not
    checked again: at 10,000 connections, decoding every session and
    hashing every user's password each tick was most of an idle
    process's CPU. Names not in `channel_names` are forgotten."""
    names = set(channel_names)
    if verified is not None:
        for gone in verified.keys() - names:
            del verified[gone]
    # This process's rows and their sessions' data in one query, by host and
    # pid as presence_tick reads them: building twenty IN lists of 500
    # names a tick was most of what the check cost at 10,000 connections.
    mine = Presence.objects.filter(host=HOST, pid=PID).exclude(session_key="")
    fields = list(_CHECKED)
    stamp = account_selectors.session_stamp(OuterRef("session_key")) if verified is not None else None
    if stamp is not None:
        mine, fields = mine.annotate(session_stamp=stamp), [*fields, "session_stamp"]
    rows = [r for r in mine.values(*fields) if r["channel_name"] in names]
    fingerprints = {r["channel_name"]: _fingerprint(r) for r in rows if r.get("session_stamp") is not None}
    if verified is not None:
        rows = [
            r
            for r in rows
            if (f := fingerprints.get(r["channel_name"])) is None or verified.get(r["channel_name"]) != f
        ]
    ended = []
    for i in range(0, len(rows), 500):
        for row, why in _sessions_verdicts(rows[i : i + 500]):
            if why is None:
                if verified is not None and row["channel_name"] in fingerprints:
                    verified[row["channel_name"]] = fingerprints[row["channel_name"]]
                continue
            if verified is not None:
                verified.pop(row["channel_name"], None)
            if _session_end(row, *why):
                ended.append(row["channel_name"])
    return ended


def presence_user_recheck(*, user_id: int) -> list[str]:
    """The sessions check for one user's connection, on whichever process
    holds it: run when their account was saved (a password set, the
    account deactivated), so the socket ends now, not at the safety net.
    Returns the channel names ended."""
    rows = list(Presence.objects.filter(user_id=user_id).exclude(session_key="").values(*_CHECKED))
    return [row["channel_name"] for row, why in _sessions_verdicts(rows) if why is not None and _session_end(row, *why)]


def presence_session_logged_out(*, session_key: str) -> list[str]:
    """End the connections logged in with a Django session that is logging
    out (a page's logout, on any process), at once. Returns the channel
    names ended."""
    if not session_key:
        return []
    rows = Presence.objects.filter(session_key=session_key).values(*_CHECKED)
    return [row["channel_name"] for row in rows if _session_end(row, _LOGGED_OUT, "login")]


# What a verdict on a connection's login reads of its presence row.
_CHECKED = ("user_id", "user__username", "user__is_active", "user__password", "channel_name", "session_key")
_LOGGED_OUT = "You logged out, or your session expired; log in again."


Ended = tuple[str, events.EndAction]  # why a login no longer holds, and what the client should do


def _sessions_verdicts(rows: Sequence[Mapping[str, Any]]) -> Iterable[tuple[Mapping[str, Any], Ended | None]]:
    """Each row with None if its login holds, else why not; one
    sessions_check for them all."""
    checks = account_selectors.sessions_check({r["session_key"] for r in rows}) if rows else {}
    for row in rows:
        check = checks[row["session_key"]]
        if not row["user__is_active"]:
            yield row, ("Your account was deactivated.", "stop")
        elif check.user is None or check.user.pk != row["user_id"]:
            yield row, (_LOGGED_OUT, "login")
        elif check.ended is account_selectors.SessionEnded.PASSWORD_CHANGED:
            yield row, ("Your password was changed; log in again.", "login")
        else:
            yield row, None


def _session_end(row: Mapping[str, Any], reason: str, action: events.EndAction) -> bool:
    """End one connection whose login no longer holds, if it still holds
    its row; the socket is told why and what to do."""
    with transaction.atomic():
        if not _presence_end(
            user_id=row["user_id"],
            username=row["user__username"],
            channel_name=row["channel_name"],
            last_seen=timezone.now(),
        ):
            return False
        events.push_session_ended(row["channel_name"], reason=reason, action=action)
    return True


def _fingerprint(row: Mapping[str, Any]) -> int:
    """A hash of what the verdict on a login rests on: its session's stored
    data, its user, their password hash and active flag."""
    return hash(
        (row["session_key"], row["session_stamp"], row["user_id"], row["user__password"], row["user__is_active"])
    )
