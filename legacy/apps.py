from django.apps import AppConfig


class LegacyConfig(AppConfig):
    """The one-time import of the old socket server's files (chat_import):
    above accounts and messaging, whose services it calls; neither knows it."""

    name = "legacy"
    default_auto_field = "django.db.models.BigAutoField"
