"""Offline limits: `[limits.offline]` parsing, the limit arithmetic, and the totals triggers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from helpers import make_bill

import outbox
from edge import config, errors, offline, payments
from edge.errors import ConfigError

NOW = 1_780_000_000.0
H = 3600.0
ON = offline.Limits(max_payment=1000, max_total=5000, max_count=3, max_age_h=2.0,
                    mirror_max_age_h=4.0, replay_retry_s=300, pull_retry_s=30)  # fmt: skip
FRESH = offline.Usage(count=0, total=0, oldest_at=None, mirror_as_of=NOW - 60)


# --- configuration ---------------------------------------------------------------------


def test_limits_offline_table_maps_to_its_fields_and_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        "[limits.offline]\nmax_payment = 500\nmax_total = 9_000\nmax_count = 7\n"
        "max_age_h = 24.0\nmirror_max_age_h = 0\n"
    )
    s = config.load(path, env={"EDGE_LIMITS_OFFLINE_MAX_COUNT": "11"})
    assert (s.limits_offline_max_payment, s.limits_offline_max_total) == (500, 9000)
    assert s.limits_offline_max_count == 11  # the variable wins over the file
    assert (s.limits_offline_max_age_h, s.limits_offline_mirror_max_age_h) == (24.0, 0.0)
    limits = offline.Limits.of(s)
    assert (limits.max_payment, limits.max_count, limits.mirror_max_age_h) == (500, 11, 0.0)


def test_the_same_table_written_as_a_dotted_parent_also_loads(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("[limits]\noffline = { max_count = 5 }\n")
    assert config.load(path, env={}).limits_offline_max_count == 5


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[limits.offline]\nmax_cuont = 1\n", "limits.offline.max_cuont"),
        ("[limits.offline]\nmax_count = -1\n", "limits.offline.max_count"),
        ("[limits.offline]\nmax_total = 1.5\n", "limits.offline.max_total"),
        ('[limits.offline]\nmax_age_h = "a day"\n', "limits.offline.max_age_h"),
        ("[limits.online]\nmax_count = 1\n", "[limits.online]"),
        ("[limits]\nmax_count = 1\n", "limits.max_count"),
        ("[limits.offline.deeper]\nx = 1\n", "[limits.offline.deeper]"),
        ("[limits]\noffline_max_count = 1\n", "limits.offline_max_count"),
        ("[limits.offline]\nmax_age_h = nan\n", "limits.offline.max_age_h"),
        ("[limits.offline]\nmax_age_h = inf\n", "limits.offline.max_age_h"),
    ],
)
def test_bad_offline_limits_name_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace(".", r"\.")):
        config.load(path, env={})


def test_key_of_names_nested_and_plain_fields() -> None:
    assert config.key_of("limits_offline_mirror_max_age_h") == "limits.offline.mirror_max_age_h"
    assert config.key_of("centre_retry_cap_s") == "centre.retry_cap_s"


def test_defaults_carry_a_governorate_through_a_72_hour_outage() -> None:
    limits = offline.Limits.of(config.Settings())
    assert limits.max_age_h > 72 and limits.mirror_max_age_h > 72
    # ~25,000 payments a day for 1.5 M subscribers billed every two months, for three days.
    assert limits.max_count >= 3 * 1_500_000 // 60
    assert limits.max_total >= limits.max_count * 10_000_000  # 100,000 SYP each on average


# --- the arithmetic --------------------------------------------------------------------


def test_nothing_is_refused_within_every_limit() -> None:
    usage = offline.Usage(count=2, total=4000, oldest_at=NOW - 1.9 * H, mirror_as_of=NOW - 3 * H)
    assert offline.check(ON, usage, 1000, NOW, online=False) is None


@pytest.mark.parametrize(
    ("usage", "amount", "online", "limit", "retry"),
    [
        (FRESH, 1001, False, "max_payment", 30),
        (offline.Usage(3, 10, NOW, NOW), 1, True, "max_count", 300),
        (offline.Usage(1, 4500, NOW, NOW), 501, True, "max_total", 300),
        (offline.Usage(1, 1, NOW - 2 * H - 1, NOW), 1, True, "max_age_h", 300),
        (offline.Usage(0, 0, None, NOW - 4 * H - 1), 1, True, "mirror_max_age_h", 30),
    ],
)
def test_each_limit_trips_by_itself(
    usage: offline.Usage, amount: int, online: bool, limit: str, retry: int
) -> None:
    breach = offline.check(ON, usage, amount, NOW, online)
    assert breach is not None and breach.limit == limit
    assert breach.retry_after_s == retry
    assert (
        f"limits.offline.{limit}" in breach.detail and f"limits.offline.{limit}" in breach.detail_ar
    )
    error = breach.error()
    assert isinstance(error, errors.OfflineLimit) and error.status == 503
    assert error.headers == {"Retry-After": str(retry)}
    assert error.extra["limit"] == limit and error.extra["detail_ar"] == breach.detail_ar


def test_max_payment_only_bites_while_the_link_is_not_up() -> None:
    assert offline.check(ON, FRESH, 1001, NOW, online=True) is None
    assert offline.check(ON, FRESH, 1000, NOW, online=False) is None  # at the limit: taken


def test_a_total_limit_that_one_payment_fits_takes_only_one() -> None:
    usage = offline.Usage(count=0, total=4000, oldest_at=None, mirror_as_of=NOW)
    assert offline.check(ON, usage, 1000, NOW, True) is None
    after = usage.taken(1000, NOW)
    assert (after.count, after.total, after.oldest_at) == (1, 5000, NOW)
    breach = offline.check(ON, after, 1, NOW, True)
    assert breach is not None and breach.limit == "max_total"


def test_a_mirror_that_never_heard_from_the_centre_has_no_age_to_refuse() -> None:
    assert offline.check(ON, offline.Usage(0, 0, None, None), 1, NOW, online=True) is None


def test_zero_turns_each_limit_off() -> None:
    off = offline.Limits()
    assert not off.on
    worst = offline.Usage(count=10**9, total=10**15, oldest_at=NOW - 10**6, mirror_as_of=None)
    assert offline.check(off, worst, 10**12, NOW, online=False) is None


def test_status_shows_value_used_and_tripped() -> None:
    usage = offline.Usage(count=3, total=4000, oldest_at=NOW - 1.5 * H, mirror_as_of=None)
    doc = offline.status(ON, usage, NOW, online=False)
    assert doc["max_count"] == {"value": 3, "used": 3, "tripped": True}
    assert doc["max_total"] == {"value": 5000, "used": 4000, "tripped": False}
    assert doc["max_age_h"] == {"value": 2.0, "used": 1.5, "tripped": False}
    assert doc["mirror_max_age_h"] == {"value": 4.0, "used": None, "tripped": False}
    assert doc["max_payment"] == {"value": 1000, "used": None, "tripped": True}
    assert offline.status(ON, usage, NOW, online=True)["max_payment"]["tripped"] is False


# --- the totals the triggers keep (edge.0008) --------------------------------------------


def totals(conn: sqlite3.Connection) -> tuple[int, int]:
    usage = offline.read(conn)
    return usage.count, usage.total


def test_the_totals_follow_payments_taken_and_settled(
    conn: sqlite3.Connection, tx: Callable[..., Any], seed: Any, pay: Any
) -> None:
    seed(conn, [make_bill("1", amount=10**6), make_bill("2", amount=10**6)])
    ids = [json.loads(tx(conn, lambda c, i=i: pay(c, f"DAM-2026-05-{1 + i % 2}", 100 + i,
                                                  key=f"k{i}")).body)["payment_id"]
           for i in range(4)]  # fmt: skip
    assert totals(conn) == (4, 100 + 101 + 102 + 103)
    assert offline.read(conn).oldest_at == 1_780_000_000.0
    entries = [outbox.get(conn, i) for i in ids]
    results = [outbox.Result(e.seq, e.id, v) for e, v in zip(entries[:2], ("applied", "rejected"),
                                                              strict=True) if e]  # fmt: skip
    assert tx(conn, lambda c: outbox.settle(c, results)) == 2
    assert totals(conn) == (2, 102 + 103)
    # A repeated verdict changes nothing, in the entries or the totals.
    assert tx(conn, lambda c: outbox.settle(c, results)) == 0
    assert totals(conn) == (2, 205)


def test_the_group_commit_never_lets_two_payments_pass_a_limit_only_one_fits(
    conn: sqlite3.Connection, tx: Callable[..., Any], seed: Any
) -> None:
    seed(conn, [make_bill(str(a), amount=10**6) for a in range(1, 9)])
    acceptor = payments.Acceptor(
        "dam-1", "DAM", limits=offline.Limits(max_count=5, max_total=10**9)
    )
    calls = [
        payments.prepare("dam-1", "counter-1", f"k{i}", payments.PaymentRequest(
            f"DAM-2026-05-{1 + i}", 100, "cash", "c1"), NOW, UTC)
        for i in range(8)
    ]  # fmt: skip
    results = tx(conn, lambda c: acceptor(c, calls))
    taken = [r for r in results if isinstance(r, payments.Reply)]
    refused = [r for r in results if isinstance(r, errors.OfflineLimit)]
    assert (len(taken), len(refused)) == (5, 3)
    assert all(r.extra["limit"] == "max_count" for r in refused)
    assert totals(conn) == (5, 500)
    # A retry of a payment taken still gets its stored reply, past the limit.
    again = tx(conn, lambda c: acceptor(c, calls[:1]))[0]
    assert isinstance(again, payments.Reply) and again.replayed and again.status == 201
