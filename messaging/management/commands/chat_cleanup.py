from typing import Any

from messaging import services
from messaging.management.database import DatabaseCommand


class Command(DatabaseCommand):
    help = "Remove uploads never sent, older than CHAT_UNSENT_ATTACHMENT_SECONDS (a day); run it hourly."

    def handle(self, *args: Any, **options: Any) -> None:
        removed = services.attachments_unsent_prune()
        self.stdout.write(f"Removed {removed} unsent upload(s).")
