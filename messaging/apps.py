from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The signals: an attachment's files go with its row; a logout or a
        # saved account ends its live connection at once.
        from . import receivers
        from .services import attachments  # noqa: F401

        receivers.connect()
