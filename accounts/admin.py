from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Exists, OuterRef
from django.utils import timezone

from messaging.models import Block, Delivery
from messaging.services import live_presence, presence_disconnect

from . import services
from .models import LoginAttempt, User


def _locked_attempts():
    return LoginAttempt.objects.filter(username=OuterRef("username"), locked_until__gt=timezone.now())


class ExistsFilter(admin.SimpleListFilter):
    """A yes/no filter on whether `condition()` holds for the user."""

    labels = ("Yes", "No")

    def condition(self):
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [("yes", self.labels[0]), ("no", self.labels[1])]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.filter(~self.condition())
        return queryset


class OnlineFilter(ExistsFilter):
    title = "online"
    parameter_name = "online"
    labels = ("Online", "Offline")

    def condition(self):
        return Exists(live_presence().filter(user=OuterRef("pk")))


class LockedFilter(ExistsFilter):
    title = "locked out"
    parameter_name = "locked"
    labels = ("Locked out (any IP)", "Not locked out")

    def condition(self):
        return Exists(_locked_attempts())


class BlocksInline(admin.TabularInline):
    """Whom this user blocks. Change blocks under Messaging › Blocks, where
    the same service as a user's own block runs."""

    model = Block
    fk_name = "blocker"
    fields = ["blocked", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "blocks"
    verbose_name_plural = "Whom this user blocks"

    def has_add_permission(self, request, obj=None):
        return False


class BlockedByInline(BlocksInline):
    fk_name = "blocked"
    fields = ["blocker", "created_at"]
    readonly_fields = fields
    verbose_name_plural = "Who blocks this user"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "is_online", "last_login", "last_seen", "is_locked", "is_active", "is_staff"]
    list_filter = [OnlineFilter, LockedFilter, "is_staff", "is_active"]
    search_fields = ["username"]
    ordering = ["username"]
    readonly_fields = ["last_login", "last_seen", "date_joined", "pending_messages"]
    inlines = [BlocksInline, BlockedByInline]
    actions = ["unlock", "disconnect", "deactivate"]
    fieldsets = DjangoUserAdmin.fieldsets + (("Chat", {"fields": ["last_seen", "pending_messages"]}),)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                online=Exists(live_presence().filter(user=OuterRef("pk"))),
                locked=Exists(_locked_attempts()),
            )
        )

    @admin.display(boolean=True, description="online", ordering="online")
    def is_online(self, obj):
        return obj.online

    @admin.display(boolean=True, description="locked out", ordering="locked")
    def is_locked(self, obj):
        return obj.locked

    @admin.display(description="pending messages")
    def pending_messages(self, obj):
        return Delivery.objects.filter(recipient=obj, acked_at__isnull=True).count() if obj.pk else 0

    @admin.action(description="Unlock (forget failed logins)")
    def unlock(self, request, queryset):
        n = sum(services.login_unlock(username=u.username) for u in queryset)
        self.message_user(request, f"Cleared {n} failed login attempt(s).")

    @admin.action(description="Disconnect (end the live connection)")
    def disconnect(self, request, queryset):
        n = sum(presence_disconnect(user=u) for u in queryset)
        self.message_user(request, f"Disconnected {n} user(s).")

    @admin.action(description="Deactivate (no more logins; disconnects)")
    def deactivate(self, request, queryset):
        users = list(queryset.filter(is_active=True))
        if any(u.pk == request.user.pk for u in users):
            self.message_user(request, "You cannot deactivate yourself.", messages.ERROR)
            return
        for user in users:
            services.user_deactivate(user=user)
        self.message_user(request, f"Deactivated {len(users)} user(s).")


class ActiveLockFilter(admin.SimpleListFilter):
    title = "lock in force"
    parameter_name = "active_lock"

    def lookups(self, request, model_admin):
        return [("yes", "Yes")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(locked_until__gt=timezone.now())
        return queryset


@admin.register(LoginAttempt)
class LoginAttemptAdmin(admin.ModelAdmin):
    """The lockout is computed from these rows: deleting them unlocks."""

    list_display = ["username", "ip", "at", "result", "locked_until"]
    list_filter = ["result", ActiveLockFilter, "at"]
    search_fields = ["username", "ip"]
    date_hierarchy = "at"
    actions = ["delete_selected"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
