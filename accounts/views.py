from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from core.errors import ServiceError

from . import services
from .forms import EmailForm, LoginForm, PasswordChangeForm, PasswordConfirmForm, ResetRequestForm, SignupForm
from .models import User


class ChatLogoutView(auth_views.LogoutView):
    """Logging out lands on the login page, which says so (it said nothing)."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        messages.info(request, "You are logged out.")  # after the flush, so it survives it
        return response


class ChatLoginView(LoginView):
    form_class = LoginForm
    template_name = "accounts/login.html"
    redirect_authenticated_user = True


@sensitive_post_parameters("password1", "password2")
@csrf_protect
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None, request=request)
    if request.method == "POST" and form.is_valid():
        login(request, form.user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {form.user.username}!")
        return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


@login_required
@sensitive_post_parameters("old_password", "new_password1", "new_password2", "password")
@csrf_protect
def account(request: HttpRequest) -> HttpResponse:
    """The account page: email, password, download, delete. Each form posts
    here with its `action` (delete posts to its own view)."""
    me = cast(User, request.user)  # login_required
    action = request.POST.get("action") if request.method == "POST" else None
    email_form = EmailForm(request.POST if action == "email" else None, initial={"email": me.email})
    password_form = PasswordChangeForm(request.POST if action == "password" else None, request=request)
    if action == "email" and email_form.is_valid():
        try:
            services.user_email_set(user=me, email=email_form.cleaned_data["email"])
        except ServiceError as e:
            email_form.add_error("email", ValidationError(e.message.removeprefix("Email: ")))
        else:
            messages.success(request, "Your email address is saved.")
            return redirect("account")
    if action == "password" and password_form.is_valid():
        # The password changed; this session stays, every other one ended.
        update_session_auth_hash(request, me)
        messages.success(request, "Your password is changed. You are logged out everywhere else.")
        return redirect("account")
    context = {
        "email_form": email_form,
        "password_form": password_form,
        "delete_form": PasswordConfirmForm(request=request, auto_id="delete_%s"),
        "deleted_name_days": settings.CHAT_DELETED_NAME_DAYS,
    }
    return render(request, "accounts/account.html", context)


class ResetView(auth_views.PasswordResetView):
    form_class = ResetRequestForm
    template_name = "accounts/password_reset_form.html"
    email_template_name = "accounts/password_reset_email.txt"
    subject_template_name = "accounts/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password_reset_done")

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}


class ResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        minutes = max(1, settings.PASSWORD_RESET_TIMEOUT // 60)
        return {**super().get_context_data(**kwargs), "timeout_text": f"{minutes} minutes"}


class ResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password_reset_complete")


class ResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"
