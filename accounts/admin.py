from django.contrib import admin
from django.utils import timezone

from .forms import AdminLoginForm
from .models import LoginAttempt, SignupAttempt

# The admin's own login form checks passwords through the lockout, like the
# chat's login form and the WebSocket.
admin.site.login_form = AdminLoginForm


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


@admin.register(SignupAttempt)
class SignupAttemptAdmin(admin.ModelAdmin):
    """Sign-ups per address: what the sign-up budget counts."""

    list_display = ["username", "ip", "at"]
    search_fields = ["username", "ip"]
    date_hierarchy = "at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
