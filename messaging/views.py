import json
from collections.abc import Iterator
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.csrf import csrf_protect, ensure_csrf_cookie
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts.forms import PasswordConfirmForm
from accounts.models import User as UserModel

from . import selectors, services
from .models import Block
from .wire import message_object, timestamp

# Rows fetched per round trip while an export streams.
CHUNK = 500


@login_required
@ensure_csrf_cookie
def home(request: HttpRequest) -> HttpResponse:
    """The chat page; everything on it runs over the WebSocket."""
    return render(request, "chat.html")


def _account(user: UserModel) -> dict[str, Any]:
    return {
        "username": user.username,
        "email": user.email,
        "date_joined": timestamp(user.date_joined),
        "last_login": timestamp(user.last_login),
    }


def _block(block: Block) -> dict[str, Any]:
    return {"blocked": block.blocked.username, "since": timestamp(block.created_at)}


def _export_rows(user: UserModel) -> Iterator[tuple[str, Iterator[Any]]]:
    """(section, rows) for each list in the export, rows read CHUNK at a time."""
    for section, rows in selectors.user_data(user=user).items():
        if section == "blocks":
            yield section, (_block(row) for row in rows.iterator(chunk_size=CHUNK))
        else:
            yield section, _with_attachments(message_object(row) for row in rows.iterator(chunk_size=CHUNK))


def _with_attachments(objects: Iterator[Any]) -> Iterator[Any]:
    """Message objects with their attachments, filled CHUNK at a time (one
    query per chunk)."""
    chunk: list[Any] = []
    for obj in objects:
        chunk.append(obj)
        if len(chunk) == CHUNK:
            yield from selectors.attachments_fill(chunk)
            chunk = []
    yield from selectors.attachments_fill(chunk)


def _json_export(user: UserModel) -> Iterator[str]:
    head = {"exported_at": timestamp(timezone.now()), "account": _account(user)}
    yield json.dumps(head, ensure_ascii=False)[:-1]  # the object stays open for the lists
    for section, rows in _export_rows(user):
        yield f', "{section}": ['
        for i, row in enumerate(rows):
            yield ("," if i else "") + "\n  " + json.dumps(row, ensure_ascii=False)
        yield "\n]"
    yield "}\n"


def _html_export(user: UserModel) -> Iterator[str]:
    titles = {"messages_sent": "Messages you sent", "messages_received": "Messages you received", "blocks": "Blocks"}
    yield format_html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Your chat data</title></head><body>'
        "<h1>Your chat data</h1><p>Account <b>{}</b>, email {}, joined {}.</p>",
        user.username,
        user.email or "none",
        timestamp(user.date_joined),
    )
    for section, rows in _export_rows(user):
        yield format_html("<h2>{}</h2><ul>", titles[section])
        for row in rows:
            if section == "blocks":
                yield format_html("<li>{} (since {})</li>", row["blocked"], row["since"])
            else:
                to = row["to"] or (f"room #{row['room']}" if row["room"] else "everyone")
                yield format_html("<li><time>{}</time> {} → {}: {}</li>", row["sent_at"], row["from"], to, row["body"])
        yield "</ul>"
    yield "</body></html>\n"


@login_required
def account_data(request: HttpRequest, fmt: str = "json") -> HttpResponse | StreamingHttpResponse:
    """Download my data: streamed, a chunk of rows at a time, so a long
    history is never held in memory whole."""
    me = cast(UserModel, request.user)  # login_required
    if fmt == "html":
        return StreamingHttpResponse(_html_export(me), content_type="text/html; charset=utf-8")
    response = StreamingHttpResponse(_json_export(me), content_type="application/json")
    stamp = timezone.now().strftime("%Y%m%d")
    response["Content-Disposition"] = f'attachment; filename="chat-{me.pk}-{stamp}.json"'
    return response


@login_required
@require_POST
@sensitive_post_parameters("password")
@csrf_protect
def account_delete(request: HttpRequest) -> HttpResponse:
    """Delete my account, after the password (services.account_delete says
    what goes and what stays)."""
    form = PasswordConfirmForm(request.POST, request=request, auto_id="delete_%s")
    if not form.is_valid():
        why = " ".join(str(e) for e in form.errors.get("password", []))
        messages.error(request, f"Your account was not deleted: {why}")
        return redirect("account")
    services.account_delete(user=cast(UserModel, request.user))  # login_required
    logout(request)
    messages.success(request, "Your account is deleted.")
    return redirect("accounts:login")
