"""What makes two usernames the same name, and which names are refused.

"Alice", "ALICE" and "Ａｌｉｃｅ" are one name to a person, and so is "Émile"
next to "émile": names are compared on their NFKC form, case-folded
(Unicode's own case-insensitive matching; SQLite's lower() folds ASCII
only, so the database cannot be asked). And "аlice", with a Cyrillic "а",
looks exactly like "alice": a name must keep to one script (Latin,
Cyrillic, Greek, ...; Han may mix with kana or Hangul, as Japanese and
Korean are written). Digits and `@.+-_` belong to every script.
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

from core.protocol import USERNAME_MAX

__all__ = ["USERNAME_MAX", "fold", "normalize", "scripts", "validate_one_script"]

# Scripts that one language writes together.
_MIXES = [frozenset({"CJK", "HIRAGANA", "KATAKANA"}), frozenset({"CJK", "HANGUL"})]


def normalize(username: str) -> str:
    """The form a username is stored in (as Django's own normalize_username)."""
    return unicodedata.normalize("NFKC", username)


def fold(username: str) -> str:
    """The key two names share when people would take them for one."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


def _script(char: str) -> str:
    # Unicode character names start with the script: "LATIN SMALL LETTER A",
    # "CYRILLIC SMALL LETTER A", "CJK UNIFIED IDEOGRAPH-4E00", "HANGUL SYLLABLE GA".
    return unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]


def scripts(username: str) -> set[str]:
    return {_script(c) for c in normalize(username) if c.isalpha()}


def validate_one_script(username: str) -> None:
    found = scripts(username)
    if len(found) <= 1 or any(found <= mix for mix in _MIXES):
        return
    raise ValidationError(
        "Use letters of one alphabet: names that mix %(scripts)s can look exactly like someone else's.",
        code="mixed_scripts",
        params={"scripts": " and ".join(sorted(s.title() for s in found))},
    )
