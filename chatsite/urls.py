from django.contrib import admin
from django.urls import include, path

from messaging import views as messaging_views

urlpatterns = [
    path("", messaging_views.home, name="home"),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
]
