"""The import's writes: users (with their passwords hashed on every core),
then messages, deliveries and blocks. Callers import from here."""

from .imports import (
    BlockImported,
    ImportReport,
    MessageImport,
    MessageImported,
    Progress,
    blocks_import,
    legacy_import,
    messages_import,
)
from .users import UserImport, UserImported, passwords_hash, users_import

__all__ = [
    "BlockImported",
    "ImportReport",
    "MessageImport",
    "MessageImported",
    "Progress",
    "UserImport",
    "UserImported",
    "blocks_import",
    "legacy_import",
    "messages_import",
    "passwords_hash",
    "users_import",
]
