from django.contrib import admin
from django.utils import timezone

from .models import LoginAttempt


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
