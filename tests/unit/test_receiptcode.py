"""Receipts: node codes, numbers unique across nodes, the QR text and its MAC, the layouts."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC
from pathlib import Path

import pytest
from helpers import make_bill
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import config, mirror, payments, receipts
from edge.db import migrate
from edge.errors import ConfigError
from edge.web import receipt as receipt_page
from sync import receiptcode

SECRET = b"a-shared-secret-for-dam-1-tests-0123456789"
PAYMENT = "dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C"
BILL = "DAM-2026-05-0100234567"


# --- node codes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_id", "code"),
    [("dam-1", "DAM1"), ("ale-north-12", "ALENORTH"), ("7", "7"), ("hms-a-b-c", "HMSABC")],
)
def test_default_code_is_the_node_id_upper_cased_without_other_characters(
    node_id: str, code: str
) -> None:
    assert receiptcode.default_code(node_id) == code
    assert config.Settings(node_id=node_id).receipt_code == code


def test_a_set_receipt_code_is_used_and_loaded_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[node]\nid = "dam-1"\nreceipt_code = "MZH2"\n')
    assert config.load(path, env={}).receipt_code == "MZH2"


@pytest.mark.parametrize("bad", ["dam1", "D-1", "TOOLONG12", "ق1", " A"])
def test_invalid_receipt_code_is_refused_naming_the_key(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(f'[node]\nreceipt_code = "{bad}"\n')
    with pytest.raises(ConfigError, match=r"node\.receipt_code"):
        config.load(path, env={})


def test_code_of_reads_new_and_old_receipt_numbers() -> None:
    assert receiptcode.code_of("DAM-DAM1-20261201-000003") == "DAM1"
    assert receiptcode.code_of("DAM-20261201-000003") is None  # printed before codes
    assert receiptcode.code_of("junk") is None


# --- receipt numbers: two nodes of one governorate never collide --------------------------


def _node_db(path: Path, accounts: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn)
    bills = [make_bill(a, amount=10**9) for a in accounts]
    conn.execute("BEGIN")
    mirror.apply_changes(conn, bills, 1)
    conn.execute("COMMIT")
    return conn


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 3), st.integers(0, 4 * 86400)),
        min_size=1,
        max_size=60,
    )
)
def test_receipts_of_two_nodes_with_distinct_codes_never_collide(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[int, int, int]]
) -> None:
    """Any interleaving of payments at two nodes of DAM over four days (the same local days,
    the same per-day counters): every receipt is distinct and carries its node's code."""
    root = tmp_path_factory.mktemp("nodes")
    accounts = [f"01000000{i:02d}" for i in range(4)]
    nodes = [("dam-1", _node_db(root / "a.db", accounts)),
             ("dam-2", _node_db(root / "b.db", accounts))]  # fmt: skip
    seen: dict[str, str] = {}
    try:
        for i, (which, account, offset) in enumerate(plan):
            node, conn = nodes[which]
            request = payments.PaymentRequest(
                bill_id=f"DAM-2026-05-{accounts[account]}", amount=100, method="cash", cashier="c"
            )
            conn.execute("BEGIN IMMEDIATE")
            reply = payments.accept(
                conn, node=node, governorate="DAM", channel="c", key=f"k{i}", request=request,
                now=1_780_000_000.0 + offset, tz=UTC,
            )  # fmt: skip
            conn.execute("COMMIT")
            number = _receipt(reply)
            assert number not in seen, (number, node, seen[number])
            assert receiptcode.code_of(number) == receiptcode.default_code(node)
            seen[number] = node
    finally:
        for _, conn in nodes:
            conn.close()


def _receipt(reply: payments.Reply) -> str:
    match = re.search(rb'"receipt":"([^"]+)"', reply.body)
    assert match is not None
    return match.group(1).decode()


# --- the QR text --------------------------------------------------------------------------


def test_qr_text_round_trips_and_its_mac_verifies() -> None:
    made = receiptcode.make(SECRET, PAYMENT, BILL, 9_960_000, 1_780_000_000.7)
    text = made.text()
    assert text.startswith(f"EDGE1|{PAYMENT}|{BILL}|9960000|1780000000|")
    back = receiptcode.parse(text)
    assert back == made
    assert back.node == "dam-1"
    assert back.key_id == receiptcode.signing.key_id(SECRET)
    assert len(back.mac) == 24  # 120 bits in base32
    assert back.valid_under(receiptcode.receipt_key(SECRET))


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace("|9960000|", "|9960001|"),  # one digit of the amount
        lambda t: t.replace(BILL, "DAM-2026-05-0100234568"),
        lambda t: t.replace("|1780000000|", "|1780000001|"),
        lambda t: t.replace(PAYMENT, PAYMENT[:-1] + "D"),
    ],
)
def test_a_changed_figure_fails_the_mac(change: object) -> None:
    text = receiptcode.make(SECRET, PAYMENT, BILL, 9_960_000, 1_780_000_000).text()
    changed = change(text)  # type: ignore[operator]
    assert changed != text
    assert not receiptcode.parse(changed).valid_under(receiptcode.receipt_key(SECRET))


def test_the_mac_needs_the_node_receipt_key_not_the_secret_or_another_key() -> None:
    code = receiptcode.make(SECRET, PAYMENT, BILL, 100, 1)
    assert not code.valid_under(SECRET)
    assert not code.valid_under(receiptcode.receipt_key(SECRET + b"x"))


@pytest.mark.parametrize(
    "text",
    ["", "EDGE2|a|b|1|2|3|4", f"EDGE1|{PAYMENT}|{BILL}|0|1|abcdef01|" + "A" * 24,
     f"EDGE1|{PAYMENT}|{BILL}|-5|1|abcdef01|" + "A" * 24,
     f"EDGE1|{PAYMENT}|{BILL}|5|1|ABCDEF01|" + "A" * 24,
     f"EDGE1|{PAYMENT}|{BILL}|5|1|abcdef01|" + "a" * 24, "x" * 300],
)  # fmt: skip
def test_malformed_qr_text_is_refused(text: str) -> None:
    with pytest.raises(receiptcode.BadReceiptText):
        receiptcode.parse(text)


# --- layouts ------------------------------------------------------------------------------


def _receipt_of(
    subscriber: str = "محمد الخطيب", cashier: str = "سامر", qr: bool = True
) -> receipts.Receipt:
    found = {
        "payment_id": PAYMENT, "receipt": "DAM-DAM1-20261201-000042", "bill_id": BILL,
        "account": "0100234567", "amount": 9_960_050, "method": "cash", "cashier": cashier,
        "accepted_at": "2026-12-01T11:03:27.123Z", "state": "pending_sync",
    }  # fmt: skip
    return receipts.build(found, subscriber, config.Settings(), SECRET if qr else None)


def test_amounts_show_syp_with_thousands_separators() -> None:
    assert receipts.syp(9_960_000) == "99,600.00"
    assert receipts.syp(5) == "0.05"
    assert receipts.syp(123_456_789_01) == "123,456,789.01"


def test_time_is_local_to_the_node() -> None:
    assert _receipt_of().local_time == "2026-12-01 14:03:27"  # Asia/Damascus is UTC+3


@pytest.mark.parametrize(("paper", "width"), [("80mm", 42), ("58mm", 32), ("a4", 80)])
@pytest.mark.parametrize("subscriber", ["محمد الخطيب", "A" * 120, "", "عَبْدُ اللّٰه 😀"])
def test_text_layout_fits_the_paper_width_in_ascii(paper: str, width: int, subscriber: str) -> None:
    r = _receipt_of(subscriber)
    out = receipts.text(r, paper)
    lines = out.split("\n")
    assert lines[-1] == ""  # every line ends with a newline
    assert all(len(line) <= width for line in lines), [ln for ln in lines if len(ln) > width]
    assert out.isascii()
    joined = out.replace("\n", "")
    for whole in (r.receipt, r.payment_id, r.bill_id, "99,600.50 SYP"):
        assert any(whole in line for line in lines), whole  # never split across lines
    assert r.qr in joined.replace(" ", "")  # the QR text, maybe wrapped, is all there


def test_arabic_names_are_romanised_for_the_text_printer() -> None:
    assert receipts.ascii_text("محمد الخطيب") == "mhmd alkhtyb"
    assert receipts.ascii_text("عَبْد ١٢") == "'bd 12"
    assert receipts.ascii_text("x\u2603y") == "x?y"


def test_html_is_arabic_first_self_contained_with_an_inline_svg_qr() -> None:
    r = _receipt_of(subscriber="<script>alert(1)</script>")
    doc = receipt_page.page(r, "58mm")
    assert doc.startswith('<!DOCTYPE html><html lang="ar" dir="rtl">')
    assert "<svg" in doc and "size: 58mm auto" in doc
    assert "<script>" not in doc and "&lt;script&gt;" in doc
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", doc)  # nothing to fetch
    assert doc.index("كهرباء دمشق") < doc.index("Damascus electricity")
    for value in (r.receipt, r.payment_id, r.bill_id, "99,600.50 SYP", "2026-12-01 14:03:27"):
        assert value in doc


def test_without_a_key_there_is_no_qr() -> None:
    r = _receipt_of(qr=False)
    assert r.qr == ""
    assert "<svg" not in receipt_page.page(r)
    assert "No verification code" in receipts.text(r)
    for paper, width in receipts.PAPERS.items():  # the note fits the roll like every line
        assert max(len(line) for line in receipts.text(r, paper).splitlines()) <= width
