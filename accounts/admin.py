import ipaddress
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .forms import AdminLoginForm
from .models import LoginAttempt, SignupAttempt
from .paging import BigTableAdmin

# The admin's own login form checks passwords through the lockout, like the
# chat's login form and the WebSocket.
admin.site.login_form = AdminLoginForm


class ActiveLockFilter(admin.SimpleListFilter):
    title = "lock in force"
    parameter_name = "active_lock"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", "Yes")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[LoginAttempt]) -> QuerySet[LoginAttempt]:
        if self.value() == "yes":  # through the partial index on locked_until
            return queryset.filter(locked_until__gt=timezone.now())
        return queryset


@admin.register(LoginAttempt)
class LoginAttemptAdmin(BigTableAdmin[LoginAttempt]):
    """The lockout is computed from these rows: deleting them unlocks.

    Every login adds one (a million a month at 100,000 users): no date
    hierarchy, whose links list the distinct days of every row; the "at"
    filter's ranges use its index instead."""

    list_display = ["username", "ip", "at", "result", "locked_until"]
    list_filter = ["result", ActiveLockFilter, "at"]
    ordered_while = {"active_lock": "locked_until"}
    search_fields = ["username"]  # see get_search_results
    search_help_text = "A whole username, or an IP address."

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[LoginAttempt], search_term: str
    ) -> tuple[QuerySet[LoginAttempt], bool]:
        """The name or the address whole, through their indexes: a part of
        either (Django's icontains) reads every attempt, a million a month."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(ip=str(ipaddress.ip_address(term))), False
        except ValueError:
            return queryset.filter(username=term), False

    actions = ["delete_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LoginAttempt | None = None) -> bool:
        return False


@admin.register(SignupAttempt)
class SignupAttemptAdmin(BigTableAdmin[SignupAttempt]):
    """Sign-ups per address: what the sign-up budget counts."""

    list_display = ["username", "ip", "at"]
    list_filter = ["at"]
    search_fields = ["username", "ip"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SignupAttempt | None = None) -> bool:
        return False
