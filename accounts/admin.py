from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .forms import AdminLoginForm
from .models import LoginAttempt, SignupAttempt

# The admin's own login form checks passwords through the lockout, like the
# chat's login form and the WebSocket.
admin.site.login_form = AdminLoginForm


class ActiveLockFilter(admin.SimpleListFilter):
    title = "lock in force"
    parameter_name = "active_lock"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", "Yes")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[LoginAttempt]) -> QuerySet[LoginAttempt]:
        if self.value() == "yes":
            return queryset.filter(locked_until__gt=timezone.now())
        return queryset


@admin.register(LoginAttempt)
class LoginAttemptAdmin(admin.ModelAdmin[LoginAttempt]):
    """The lockout is computed from these rows: deleting them unlocks."""

    list_display = ["username", "ip", "at", "result", "locked_until"]
    list_filter = ["result", ActiveLockFilter, "at"]
    search_fields = ["username", "ip"]
    date_hierarchy = "at"
    actions = ["delete_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LoginAttempt | None = None) -> bool:
        return False


@admin.register(SignupAttempt)
class SignupAttemptAdmin(admin.ModelAdmin[SignupAttempt]):
    """Sign-ups per address: what the sign-up budget counts."""

    list_display = ["username", "ip", "at"]
    search_fields = ["username", "ip"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SignupAttempt | None = None) -> bool:
        return False
