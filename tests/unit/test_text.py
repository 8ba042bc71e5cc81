"""The one validator for free text typed by people (edge.text): what it refuses and keeps."""

from __future__ import annotations

import pytest

from edge import errors, text

REFUSED = {
    "\u202e": "RIGHT-TO-LEFT OVERRIDE",
    "\u202a": "LEFT-TO-RIGHT EMBEDDING",
    "\u2066": "LEFT-TO-RIGHT ISOLATE",
    "\u2069": "POP DIRECTIONAL ISOLATE",
    "\u200b": "ZERO WIDTH SPACE",
    "\u200c": "ZERO WIDTH NON-JOINER",
    "\u200d": "ZERO WIDTH JOINER",
    "\u200e": "LEFT-TO-RIGHT MARK",
    "\ufeff": "ZERO WIDTH NO-BREAK SPACE",
    "\u00ad": "SOFT HYPHEN",
    "\u061c": "ARABIC LETTER MARK",
    "\x00": "",
    "\t": "",
    "\n": "",
    "\x7f": "",
    "\x85": "",
    "\u2028": "LINE SEPARATOR",
    "\ue000": "",  # private use
    "\ud800": "",  # a lone surrogate, as JSON "\ud800" decodes
}


@pytest.mark.parametrize("char", list(REFUSED), ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_refuses_control_format_and_separator_characters(char: str) -> None:
    with pytest.raises(errors.InvalidField) as info:
        text.field("cashier", f"ra{char}mi", max_chars=64)
    detail = info.value.detail
    assert detail.startswith("cashier: character 3 is ")
    assert f"U+{ord(char):04X}" in detail and REFUSED[char] in detail
    assert info.value.status == 422 and info.value.code == "invalid_field"


@pytest.mark.parametrize(
    "value",
    ["rami", "رامي الأحمد", "Huda O'Neil-Smith", "سمير 2", "a" * 64, " padded ", "é", "ß"],
)
def test_keeps_printable_text_unchanged(value: str) -> None:
    assert text.field("cashier", value, max_chars=64) == value
    assert text.problem(value) is None


@pytest.mark.parametrize("value", ["", "   ", "a" * 65, None, 7, ["rami"]])
def test_refuses_empty_blank_too_long_and_non_strings(value: object) -> None:
    with pytest.raises(errors.InvalidField, match=r"^cashier must be text of 1-64 characters$"):
        text.field("cashier", value, max_chars=64)


def test_names_the_field_given() -> None:
    with pytest.raises(errors.InvalidField, match=r"^note: character 1 is U\+202E"):
        text.field("note", "\u202eevil", max_chars=500)
