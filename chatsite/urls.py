from django.contrib import admin
from django.urls import include, path

from accounts import views as accounts_views
from messaging import uploads
from messaging import views as messaging_views

urlpatterns = [
    path("", messaging_views.home, name="home"),
    path("account/", accounts_views.account, name="account"),
    path("account/data.json", messaging_views.account_data, {"fmt": "json"}, name="account_data"),
    path("account/data/", messaging_views.account_data, {"fmt": "html"}, name="account_data_html"),
    path("account/delete/", messaging_views.account_delete, name="account_delete"),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("files/", uploads.upload, name="attachment_upload"),
    path("files/<int:attachment_id>/", uploads.download, name="attachment"),
    path("files/<int:attachment_id>/thumbnail/", uploads.download, {"thumbnail": True}, name="attachment_thumbnail"),
]
