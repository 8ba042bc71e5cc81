"""The audit trail's pure parts: times as days or ISO, pruning in bounded chunks, the query, config."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge import audit, config
from edge.errors import ConfigError

DAMASCUS = ZoneInfo("Asia/Damascus")  # UTC+3 all year
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def rows(*spec: tuple[float, str, str | None]) -> list[audit.Row]:
    return [(at, token, "127.0.0.1", "account.read", acc, acc, 200) for at, token, acc in spec]


def test_a_day_is_a_local_day_and_until_a_day_includes_it() -> None:
    start = audit.parse_time("2026-05-29", DAMASCUS)
    assert start == audit.parse_time("2026-05-28T21:00:00Z", DAMASCUS)
    assert audit.parse_time("2026-05-29", DAMASCUS, end=True) - start == 86400


def test_an_iso_time_keeps_its_offset_and_naive_is_utc() -> None:
    assert audit.parse_time("2026-05-28T20:26:40Z", DAMASCUS) == T0
    assert audit.parse_time("2026-05-28T23:26:40+03:00", DAMASCUS) == T0
    assert audit.parse_time("2026-05-28T20:26:40", DAMASCUS) == T0


@pytest.mark.parametrize("text", ["yesterday", "2026-02-30", "9999-12-31", "", "29/05/2026"])
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        audit.parse_time(text, DAMASCUS, end=True)


def test_insert_keeps_the_buffer_order_across_its_statements(
    conn: sqlite3.Connection, tx: Callable[..., Any]
) -> None:
    n = 2 * audit.CHUNK + 7  # two whole statements and a tail
    tx(conn, lambda c: audit.insert(c, rows(*((T0 + i, f"t{i}", str(i)) for i in range(n)))))
    got = list(audit.select(conn, audit.Query()))
    assert [(e.seq, e.token, e.account, e.at) for e in got] == [
        (i + 1, f"t{i}", str(i), T0 + i) for i in range(n)
    ]


def test_pruning_takes_old_rows_in_bounded_chunks_and_keeps_new_ones(
    conn: sqlite3.Connection, tx: Callable[..., Any]
) -> None:
    old = rows(*((T0 - 100 + i, "a", "1") for i in range(25)))
    new = rows((T0, "b", "2"), (T0 + 1, "b", "3"))
    tx(conn, lambda c: audit.insert(c, old + new))
    assert tx(conn, lambda c: audit.prune_chunk(c, T0, limit=10)) == 10
    assert tx(conn, lambda c: audit.prune_chunk(c, T0, limit=10)) == 10
    assert tx(conn, lambda c: audit.prune_chunk(c, T0, limit=10)) == 5
    assert tx(conn, lambda c: audit.prune_chunk(c, T0, limit=10)) == 0
    assert [e.at for e in audit.select(conn, audit.Query())] == [T0, T0 + 1]


def test_a_row_from_a_clock_far_ahead_does_not_hold_back_the_rows_after_it(
    conn: sqlite3.Connection, tx: Callable[..., Any]
) -> None:
    # seq order is not time order after a power cut: the old rows behind it still go.
    tx(conn, lambda c: audit.insert(c, rows((T0 + 10**9, "a", "1"), (T0 - 50, "a", "2"))))
    assert tx(conn, lambda c: audit.prune_chunk(c, T0)) == 1
    assert [e.account for e in audit.select(conn, audit.Query())] == ["1"]


def test_seq_is_never_reused_once_pruning_empties_the_table(
    conn: sqlite3.Connection, tx: Callable[..., Any]
) -> None:
    tx(conn, lambda c: audit.insert(c, rows((T0 - 10, "a", "1"), (T0 - 9, "a", "1"))))
    tx(conn, lambda c: audit.prune_chunk(c, T0))
    tx(conn, lambda c: audit.insert(c, rows((T0, "a", "1"))))
    assert [e.seq for e in audit.select(conn, audit.Query())] == [3]


def test_the_query_filters_and_pages_in_seq_order(
    conn: sqlite3.Connection, tx: Callable[..., Any]
) -> None:
    # The clock went back between the second and third row: order stays by seq.
    spec = [(T0, "a", "1"), (T0 + 5, "b", "1"), (T0 - 5, "a", "2"), (T0 + 9, "a", None)]
    tx(conn, lambda c: audit.insert(c, rows(*spec)))

    def seqs(**q: Any) -> list[int]:
        return [e.seq for e in audit.select(conn, audit.Query(**q))]

    assert seqs() == [1, 2, 3, 4]
    assert seqs(token="a") == [1, 3, 4]
    assert seqs(account="1") == [1, 2]
    assert seqs(since=T0) == [1, 2, 4]
    assert seqs(since=T0, until=T0 + 9) == [1, 2]
    assert seqs(until=T0) == [3]  # the window's seq range spans the clock's jump
    assert seqs(since=T0 + 10) == [] and seqs(until=T0 - 5) == []
    assert seqs(after=1, limit=2) == [2, 3]
    assert seqs(token="a", account="2", since=-math.inf) == [3]
    entry = next(audit.select(conn, audit.Query(limit=1)))
    assert entry.as_json() == {
        "seq": 1, "at": "2026-05-28T20:26:40.000Z", "token": "a", "address": "127.0.0.1",
        "action": "account.read", "object": "1", "account": "1", "status": 200,
    }  # fmt: skip


def test_audit_settings_from_toml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("[audit]\nenabled = false\nkeep_days = 30\n")
    s = config.load(path, env={})
    assert (s.audit_enabled, s.audit_keep_days) == (False, 30)
    s = config.load(path, env={"EDGE_AUDIT_ENABLED": "true", "EDGE_AUDIT_KEEP_DAYS": "0"})
    assert (s.audit_enabled, s.audit_keep_days) == (True, 0)
    defaults = config.load(None, env={})
    assert (defaults.audit_enabled, defaults.audit_keep_days) == (True, 400)


@pytest.mark.parametrize(
    ("text", "named"),
    [("enabled = 1", "audit.enabled"), ('enabled = "maybe"', "audit.enabled"),
     ("keep_days = -1", "audit.keep_days"), ("keep_days = 1.5", "audit.keep_days"),
     ("keep = 3", "audit.keep")],
)  # fmt: skip
def test_bad_audit_settings_name_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(f"[audit]\n{text}\n")
    with pytest.raises(ConfigError, match=named):
        config.load(path, env={})
