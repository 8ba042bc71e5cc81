"""The centre's receipt rules on a real SQLite file: codes held per governorate, receipt keys
kept across a rotation, and what `verify` answers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from sync import receiptcode
from sync.centre import config, receipts
from sync.centre.config import NodeSettings
from sync.centre.store import migrate
from sync.errors import CentreConfigError, Refused

OLD, NEW = b"old-secret-of-dam-1-0123456789-abcdef", b"new-secret-of-dam-1-0123456789-abcdef"
PID = "dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C"
BILL = "DAM-2026-05-0100234567"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "centre.db", isolation_level=None)
    migrate(conn)
    yield conn
    conn.close()


def held(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return receipts.codes(conn)


def test_the_first_node_to_use_a_code_holds_it(db: sqlite3.Connection) -> None:
    receipts.claim_codes(db, "dam-1", "DAM", ["DAM-DAM1-20261201-000001"], 1.0)
    receipts.claim_codes(db, "dam-1", "DAM", ["DAM-DAM1-20261202-000001"], 2.0)  # again: fine
    receipts.claim_codes(db, "dam-2", "DAM", ["DAM-DAM2-20261201-000001"], 3.0)
    receipts.claim_codes(db, "ale-1", "ALE", ["ALE-DAM1-20261201-000001"], 4.0)  # other gov
    assert held(db) == [("ALE", "DAM1", "ale-1"), ("DAM", "DAM1", "dam-1"),
                        ("DAM", "DAM2", "dam-2")]  # fmt: skip


def test_a_code_held_by_another_node_of_the_governorate_is_refused_naming_both(
    db: sqlite3.Connection,
) -> None:
    receipts.claim_codes(db, "dam-1", "DAM", ["DAM-DAM1-20261201-000001"], 1.0)
    with pytest.raises(Refused) as caught:
        receipts.claim_codes(
            db, "dam-2", "DAM", ["DAM-NEW2-20261201-000001", "DAM-DAM1-20261201-000001"], 2.0
        )
    assert (caught.value.status, caught.value.code) == (409, "receipt_code_taken")
    assert "DAM1" in caught.value.detail and "dam-1" in caught.value.detail
    assert "dam-2" in caught.value.detail
    assert held(db) == [("DAM", "DAM1", "dam-1")]  # nothing claimed by the refused call


def test_listed_duplicates_pass_without_being_claimed_and_old_receipts_are_ignored(
    db: sqlite3.Connection,
) -> None:
    receipts.claim_codes(db, "dam-1", "DAM", ["DAM-DAM1-20261201-000001"], 1.0)
    receipts.claim_codes(
        db, "dam-2", "DAM", ["DAM-DAM1-20261201-000001", "DAM-20261201-000009"], 2.0,
        frozenset({"DAM1"}),
    )  # fmt: skip
    assert held(db) == [("DAM", "DAM1", "dam-1")]


def test_duplicate_receipt_codes_in_the_centre_config(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x" * 40)
    secret.chmod(0o600)
    table = {"governorate": "DAM", "secret_file": str(secret)}
    ok = config.parse({"nodes": {"dam-2": {**table, "duplicate_receipt_codes": ["DAM1"]}}},
                      tmp_path)  # fmt: skip
    assert ok.nodes["dam-2"].duplicate_receipt_codes == frozenset({"DAM1"})
    for bad in (["dam1"], "DAM1", [1]):
        with pytest.raises(CentreConfigError, match="duplicate_receipt_codes"):
            config.parse({"nodes": {"dam-2": {**table, "duplicate_receipt_codes": bad}}},
                         tmp_path)  # fmt: skip


def _record(conn: sqlite3.Connection, amount: int, at: str = "2026-12-01T11:03:27.000Z") -> None:
    payload = msgpack.packb({"payment_id": PID, "accepted_at": at})
    conn.execute(
        "INSERT INTO entries (id, node, seq, kind, payload, prev_hash, hash, bill_id, amount,"
        " verdict, received_at) VALUES (?, 'dam-1', 1, 'payment', ?, '', '', ?, ?, 'applied', 0)",
        (PID, payload, BILL, amount),
    )


AT = 1_796_123_007  # 2026-12-01T11:03:27Z


def test_verify_answers_genuine_unknown_and_forged(db: sqlite3.Connection) -> None:
    nodes = {"dam-1": NodeSettings("DAM", NEW)}
    text = receiptcode.make(NEW, PID, BILL, 99_600, AT).text()
    assert receipts.verify(db, text, nodes).outcome == receipts.UNKNOWN
    _record(db, 99_600)
    assert receipts.verify(db, text, nodes).outcome == receipts.GENUINE
    tampered = text.replace("|99600|", "|99601|")
    assert receipts.verify(db, tampered, nodes).outcome == receipts.FORGED
    # A good MAC over other figures than the centre recorded (a node's own key misused).
    other = receiptcode.make(NEW, PID, BILL, 50_000, AT).text()
    check = receipts.verify(db, other, nodes)
    assert check.outcome == receipts.FORGED and "not what the receipt says" in check.detail
    assert receipts.verify(db, "EDGE1|junk", nodes).outcome == receipts.FORGED
    assert receipts.verify(db, text, {}).outcome == receipts.FORGED  # node unknown, no key


def test_a_receipt_signed_before_a_rotation_still_verifies(db: sqlite3.Connection) -> None:
    """The centre was started with the old key; after the swap only the new one is live."""
    receipts.remember_keys(db, {"dam-1": NodeSettings("DAM", OLD, next_secret=NEW)}, 1.0)
    _record(db, 99_600)
    old_receipt = receiptcode.make(OLD, PID, BILL, 99_600, AT).text()
    after = {"dam-1": NodeSettings("DAM", NEW)}
    assert receipts.verify(db, old_receipt, after).outcome == receipts.GENUINE
    stored = db.execute("SELECT key FROM receipt_keys").fetchall()
    assert OLD not in {bytes(row[0]) for row in stored}  # derived keys only, never a secret
