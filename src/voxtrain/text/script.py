"""Which characters of a text fall outside a voice's language.

espeak-ng reads a letter of another script by its description (an English voice says
"Japanese letter" for each kana) and a symbol by its name ("grinning face"), so such text
turns into minutes of confident nonsense unless someone is told. The check is by Unicode
character name: cheap, and needs no language model.
"""

from __future__ import annotations

import unicodedata

# Name prefixes of the letters each language family writes with (espeak language code prefixes).
_SCRIPTS = {
    ("en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "nb", "fi", "pl", "cs", "sk", "ro", "hu", "tr",
     "ca", "hr", "sl", "et", "lv", "lt", "id", "ms", "vi", "sw", "eo", "la", "cy", "ga", "is", "af"): ("LATIN",),
    ("ru", "uk", "be", "bg", "sr", "mk", "kk", "ky"): ("CYRILLIC",),
    ("el", "grc"): ("GREEK",),
}


def _script_of(language: str) -> tuple[str, ...] | None:
    prefix = language.lower().replace("_", "-").split("-")[0]
    return next((names for codes, names in _SCRIPTS.items() if prefix in codes), None)


def foreign_characters(text: str, language: str) -> list[str]:
    """Letters of another script and pictographic symbols in `text`, each once, in order of
    appearance. Empty for a language whose script this table does not know."""
    script = _script_of(language)
    if script is None:
        return []
    found: list[str] = []
    for ch in text:
        if ch in found:
            continue
        category = unicodedata.category(ch)
        name = unicodedata.name(ch, "")
        if (category.startswith("L") and not name.startswith(script)) or category == "So":
            found.append(ch)
    return found


def describe(chars: list[str], limit: int = 8) -> str:
    """'こ (HIRAGANA LETTER KO), 世 (CJK UNIFIED IDEOGRAPH-4E16), ...' for messages."""
    shown = ", ".join(f"{c} ({unicodedata.name(c, f'U+{ord(c):04X}')})" for c in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")
