from django.conf import settings
from django.db import models


class ImportedUser(models.Model):
    """An account that the import created. Running the import again leaves
    these be; an account of the same name that someone else made is a clash,
    which chat_import refuses without --merge (it would hand the old server's
    pending messages and blocks to a stranger)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+")
    imported_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"user {self.user_id}, imported {self.imported_at:%Y-%m-%d %H:%M}"
