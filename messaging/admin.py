from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, Exists, IntegerField, Model, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import smart_split
from django_stubs_ext import WithAnnotations

from accounts import names
from accounts import services as accounts
from accounts.models import LoginAttempt, User
from accounts.paging import BigTableAdmin, CappedPaginator
from core.errors import ServiceError

from . import selectors, services
from .models import Attachment, Block, Message, Room, RoomMember

# The user admin lives here, not in accounts: it shows and changes chat
# state (presence, pending messages, blocks), which accounts knows nothing of.


def _locks_in_force() -> QuerySet[LoginAttempt]:
    """Through the partial index on locked_until (accounts migration 0006)."""
    return LoginAttempt.objects.filter(locked_until__gt=timezone.now())


class UserRow(TypedDict):
    """What UserAdmin.get_queryset adds to each user."""

    online: bool
    locked: bool


class MessageRow(TypedDict):
    """What MessageAdmin.page_loaded adds to each message of a page."""

    pending_count: int


class YesNoFilter(admin.SimpleListFilter):
    """A yes/no filter on whether `condition()` holds for the row."""

    labels = ("Yes", "No")

    def condition(self) -> Q:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", self.labels[0]), ("no", self.labels[1])]

    def queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> QuerySet[User]:
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.filter(~self.condition())
        return queryset


# The user filters are `IN (the few rows)`, not a correlated EXISTS: the
# database reads the online users or the locks first (a small table, a
# partial index), rather than probing for each of 100,000 users.


class OnlineFilter(YesNoFilter):
    title = "online"
    parameter_name = "online"
    labels = ("Online", "Offline")

    def condition(self) -> Q:
        return Q(pk__in=selectors.live_presence().values("user_id"))


class LockedFilter(YesNoFilter):
    title = "locked out"
    parameter_name = "locked"
    labels = ("Locked out (any IP)", "Not locked out")

    def condition(self) -> Q:
        return Q(username__in=_locks_in_force().values("username"))


class DeletedFilter(YesNoFilter):
    title = "deleted"
    parameter_name = "deleted"
    labels = ("Deleted", "Not deleted")

    def condition(self) -> Q:
        return Q(deleted_at__isnull=False)


class BlocksInline(admin.TabularInline[Block, User]):
    """Whom this user blocks. Change blocks under Messaging › Blocks, where
    the same service as a user's own block runs."""

    model = Block
    fk_name = "blocker"
    fields = ("blocked", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "blocks"
    verbose_name_plural = "Whom this user blocks"

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Block]:
        return super().get_queryset(request).select_related("blocker", "blocked")


class BlockedByInline(BlocksInline):
    fk_name = "blocked"
    fields = ("blocker", "created_at")
    readonly_fields = fields
    verbose_name_plural = "Who blocks this user"


@admin.register(User)
class UserAdmin(BigTableAdmin[User], DjangoUserAdmin[User]):
    list_display = ["username", "is_online", "last_login", "last_seen", "is_locked", "is_active", "is_staff"]
    list_filter = [OnlineFilter, LockedFilter, "is_staff", "is_active"]
    search_fields = ["username"]
    ordering = ["username"]
    readonly_fields = ["last_login", "last_seen", "date_joined", "pending_messages"]
    inlines = [BlocksInline, BlockedByInline]
    actions = ["unlock", "disconnect", "deactivate"]
    fieldsets = (*(DjangoUserAdmin.fieldsets or ()), ("Chat", {"fields": ["last_seen", "pending_messages"]}))

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                online=Exists(selectors.live_presence().filter(user=OuterRef("pk"))),
                locked=Exists(_locks_in_force().filter(username=OuterRef("username"))),
            )
        )

    def save_model(self, request: HttpRequest, obj: User, form: forms.Form, change: bool) -> None:
        deactivated = change and "is_active" in form.changed_data and not obj.is_active
        super().save_model(request, obj, form, change)
        if deactivated:
            services.user_deactivate(user=obj)

    @admin.display(boolean=True, description="online", ordering="online")
    def is_online(self, obj: WithAnnotations[User, UserRow]) -> bool:
        return obj.online

    @admin.display(boolean=True, description="locked out", ordering="locked")
    def is_locked(self, obj: WithAnnotations[User, UserRow]) -> bool:
        return obj.locked

    @admin.display(description="pending messages")
    def pending_messages(self, obj: User) -> int:
        return selectors.pending_count(user=obj) if obj.pk else 0

    @admin.action(description="Unlock (forget failed logins)")
    def unlock(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        n = sum(accounts.login_unlock(username=u.username) for u in queryset)
        self.message_user(request, f"Cleared {n} failed login attempt(s).")

    @admin.action(description="Disconnect (end the live connection)")
    def disconnect(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        n = sum(services.presence_disconnect(user=u) for u in queryset)
        self.message_user(request, f"Disconnected {n} user(s).")

    @admin.action(description="Deactivate (no more logins; disconnects)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        users = list(queryset.filter(is_active=True))
        if any(u.pk == request.user.pk for u in users):
            self.message_user(request, "You cannot deactivate yourself.", messages.ERROR)
            return
        for user in users:
            services.user_deactivate(user=user)
        self.message_user(request, f"Deactivated {len(users)} user(s).")


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


class AttachmentsInline(admin.TabularInline[Attachment, Message]):
    """The files sent with this message; delete one from its own page
    (Messaging › Attachments), which removes the file from the storage."""

    model = Attachment
    fields = ("file_name", "file_size", "content_type", "uploader", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="name")
    def file_name(self, obj: Attachment) -> SafeString:
        url = reverse("admin:messaging_attachment_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.name)

    @admin.display(description="size")
    def file_size(self, obj: Attachment) -> str:
        return _size(obj.size)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Attachment]:
        return super().get_queryset(request).select_related("uploader")


class ContentTypeFilter(admin.SimpleListFilter):
    """The types uploads may have (settings), not Django's choices of the
    distinct values in the table, which reads all of it on every page."""

    title = "content type"
    parameter_name = "content_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [(t, t) for t in sorted(set(settings.CHAT_ATTACHMENT_TYPES.values()))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Attachment]) -> QuerySet[Attachment]:
        return queryset.filter(content_type=self.value()) if self.value() else queryset


@admin.register(Attachment)
class AttachmentAdmin(BigTableAdmin[Attachment]):
    """Files users uploaded. Read-only but for delete, which removes the
    file (and its thumbnail) from the storage too."""

    list_display = ["id", "name", "file_size", "content_type", "uploader", "message", "created_at"]
    list_filter = [ContentTypeFilter, "created_at"]
    ordered_while = {"created_at__": "created_at"}
    search_fields = ["name", "uploader__username"]
    # The message shows as "#id sender → recipient".
    list_select_related = ["uploader", "message__sender", "message__recipient"]
    fields = ("name", "file_size", "content_type", "uploader", "message", "width", "height", "created_at")
    readonly_fields = fields

    @admin.display(description="size", ordering="size")
    def file_size(self, obj: Attachment) -> str:
        return _size(obj.size)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Attachment | None = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Attachment) -> None:
        services.attachment_delete(attachment_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Attachment]) -> None:
        for pk in queryset.values_list("pk", flat=True):
            services.attachment_delete(attachment_id=pk)


@admin.register(Message)
class MessageAdmin(BigTableAdmin[Message]):
    """Read-only: nobody edits what users said.

    Ten million messages: every filter and the search go through an index
    (the kinds and deleted ones: migrations 0008 and 0009; the words: the full-text
    index of the `search` op; from:/to: the sender and recipient indexes),
    the list sorts only by indexed columns, and the count stops at 10,000
    (BigTableAdmin). No date hierarchy: its links list the distinct days of
    every message; the "sent at" filter's ranges use the index instead.
    """

    list_display = ["id", "sender", "to", "sent_at", "short_body", "pending"]
    list_filter = ["kind", DeletedFilter, "sent_at"]
    ordered_while = {"sent_at__": "sent_at"}
    ordering = ["-id"]  # newest first, as everywhere else
    sortable_by = ["sent_at"]
    search_fields = ["body"]  # what get_search_results does instead of icontains
    search_help_text = (
        "Whole words of the message (the last one also as the start of a word), "
        "and from:NAME or to:NAME for its sender or recipient."
    )
    list_select_related = ["sender", "recipient", "room"]
    fields = ("kind", "sender", "recipient", "room", "sent_at", "deleted_at", "body", "pending")
    readonly_fields = fields
    inlines = [AttachmentsInline]

    def page_loaded(self, rows: list[Message]) -> list[Message]:
        waiting = selectors.pending_recipients(message_ids=[m.pk for m in rows])
        for message in rows:
            cast("WithAnnotations[Message, MessageRow]", message).pending_count = waiting.get(message.pk, 0)
        return rows

    @admin.display(description="to")
    def to(self, obj: Message) -> User | str:
        if obj.room is not None:
            return f"#{obj.room.name} (room {obj.room_id})"
        return obj.recipient or "everyone"

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str | SafeString:
        if obj.deleted_at is not None:
            # Its body is erased: say so, rather than Django's "-" for empty.
            return format_html('<em class="deleted">deleted by {}</em>', obj.sender)
        return obj.body if len(obj.body) <= 60 else obj.body[:59] + "…"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Message], search_term: str
    ) -> tuple[QuerySet[Message], bool]:
        """Words through the full-text index, from:/to: through the user
        indexes: Django's icontains would read every body of the table.
        A search with nothing left to look for (a lone `"`) finds nothing."""
        if not search_term.strip():
            return queryset, False
        words: list[str] = []
        people: list[Q] = []
        for term in smart_split(search_term):
            term = term.strip("\"'")
            field, colon, name = term.partition(":")
            if colon and name and field.lower() in ("from", "to"):
                column = "sender" if field.lower() == "from" else "recipient"
                people.append(Q(**{f"{column}__username_key": names.fold(name)}))
            elif term:
                words.append(term)
        if not words and not people:
            return queryset.none(), False
        for who in people:
            queryset = queryset.filter(who)
        if words:
            queryset = selectors.messages_with_words(queryset, " ".join(words), newest=CappedPaginator.cap + 1)
        return queryset, False

    @admin.display(description="pending for")
    def pending(self, obj: Message) -> int:
        counted: int | None = getattr(obj, "pending_count", None)
        if counted is None:  # on the message's own page
            counted = selectors.pending_recipients(message_ids=[obj.pk]).get(obj.pk, 0)
        return counted

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False


class BlockForm(forms.ModelForm[Block]):
    class Meta:
        model = Block
        fields = ["blocker", "blocked"]

    def clean_blocked(self) -> User:
        blocked: User = self.cleaned_data["blocked"]
        if not blocked.is_active:
            raise forms.ValidationError("This user is deactivated.")
        return blocked


@admin.register(Block)
class BlockAdmin(BigTableAdmin[Block]):
    """Adding and removing here runs the same services as a user's own
    block, so delivery changes the same way (pending messages are dropped)."""

    form = BlockForm
    list_display = ["blocker", "blocked", "created_at"]
    search_fields = ["blocker__username", "blocked__username"]
    autocomplete_fields = ["blocker", "blocked"]
    list_select_related = ["blocker", "blocked"]
    actions = ["remove_selected"]

    def has_change_permission(self, request: HttpRequest, obj: Block | None = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request: HttpRequest, obj: Block, form: forms.Form, change: bool) -> None:
        block = services.block_create(blocker=obj.blocker, username=obj.blocked.username)
        obj.pk, obj.created_at = block.pk, block.created_at

    def delete_model(self, request: HttpRequest, obj: Block) -> None:
        try:
            services.block_delete(blocker=obj.blocker, username=obj.blocked.username)
        except ServiceError as e:
            self.message_user(request, e.message, messages.WARNING)

    @admin.action(description="Remove selected blocks", permissions=["delete"])
    def remove_selected(self, request: HttpRequest, queryset: QuerySet[Block]) -> None:
        blocks = list(queryset.select_related("blocker", "blocked"))
        for block in blocks:
            self.delete_model(request, block)
        self.message_user(request, f"Removed {len(blocks)} block(s).")


class RoomRow(TypedDict):
    member_total: int
    admin_total: int
    admin_rows: list[RoomMember]  # prefetched: the admins, by name
    message_total: int  # page_loaded's


def _count(rows: QuerySet[RoomMember]) -> Coalesce:
    """A per-room count as a subquery: two Count()s over joins would multiply."""
    counted = rows.filter(room=OuterRef("pk")).order_by().values("room").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


class RoomSizeFilter(admin.SimpleListFilter):
    title = "members"
    parameter_name = "size"
    SIZES = {"1": (1, 1), "2-10": (2, 10), "11-100": (11, 100), "101+": (101, None)}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [(key, key) for key in self.SIZES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Room]) -> QuerySet[Room]:
        """On RoomAdmin's queryset, which counts the members (member_total)."""
        bounds = self.SIZES.get(self.value() or "")
        if bounds is None:
            return queryset
        low, high = bounds
        fits = Q(member_total__gte=low) if high is None else Q(member_total__gte=low, member_total__lte=high)
        return queryset.filter(fits)


class RoomMembersInline(admin.TabularInline[RoomMember, Room]):
    """A room's members. Ticking "delete" removes a member through the
    service a room admin's /kick runs (they are told, their pending room
    messages dropped, an heir named if they were the last admin)."""

    model = RoomMember
    fields = ("user", "admin", "joined_at")
    readonly_fields = fields
    extra = 0
    ordering = ["user__username"]
    verbose_name_plural = "Members"

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[RoomMember]:
        return super().get_queryset(request).select_related("user")


@admin.register(Room)
class RoomAdmin(BigTableAdmin[Room]):
    """Rooms, for operators: who is in them, how big they are. Removing a
    member or deleting a room runs the same services as the socket does;
    deleting never loads a room's history (the service deletes in bulk)."""

    list_display = ["name", "id", "members", "admins", "message_count", "created_at"]
    list_filter = [RoomSizeFilter, "created_at"]
    search_fields = ["name"]  # and more: get_search_results
    search_help_text = "Part of the room's name, its id, or the name of one of its members."
    # Newest first by key (rooms are made in created_at order): a sort on
    # the unindexed created_at counted every room's members and messages
    # before keeping a page of them.
    ordering = ["-id"]
    fields = ("name", "created_at", "members", "admins", "message_count")
    readonly_fields = fields
    inlines = [RoomMembersInline]
    actions = ["delete_rooms"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Room]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_total=_count(RoomMember.objects.all()),
                admin_total=_count(RoomMember.objects.filter(admin=True)),
            )
            .prefetch_related(
                Prefetch(
                    "members",
                    queryset=RoomMember.objects.filter(admin=True).select_related("user").order_by("user__username"),
                    to_attr="admin_rows",
                )
            )
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Room], search_term: str
    ) -> tuple[QuerySet[Room], bool]:
        """A member by their whole name, through the membership index: a
        search across the members' join repeated each room once per member
        (DISTINCT over every membership of every room found)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        member = RoomMember.objects.filter(user__username_key=names.fold(term)).values("room_id")
        found = Q(name__icontains=term) | Q(pk__in=member)
        if term.isdigit():
            found |= Q(pk=int(term))
        return queryset.filter(found), False

    @admin.display(description="members", ordering="member_total")
    def members(self, obj: WithAnnotations[Room, RoomRow]) -> int:
        return obj.member_total

    @admin.display(description="admins", ordering="admin_total")
    def admins(self, obj: WithAnnotations[Room, RoomRow]) -> str:
        shown = ", ".join(m.user.username for m in obj.admin_rows[:3])
        return shown + (f" and {obj.admin_total - 3} more" if obj.admin_total > 3 else "")

    def page_loaded(self, rows: list[Room]) -> list[Room]:
        counts = selectors.room_message_counts(room_ids=[r.pk for r in rows])
        for room in rows:
            cast("WithAnnotations[Room, RoomRow]", room).message_total = counts.get(room.pk, 0)
        return rows

    @admin.display(description="messages")  # no sort: it would count the messages of every room
    def message_count(self, obj: Room) -> int:  # not `messages`: the module's
        counted: int | None = getattr(obj, "message_total", None)
        if counted is None:  # on the room's own page
            counted = selectors.room_message_counts(room_ids=[obj.pk]).get(obj.pk, 0)
        return counted

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # Django's would fetch every message first
        return actions

    def get_deleted_objects(
        self, objs: Sequence[Room] | QuerySet[Room], request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        """The confirmation page: counts, not every message listed (Django's
        own walks each related row in Python)."""
        rooms = list(objs)
        total = Message.objects.filter(room__in=rooms).count()
        return [str(r) for r in rooms], {"rooms": len(rooms), "messages": total}, set(), []

    def delete_model(self, request: HttpRequest, obj: Room) -> None:
        try:
            services.room_delete(room_id=obj.pk)
        except ServiceError as e:
            self.message_user(request, e.message, messages.WARNING)

    @admin.action(description="Delete selected rooms and their messages", permissions=["delete"])
    def delete_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        rooms = list(queryset.values_list("pk", flat=True))
        for room_id in rooms:
            services.room_delete(room_id=room_id)
        self.message_user(request, f"Deleted {len(rooms)} room(s).")

    def save_formset(self, request: HttpRequest, form: forms.Form, formset: Any, change: bool) -> None:
        """Only removals come from the members inline: through the service."""
        formset.save(commit=False)
        for member in formset.deleted_objects:
            try:
                services.room_member_expel(room_id=member.room_id, username=member.user.username)
            except ServiceError as e:
                self.message_user(request, e.message, messages.WARNING)
