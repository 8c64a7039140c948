from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from core.addresses import UNKNOWN, parse_ip
from core.errors import ServiceError

from . import names, services


def client_ip(request) -> str:
    # REMOTE_ADDR comes from the ASGI scope's client, which
    # chatsite.proxies.ClientAddress has validated (and taken from
    # X-Forwarded-For only behind a trusted proxy); checked again here for
    # any other way in (WSGI, tests).
    address = parse_ip(request.META.get("REMOTE_ADDR") or "")
    return str(address) if address is not None else UNKNOWN


class LoginForm(AuthenticationForm):
    """Django's authentication form, with the password checked by the same
    service as the WebSocket login: one lockout count, one budget per
    address, whichever door is knocked on."""

    retry_after: int | None = None

    def clean(self):
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
            raise self.get_invalid_login_error() from None
        self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class AdminLoginForm(LoginForm, AdminAuthenticationForm):
    """The admin's login form: the same checks, and staff status."""


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

    def __init__(self, *args, request=None, **kwargs):
        self.request = request
        super().__init__(*args, **kwargs)

    def clean(self):
        data = super().clean() or {}
        if data.get("password1") and data.get("password1") != data.get("password2"):
            self.add_error("password2", "The two passwords differ.")
            return data
        if self.errors:
            return data
        try:
            self.user = services.user_signup(
                username=data["username"], password=data["password1"], ip=client_ip(self.request)
            )
        except ServiceError as e:
            # The service names the field ("Username: ..."); the form shows it by the field.
            if e.code == "rate_limited":
                self.add_error(None, e.message)
                return data
            field = "username" if e.code == "username_taken" or e.message.startswith("Username") else "password1"
            self.add_error(field, e.message.removeprefix("Username: ").removeprefix("Password: "))
        return data
