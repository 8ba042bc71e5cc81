"""Free text typed by people (a cashier's name today; names, notes, complaints later).

One rule for all of it: printable characters only. Format characters (Unicode category Cf:
bidi overrides and isolates, zero-width characters, the BOM) and control characters (Cc)
are refused, because they make stored text display as something other than what it holds.
"""

from __future__ import annotations

import unicodedata

from edge import errors

# Cf includes U+200C/U+200D (ZWNJ/ZWJ). Arabic shapes its letters without them; they matter
# mainly for Persian and for emoji sequences, which no field of ours needs. Refused too, so
# that two names that look the same are the same string.
# Line and paragraph separators (Zl, Zp) are refused with them: these are one-line fields.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def problem(value: str) -> str | None:
    """Why `value` is not acceptable free text (None: it is).

    Category C (control, format, surrogate, private use, unassigned) is refused; a lone
    surrogate (JSON "\\ud800") is not text at all and could not be stored as UTF-8.
    """
    for index, char in enumerate(value):
        category = unicodedata.category(char)
        if category in REFUSED_CATEGORIES:
            name = unicodedata.name(char, "")
            label = f"U+{ord(char):04X}" + (f" {name}" if name else "")
            return f"character {index + 1} is {label} (category {category}), which is not allowed"
    return None


def acceptable(value: object, *, max_chars: int) -> bool:
    """True for what `field` takes (a search filter asks, rather than answering 422)."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= max_chars
        and bool(value.strip())
        and problem(value) is None
    )


def field(name: str, value: object, *, max_chars: int) -> str:
    """`value` itself if it is free text of 1-`max_chars` characters, not all spaces.

    Otherwise 422 invalid_field, the detail naming the field and the first bad character.
    The value is returned unchanged (not stripped): it is part of a payment's fingerprint.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= max_chars or not value.strip():
        raise errors.InvalidField(f"{name} must be text of 1-{max_chars} characters")
    why = problem(value)
    if why is not None:
        raise errors.InvalidField(f"{name}: {why}")
    return value
