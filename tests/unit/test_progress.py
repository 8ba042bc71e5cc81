"""sync.progress: a bar on a terminal, plain log lines every few seconds elsewhere."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from sync.progress import Progress


def test_without_a_terminal_it_logs_a_line_every_few_seconds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    caplog.set_level(logging.INFO, logger="sync.progress")
    with (tmp_path / "stderr.txt").open("w+") as out:
        progress = Progress("import bills.csv", 1000, unit="rows", out=out,
                            clock=lambda: now[0])  # fmt: skip
        for _ in range(1000):
            now[0] += 1 / 64  # 1,000 rows over 15.6 s (exact in binary)
            progress.advance(1)
        assert progress.finish() == 15.625
        out.seek(0)
        assert out.read() == ""  # no bar, no control characters in a file or a journal
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # at 5, 10 and 15 s, and the last one
    assert lines[0] == "import bills.csv: 320/1,000 rows (32%, 64/s, about 11 s left) after 5 s"
    assert lines[-1] == "import bills.csv: 1,000/1,000 rows (100%, 64/s, about 0 s left) after 16 s"
    assert not progress.bar and progress.done == 1000


def test_an_unknown_total_shows_count_and_rate() -> None:
    now = [0.0]
    progress = Progress("seed", None, unit="bills", out=io.StringIO(), clock=lambda: now[0])
    now[0] = 4.0
    progress.advance(2000)
    assert progress.line() == "seed: 2,000 bills (500/s) after 4 s"


def test_on_a_terminal_it_draws_a_bar_with_rate_and_eta() -> None:
    out = io.StringIO()
    with Progress("backup", 4096, unit="pages", out=out, bar=True) as progress:
        for _ in range(4):
            progress.advance(1024)
    drawn = out.getvalue()
    assert progress.bar is False  # closed
    assert "backup" in drawn and "100%" in drawn and "4.10k/4.10k" in drawn
    assert "pages/s" in drawn and "<" in drawn  # rate, and elapsed<remaining
