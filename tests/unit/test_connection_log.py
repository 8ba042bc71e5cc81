"""edge.web.connections.Reporter: one log line per address and kind a minute, with a count."""

from __future__ import annotations

from edge.web import connections


def test_one_line_per_address_a_minute_counting_the_rest() -> None:
    now = [0.0]
    reporter = connections.Reporter(every_s=60.0, clock=lambda: now[0])
    assert reporter.due("10.0.0.9", "parse") == 0
    assert [reporter.due("10.0.0.9", "parse") for _ in range(49)] == [None] * 49
    assert reporter.due("10.0.0.8", "parse") == 0  # another address has its own line
    assert reporter.due("10.0.0.9", "head") == 0  # and another kind
    now[0] = 61.0
    assert reporter.due("10.0.0.9", "parse") == 49
    assert reporter.due("10.0.0.9", "parse") is None


def test_one_line_flattens_and_truncates() -> None:
    assert connections.one_line("a\n  b\tc") == "a b c"
    cut = connections.one_line("x" * 1000)
    assert len(cut) == connections.MAX_DETAIL and cut.endswith("…")
