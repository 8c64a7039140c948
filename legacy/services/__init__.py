"""The import's writes: users (with their passwords hashed on every core),
then messages, deliveries and blocks. Callers import from here."""

from .imports import (
    BlockImported,
    ImportReport,
    MessageImport,
    MessageImported,
    NameClash,
    Progress,
    blocks_import,
    legacy_import,
    messages_import,
)
from .users import UserImport, UserImported, passwords_hash, users_import, users_not_imported

__all__ = [
    "BlockImported",
    "ImportReport",
    "MessageImport",
    "MessageImported",
    "NameClash",
    "Progress",
    "UserImport",
    "UserImported",
    "blocks_import",
    "legacy_import",
    "messages_import",
    "passwords_hash",
    "users_import",
    "users_not_imported",
]
