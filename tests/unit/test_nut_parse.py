"""The NUT protocol's line parsing: quoted values with escapes, VAR replies, typed ERR codes."""

from __future__ import annotations

import pytest

from edge.power import nut


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('VAR ups ups.status "OL"', ["VAR", "ups", "ups.status", "OL"]),
        ('VAR ups ups.status "OB LB"', ["VAR", "ups", "ups.status", "OB LB"]),
        ('VAR ups device.model "Smart \\"UPS\\" 1500"', ["VAR", "ups", "device.model", 'Smart "UPS" 1500']),
        ('VAR ups x "C:\\\\ups\\\\log"', ["VAR", "ups", "x", "C:\\ups\\log"]),
        ('VAR ups x ""', ["VAR", "ups", "x", ""]),
        ("BEGIN  LIST\tVAR ups", ["BEGIN", "LIST", "VAR", "ups"]),
        ('UPS dummy "Description unavailable"', ["UPS", "dummy", "Description unavailable"]),
        ('VAR ups x "سيرفر المحافظة"', ["VAR", "ups", "x", "سيرفر المحافظة"]),
        ("", []),
    ],
)  # fmt: skip
def test_split_line(line: str, words: list[str]) -> None:
    assert nut.split_line(line) == words


@pytest.mark.parametrize("line", ['VAR ups x "unterminated', 'VAR ups x "dangling\\'])
def test_broken_quoting_is_a_protocol_error(line: str) -> None:
    with pytest.raises(nut.NutProtocolError):
        nut.split_line(line)


@pytest.mark.parametrize("value", ["OL", 'say "hi"', "back\\slash", 'both \\" mixed', ""])
def test_quote_round_trips_through_split(value: str) -> None:
    assert nut.split_line(f"VAR ups x {nut.quote(value)}")[3] == value


def test_parse_var_returns_the_value() -> None:
    assert nut.parse_var('VAR dummy battery.charge "87"', "dummy", "battery.charge") == "87"


@pytest.mark.parametrize(
    "line",
    ['VAR other battery.charge "87"', 'VAR dummy ups.load "87"', "OK", "VAR dummy battery.charge"],
)
def test_parse_var_refuses_a_reply_to_another_question(line: str) -> None:
    with pytest.raises(nut.NutProtocolError):
        nut.parse_var(line, "dummy", "battery.charge")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("DATA-STALE", nut.DataStale),
        ("DRIVER-NOT-CONNECTED", nut.DriverNotConnected),
        ("UNKNOWN-UPS", nut.UnknownUps),
        ("VAR-NOT-SUPPORTED", nut.VarNotSupported),
        ("ACCESS-DENIED", nut.AccessDenied),
    ],
)
def test_err_replies_raise_typed_errors(code: str, kind: type[nut.NutServerError]) -> None:
    with pytest.raises(kind) as caught:
        nut.parse_var(f"ERR {code}", "dummy", "ups.status")
    assert caught.value.code == code
    assert isinstance(caught.value, nut.NutError)


def test_an_unlisted_err_code_is_still_a_server_error_with_its_code_and_detail() -> None:
    with pytest.raises(nut.NutServerError) as caught:
        nut.check_reply(nut.split_line("ERR INVALID-ARGUMENT extra words"), "ERR ...")
    assert type(caught.value) is nut.NutServerError
    assert (caught.value.code, caught.value.detail) == ("INVALID-ARGUMENT", "extra words")


def test_err_without_a_code_is_a_protocol_error() -> None:
    with pytest.raises(nut.NutProtocolError):
        nut.check_reply(["ERR"], "ERR")


@pytest.mark.parametrize("name", ["", "two words", "new\nline", 'quo"te'])
async def test_names_that_would_change_the_command_are_refused(name: str) -> None:
    client = nut.NutClient("127.0.0.1", 1)
    with pytest.raises(ValueError, match="not a NUT name"):
        await client.get_var(name, "ups.status")
