"""Late fines (sync/fines.py): the computation at its edges and as properties over dates, the
rule in force on a day, the local-day derivation each side feeds it, and the rules frame."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import fines, protocol
from sync.errors import ProtocolError
from sync.fines import Rule
from sync.timefmt import iso

TZ = ZoneInfo("Asia/Damascus")
RULE = Rule("DAM", 1, date(2026, 1, 1), grace_days=15, fixed=500, percent_bp=150, cap=10_000)
DUE = "2026-07-15"
LAST_GRACE = date(2026, 7, 30)  # 15 July + 15 days

rules = st.builds(
    Rule,
    governorate=st.just("DAM"),
    version=st.integers(1, 50),
    effective=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    grace_days=st.integers(0, fines.MAX_GRACE_DAYS),
    fixed=st.integers(0, 10**7),
    percent_bp=st.integers(0, fines.BP),
    cap=st.none() | st.integers(0, 10**9),
)
days = st.dates(date(2019, 1, 1), date(2032, 12, 31))
amounts = st.integers(0, 10**12)


# --- the computation at its edges --------------------------------------------------------


def test_no_fine_up_to_and_including_the_last_grace_day() -> None:
    assert fines.fine(RULE, 100_000, DUE, date(2026, 7, 15)) == 0
    assert fines.fine(RULE, 100_000, DUE, LAST_GRACE) == 0


def test_the_first_late_day_starts_the_first_month() -> None:
    # 500 fixed + 1.5 % of 100,000 = 1,500: one month is 2,000.
    assert fines.fine(RULE, 100_000, DUE, LAST_GRACE + timedelta(days=1)) == 2_000
    assert fines.fine(RULE, 100_000, DUE, date(2026, 8, 30)) == 2_000
    assert fines.fine(RULE, 100_000, DUE, date(2026, 8, 31)) == 4_000  # the second month


def test_the_percentage_rounds_down_to_the_piastre_once_a_month() -> None:
    rule = Rule("DAM", 1, date(2026, 1, 1), 0, fixed=0, percent_bp=1, cap=None)
    # 1 bp of 9,999 is 0.9999 piastres: 0 each month, however many months.
    assert fines.fine(rule, 9_999, DUE, date(2027, 7, 16)) == 0
    assert fines.fine(rule, 10_000, DUE, date(2026, 7, 16)) == 1  # exactly one piastre
    assert fines.fine(rule, 19_999, DUE, date(2026, 9, 16)) == 3  # 1 a month, 3 months started
    assert rule.monthly(19_999) == 1


def test_the_cap_is_reached_exactly_and_never_passed() -> None:
    rule = Rule("DAM", 1, date(2026, 1, 1), 0, fixed=2_500, percent_bp=0, cap=5_000)
    assert fines.fine(rule, 1, DUE, date(2026, 7, 16)) == 2_500
    assert fines.fine(rule, 1, DUE, date(2026, 8, 16)) == 5_000  # 2 x 2,500 = the cap
    assert fines.fine(rule, 1, DUE, date(2026, 9, 16)) == 5_000
    assert fines.fine(rule, 1, DUE, date(2036, 9, 16)) == 5_000


def test_no_fine_before_the_rule_takes_effect() -> None:
    later = Rule("DAM", 2, date(2026, 9, 1), 0, fixed=100, percent_bp=0, cap=None)
    assert fines.fine(later, 1, DUE, date(2026, 8, 31)) == 0
    # On its first day every started month since the due date counts (no pro-rating).
    assert fines.fine(later, 1, DUE, date(2026, 9, 1)) == 200


def test_a_due_date_that_is_not_a_date_carries_no_fine() -> None:
    for bad in ("", "15/07/2026", "2026-02-30", "2026-07-15T00:00", "٢٠٢٦-٠٧-١٥", "9999-12-31"):
        assert fines.fine(RULE, 100_000, bad, date(9999, 12, 31)) == 0


def test_month_ends_clamp_and_a_leap_day_is_a_day() -> None:
    rule = Rule("DAM", 1, date(2020, 1, 1), 0, fixed=1, percent_bp=0, cap=None)
    # Late from 31 January: the second month starts on the last day of February.
    assert fines.fine(rule, 1, "2024-01-30", date(2024, 2, 28)) == 1
    assert fines.fine(rule, 1, "2024-01-30", date(2024, 2, 29)) == 2  # leap year
    assert fines.fine(rule, 1, "2023-01-30", date(2023, 2, 28)) == 2  # not a leap year
    # Late from the leap day itself: a month later is 29 March, a year later 28 February.
    assert fines.started_months(date(2024, 2, 29), date(2024, 3, 28)) == 1
    assert fines.started_months(date(2024, 2, 29), date(2024, 3, 29)) == 2
    assert fines.started_months(date(2024, 2, 29), date(2025, 2, 28)) == 13


def test_owed_is_nothing_once_the_amount_is_paid_and_net_of_fines_paid() -> None:
    late = date(2026, 8, 31)  # a 4,000 fine
    assert fines.owed(RULE, late, 100_000, DUE, principal_due=0, fine_paid=0) == 0
    assert fines.owed(RULE, late, 100_000, DUE, principal_due=1, fine_paid=1_500) == 2_500
    assert fines.owed(RULE, late, 100_000, DUE, principal_due=1, fine_paid=9_000) == 0


def test_a_payment_covers_the_fine_first() -> None:
    assert fines.allocate(1_000, 2_500) == (1_000, 0)
    assert fines.allocate(2_500, 2_500) == (2_500, 0)
    assert fines.allocate(10_000, 2_500) == (2_500, 7_500)
    assert fines.allocate(10_000, 0) == (0, 10_000)


# --- properties over dates ---------------------------------------------------------------


@given(rules, amounts, days, days)
def test_fine_is_zero_through_grace_and_monotone_after(
    rule: Rule, amount: int, due: date, day: date
) -> None:
    value = fines.fine(rule, amount, due.isoformat(), day)
    assert 0 <= value <= (rule.cap if rule.cap is not None else fines.MAX_INT)
    if day <= due + timedelta(days=rule.grace_days) or day < rule.effective:
        assert value == 0
    later = fines.fine(rule, amount, due.isoformat(), day + timedelta(days=1))
    assert later >= value


@given(rules, amounts, days, st.integers(0, 200))
def test_fine_is_whole_months_of_the_monthly_charge_up_to_the_cap(
    rule: Rule, amount: int, due: date, late_by: int
) -> None:
    first_late = due + timedelta(days=rule.grace_days + 1)
    day = first_late + timedelta(days=late_by)
    if day < rule.effective:
        return
    months = fines.started_months(first_late, day)
    assert months >= 1
    uncapped = months * (rule.fixed + amount * rule.percent_bp // fines.BP)
    expected = uncapped if rule.cap is None else min(uncapped, rule.cap)
    assert fines.fine(rule, amount, due.isoformat(), day) == expected


@given(days, st.integers(0, 400))
def test_a_month_starts_exactly_on_the_clamped_same_day(first_late: date, n: int) -> None:
    start = fines.add_months(first_late, n)
    assert fines.started_months(first_late, start) == n + 1
    assert fines.started_months(first_late, start - timedelta(days=1)) == n
    assert start.day == first_late.day or start.day < first_late.day


@given(st.lists(rules, min_size=1, max_size=6, unique_by=lambda r: r.version), days)
def test_the_rule_in_force_is_the_latest_effective_on_or_before_the_day(
    published: list[Rule], day: date
) -> None:
    # The centre numbers a governorate's rules once each (a version is never reused).
    chosen = fines.rule_on(published, day)
    in_force = [r for r in published if r.effective <= day]
    if not in_force:
        assert chosen is None
        return
    assert chosen is not None and chosen.effective <= day
    assert (chosen.effective, chosen.version) == max((r.effective, r.version) for r in in_force)
    assert fines.rule_on(reversed(published), day) == chosen  # order of publication is moot


def test_a_rule_change_mid_cycle_takes_over_on_its_effective_day() -> None:
    second = Rule("DAM", 2, date(2026, 8, 10), 15, fixed=0, percent_bp=500, cap=None)
    published = [RULE, second]
    before, on = date(2026, 8, 9), date(2026, 8, 10)
    assert fines.fine(fines.rule_on(published, before), 100_000, DUE, before) == 2_000
    assert fines.fine(fines.rule_on(published, on), 100_000, DUE, on) == 5_000


# --- the local day each side feeds it ----------------------------------------------------


@given(
    st.datetimes(datetime(2019, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 7 * 86_400),
)
def test_node_and_centre_derive_the_same_day_for_a_payment_replayed_later(
    taken: datetime, delay_s: int
) -> None:
    # The node dates a payment by its clock at acceptance; the centre by the ISO
    # `accepted_at` the payload carries, read later: the same day, however late the replay.
    ts = taken.timestamp()
    node_day = fines.local_day(ts, TZ)
    centre_day = fines.payment_day(iso(ts), ts + delay_s, TZ)
    assert centre_day == node_day
    for rule in (RULE,):
        assert fines.fine(rule, 100_000, DUE, node_day) == fines.fine(
            rule, 100_000, DUE, centre_day
        )


@given(st.datetimes(datetime(2019, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)))
def test_a_node_clock_a_day_ahead_is_held_to_the_centres_today(actual: datetime) -> None:
    now = actual.timestamp()
    ahead = now + 86_400
    assert fines.payment_day(iso(ahead), now, TZ) == fines.local_day(now, TZ)
    assert fines.local_day(ahead, TZ) == fines.local_day(now, TZ) + timedelta(days=1)


@pytest.mark.parametrize(
    ("utc", "day"),
    [
        # 2021-03-26 00:00 local did not exist (clocks went 00:00 -> 01:00, +02 -> +03).
        ("2021-03-25T21:59:59", date(2021, 3, 25)),
        ("2021-03-25T22:00:00", date(2021, 3, 26)),
        # 2021-10-29 00:00 local came after 23:00-23:59 twice (+03, then +02).
        ("2021-10-28T20:59:59", date(2021, 10, 28)),  # 23:59:59 +03
        ("2021-10-28T21:30:00", date(2021, 10, 28)),  # 23:30 again, +02
        ("2021-10-28T22:00:00", date(2021, 10, 29)),
        # Since late 2022 Syria keeps +03 all year.
        ("2026-07-30T20:59:59", date(2026, 7, 30)),
        ("2026-07-30T21:00:00", date(2026, 7, 31)),
    ],
)
def test_the_local_day_follows_damascus_time_across_dst_changes(utc: str, day: date) -> None:
    ts = datetime.fromisoformat(utc).replace(tzinfo=UTC).timestamp()
    assert fines.local_day(ts, TZ) == day
    assert fines.payment_day(iso(ts), ts, TZ) == day


def test_the_grace_ends_at_local_midnight_not_utc_midnight() -> None:
    # 21:00 UTC on the last grace day is already the first late day in Damascus (+03).
    ts = datetime(2026, 7, 30, 21, 0, tzinfo=UTC).timestamp()
    assert fines.fine(RULE, 100_000, DUE, fines.local_day(ts, TZ)) == 2_000
    assert fines.fine(RULE, 100_000, DUE, fines.local_day(ts - 1, TZ)) == 0


# --- the rules frame ---------------------------------------------------------------------


@given(st.lists(rules, max_size=5, unique_by=lambda r: r.version))
def test_rules_frame_round_trips(published: list[Rule]) -> None:
    assert protocol.decode_fine_rules(protocol.encode_fine_rules(published), "DAM") == published


def test_rules_frame_refuses_another_governorates_rule_and_bad_fields() -> None:
    other = Rule("ALE", 1, date(2026, 1, 1), 0, 1, 0, None)
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_fine_rules(protocol.encode_fine_rules([other]), "DAM")
    assert caught.value.code == "foreign_bill"
    bad = Rule("DAM", 1, date(2026, 1, 1), 0, 1, fines.BP + 1, None)
    with pytest.raises(ProtocolError):
        protocol.decode_fine_rules(protocol.encode_fine_rules([bad]), "DAM")
    twice = [RULE, Rule("DAM", 1, date(2026, 2, 1), 0, 1, 0, None)]
    with pytest.raises(ProtocolError, match="version twice"):
        protocol.decode_fine_rules(protocol.encode_fine_rules(twice), "DAM")
    with pytest.raises(ProtocolError):  # a day that is not one
        protocol.decode_fine_rules(
            protocol._pack({"v": 4, "rules": [{**protocol.rule_map(RULE), "effective": "x"}]})
        )


def test_a_reply_carries_the_centres_fine_figure_or_none() -> None:
    base = {"seq": 1, "id": "dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C", "verdict": "applied",
            "reason": "fine_mismatch", "version": 2, "credit": 0}  # fmt: skip
    pack = protocol._pack
    for fine, expected in ((0, 0), (2_000, 2_000), (None, None)):
        reply = protocol.decode_reply(
            pack({"v": 4, "results": [{**base, "fine": fine}], "acked_seq": 1})
        )
        assert reply.results[0].fine == expected
    # Without the key (a reply that predates it): no figure.
    reply = protocol.decode_reply(pack({"v": 4, "results": [base], "acked_seq": 1}))
    assert reply.results[0].fine is None
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ProtocolError):
            protocol.decode_reply(
                pack({"v": 4, "results": [{**base, "fine": bad}], "acked_seq": 1})
            )
