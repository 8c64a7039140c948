from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.db.models import Count, Exists, IntegerField, Model, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import smart_split
from django_stubs_ext import WithAnnotations, monkeypatch

from accounts import services as accounts
from accounts.models import LoginAttempt, User
from core.errors import ServiceError

from . import selectors, services
from .models import Attachment, Block, Message, Room, RoomMember

# Generic in django-stubs (over the user model), like the classes that
# settings.py makes subscriptable at run time; this one is not in that list.
monkeypatch(extra_classes=[AdminPasswordChangeForm])

# The user admin lives here, not in accounts: it shows and changes chat
# state (presence, pending messages, blocks), which accounts knows nothing of.


def _locked_attempts() -> QuerySet[LoginAttempt]:
    return LoginAttempt.objects.filter(username=OuterRef("username"), locked_until__gt=timezone.now())


class UserRow(TypedDict):
    """What UserAdmin.get_queryset adds to each user."""

    online: bool
    locked: bool


class MessageRow(TypedDict):
    """What MessageAdmin.get_queryset adds to each message."""

    pending_count: int


class ExistsFilter(admin.SimpleListFilter):
    """A yes/no filter on whether `condition()` holds for the user."""

    labels = ("Yes", "No")

    def condition(self) -> Exists | Q:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", self.labels[0]), ("no", self.labels[1])]

    def queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> QuerySet[User]:
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.filter(~self.condition())
        return queryset


class OnlineFilter(ExistsFilter):
    title = "online"
    parameter_name = "online"
    labels = ("Online", "Offline")

    def condition(self) -> Exists:
        return Exists(selectors.live_presence().filter(user=OuterRef("pk")))


class LockedFilter(ExistsFilter):
    title = "locked out"
    parameter_name = "locked"
    labels = ("Locked out (any IP)", "Not locked out")

    def condition(self) -> Exists:
        return Exists(_locked_attempts())


class DeletedFilter(ExistsFilter):
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


class BlockedByInline(BlocksInline):
    fk_name = "blocked"
    fields = ("blocker", "created_at")
    readonly_fields = fields
    verbose_name_plural = "Who blocks this user"


class PasswordChangeForm(AdminPasswordChangeForm[User]):
    """A new password ends the user's live connection at once (the pump's
    session check would within a heartbeat anyway)."""

    def save(self, commit: bool = True) -> User:
        user = super().save(commit)
        if commit:
            services.presence_disconnect(user=user, reason="Your password was changed; log in again.", action="login")
        return user


@admin.register(User)
class UserAdmin(DjangoUserAdmin[User]):
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
                locked=Exists(_locked_attempts()),
            )
        )

    change_password_form = PasswordChangeForm

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


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin[Attachment]):
    """Files users uploaded. Read-only but for delete, which removes the
    file (and its thumbnail) from the storage too."""

    list_display = ["id", "name", "file_size", "content_type", "uploader", "message", "created_at"]
    list_filter = ["content_type", "created_at"]
    search_fields = ["name", "uploader__username"]
    list_select_related = ["uploader", "message"]
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
class MessageAdmin(admin.ModelAdmin[Message]):
    """Read-only: nobody edits what users said."""

    list_display = ["id", "sender", "to", "sent_at", "short_body", "pending"]
    list_filter = ["kind", DeletedFilter, "sent_at"]
    ordering = ["-id"]  # newest first, as everywhere else
    search_fields = ["body", "sender__username", "recipient__username", "room__name"]
    date_hierarchy = "sent_at"
    list_select_related = ["sender", "recipient", "room"]
    fields = ("kind", "sender", "recipient", "room", "sent_at", "deleted_at", "body", "pending")
    readonly_fields = fields
    inlines = [AttachmentsInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return (
            super()
            .get_queryset(request)
            .annotate(pending_count=Count("deliveries", filter=Q(deliveries__acked_at__isnull=True)))
        )

    @admin.display(description="to", ordering="recipient__username")
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
        # Django unquotes each term, so a lone `"` became "" and matched
        # every message: with nothing left to look for, nothing is found.
        terms = [t for t in smart_split(search_term) if t.strip("\"'")]
        if search_term.strip() and not terms:
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="pending for", ordering="pending_count")
    def pending(self, obj: WithAnnotations[Message, MessageRow]) -> int:
        return obj.pending_count

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
class BlockAdmin(admin.ModelAdmin[Block]):
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
    message_total: int
    admin_rows: list[RoomMember]  # prefetched: the admins, by name


def _count(rows: QuerySet[RoomMember] | QuerySet[Message]) -> Coalesce:
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
class RoomAdmin(admin.ModelAdmin[Room]):
    """Rooms, for operators: who is in them, how big they are. Removing a
    member or deleting a room runs the same services as the socket does;
    deleting never loads a room's history (the service deletes in bulk)."""

    list_display = ["name", "id", "members", "admins", "message_count", "created_at"]
    list_filter = [RoomSizeFilter, "created_at"]
    search_fields = ["name", "=id", "members__user__username"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
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
                message_total=_count(Message.objects.filter(deleted_at__isnull=True)),
            )
            .prefetch_related(
                Prefetch(
                    "members",
                    queryset=RoomMember.objects.filter(admin=True).select_related("user").order_by("user__username"),
                    to_attr="admin_rows",
                )
            )
        )

    @admin.display(description="members", ordering="member_total")
    def members(self, obj: WithAnnotations[Room, RoomRow]) -> int:
        return obj.member_total

    @admin.display(description="admins", ordering="admin_total")
    def admins(self, obj: WithAnnotations[Room, RoomRow]) -> str:
        shown = ", ".join(m.user.username for m in obj.admin_rows[:3])
        return shown + (f" and {obj.admin_total - 3} more" if obj.admin_total > 3 else "")

    @admin.display(description="messages", ordering="message_total")
    def message_count(self, obj: WithAnnotations[Room, RoomRow]) -> int:  # not `messages`: the module's
        return obj.message_total

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
