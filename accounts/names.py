"""What makes two usernames the same name, and which names are refused.

"Alice", "ALICE" and "Ａｌｉｃｅ" are one name to a person, and so is "Émile"
next to "émile": names are compared on their NFKC form, case-folded
(Unicode's own case-insensitive matching; SQLite's lower() folds ASCII
only, so the database cannot be asked). And "аlice", with a Cyrillic "а",
looks exactly like "alice": a name must keep to one script (Latin,
Cyrillic, Greek, ...; Han may mix with kana or Hangul, as Japanese and
Korean are written). Digits and `@.+-_` belong to every script. And no
name may carry the controls that change the direction text is shown in:
"\u202eecila" would show as "alice".
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

from core.protocol import USERNAME_MAX

__all__ = [
    "BIDI_CONTROLS",
    "USERNAME_MAX",
    "fold",
    "normalize",
    "scripts",
    "validate_no_bidi_controls",
    "validate_one_script",
]

# Embeddings and overrides (U+202A-202E), isolates (U+2066-2069) and the
# direction marks (U+200E, U+200F, U+061C): invisible, they make a name show
# as another, and reorder whatever a page shows after it.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

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


def validate_no_bidi_controls(username: str) -> None:
    found = sorted({f"U+{ord(c):04X}" for c in username if c in BIDI_CONTROLS})
    if found:
        raise ValidationError(
            "Names cannot contain direction controls (%(found)s): they make a name show as another one.",
            code="bidi_controls",
            params={"found": ", ".join(found)},
        )
