from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the signal that removes an attachment's files with its row.
        from .services import attachments  # noqa: F401
