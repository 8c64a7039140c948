from typing import Any, cast

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from core.addresses import UNKNOWN, parse_ip
from core.errors import ServiceError

from . import names, services
from .models import User


def client_ip(request: HttpRequest | None) -> str:
    # REMOTE_ADDR comes from the ASGI scope's client, which
    # chatsite.proxies.ClientAddress has validated (and taken from
    # X-Forwarded-For only behind a trusted proxy); checked again here for
    # any other way in (WSGI, tests).
    address = parse_ip((request.META.get("REMOTE_ADDR") if request is not None else None) or "")
    return str(address) if address is not None else UNKNOWN


class LoginForm(AuthenticationForm):
    """Django's authentication form, with the password checked by the same
    service as the WebSocket login: one lockout count, one budget per
    address, whichever door is knocked on."""

    retry_after: int | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is None or not password:
            return self.cleaned_data
        try:
            self.user_cache = services.user_authenticate(
                username=username, password=password, ip=client_ip(self.request)
            )
        except ServiceError as e:
            if e.code == "locked":
                self.retry_after = e.extra["retry_after"]
                raise ValidationError(e.message, code="locked") from None
            error = self.get_invalid_login_error()
            warning = services.lockout_warning(e.extra.get("attempts_left", -1))
            if warning:
                raise ValidationError(error.message % error.params + warning, code=error.code) from None
            raise error from None
        self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class AdminLoginForm(LoginForm, AdminAuthenticationForm):
    """The admin's login form: the same checks, and staff status."""


def password_rules() -> str:
    """The password rules in one line, shown before the first try (the
    validators' own texts came only with a failure)."""
    length = next(
        (v.min_length for v in password_validation.get_default_password_validators() if hasattr(v, "min_length")), 1
    )
    return f"At least {length} characters; not all digits, not a common password, not like your username."


class SignupForm(forms.Form):
    username = forms.CharField(
        max_length=names.USERNAME_MAX, widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "username"})
    )
    password1 = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )
    password2 = forms.CharField(
        label="Password again", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )
    email = forms.EmailField(
        label="Email (optional)",
        required=False,
        help_text="Only to reset a forgotten password.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )

    def __init__(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        self.request = request
        super().__init__(*args, **kwargs)
        self.fields["password1"].help_text = password_rules()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("password1") and data.get("password1") != data.get("password2"):
            self.add_error("password2", "The two passwords differ.")
            return data
        if self.errors:
            return data
        try:
            self.user = services.user_signup(
                username=data["username"],
                password=data["password1"],
                ip=client_ip(self.request),
                email=data.get("email") or "",
            )
        except ServiceError as e:
            # The service names the field ("Username: ..."); the form shows it by the field.
            if e.code == "rate_limited":
                self.add_error(None, e.message)
                return data
            field = "username" if e.code == "username_taken" or e.message.startswith("Username") else "password1"
            self.add_error(field, e.message.removeprefix("Username: ").removeprefix("Password: "))
        return data


class EmailForm(forms.Form):
    email = forms.EmailField(
        label="Email",
        required=False,
        help_text="Where a password-reset link is sent. Leave empty for none.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )


def password_field(label: str, autocomplete: str) -> forms.CharField:
    return forms.CharField(label=label, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": autocomplete}))


class RequestForm(forms.Form):
    """A form that needs the request: the user, the client's address."""

    def __init__(self, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        self.request = request
        super().__init__(*args, **kwargs)


class PasswordChangeForm(RequestForm):
    """The old password (a wrong one counts toward the login lockout) and
    the new one twice; the service does the checks and the change."""

    old_password = password_field("Current password", "current-password")
    new_password1 = password_field("New password", "new-password")
    new_password2 = password_field("New password again", "new-password")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        if data["new_password1"] != data["new_password2"]:
            self.add_error("new_password2", "The two passwords differ.")
            return data
        try:
            services.password_change(
                user=cast(User, self.request.user),  # the views require a login
                old_password=data["old_password"],
                new_password=data["new_password1"],
                ip=client_ip(self.request),
            )
        except ServiceError as e:
            field = "new_password1" if e.code == "invalid" else "old_password"
            self.add_error(field, e.message.removeprefix("Password: "))
        return data


class PasswordConfirmForm(RequestForm):
    """The password again, before something that cannot be undone; checked
    like a login, so it counts toward the lockout."""

    password = password_field("Your password", "current-password")

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        user, ip = self.request.user, client_ip(self.request)
        try:
            services.user_authenticate(username=user.username, password=password, ip=ip)
        except ServiceError as e:
            raise ValidationError("Wrong password." if e.code == "invalid_credentials" else e.message) from None
        return password


class ResetRequestForm(PasswordResetForm):
    """Django's reset form under two budgets (services.password_reset_budget):
    too many requests from one address get an error, too many for one email
    address are silently not sent, so the page never tells whether an
    account has that address."""

    send_allowed = True

    def __init__(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        self.request = request
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            self.send_allowed = services.password_reset_budget(email=data["email"], ip=client_ip(self.request))
        except ServiceError as e:
            raise ValidationError(e.message, code=e.code) from None
        return data

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.send_allowed:
            super().save(*args, **kwargs)
