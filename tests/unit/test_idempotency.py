"""Idempotency records: per-client keys, fingerprints, stored replies, reuse refused."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

import outbox
from edge import errors
from outbox import IdempotencyKeyReused, StoredResponse, fingerprint, idempotency


def test_fingerprint_is_stable_and_treats_str_and_bytes_alike():
    assert fingerprint("POST /v1/payments", "{}") == fingerprint(b"POST /v1/payments", b"{}")
    assert len(fingerprint("x")) == 64


def test_fingerprint_keeps_part_boundaries_and_order():
    assert fingerprint("ab", "c") != fingerprint("a", "bc")
    assert fingerprint("a", "b") != fingerprint("b", "a")
    assert fingerprint("a", "") != fingerprint("a")


def test_a_new_key_has_nothing_stored(conn: sqlite3.Connection):
    assert idempotency.lookup(conn, "counter-1", "k1", fingerprint("a")) is None


def test_the_same_request_gets_the_stored_response(conn: sqlite3.Connection):
    stored = StoredResponse(201, b'{"receipt": "DAM-1"}')
    idempotency.remember(conn, "counter-1", "k1", fingerprint("a"), stored, now=1.0)
    assert idempotency.lookup(conn, "counter-1", "k1", fingerprint("a")) == stored


def test_the_same_key_with_another_request_is_refused(conn: sqlite3.Connection):
    idempotency.remember(conn, "counter-1", "k1", fingerprint("a"), StoredResponse(201, b"{}"))
    with pytest.raises(IdempotencyKeyReused) as caught:
        idempotency.lookup(conn, "counter-1", "k1", fingerprint("b"))
    assert (caught.value.client, caught.value.key) == ("counter-1", "k1")


def test_keys_belong_to_one_client(conn: sqlite3.Connection):
    idempotency.remember(conn, "counter-1", "k1", fingerprint("a"), StoredResponse(201, b"{}"))
    assert idempotency.lookup(conn, "bank-2", "k1", fingerprint("b")) is None


def test_a_key_is_remembered_once(conn: sqlite3.Connection):
    idempotency.remember(conn, "counter-1", "k1", fingerprint("a"), StoredResponse(201, b"{}"))
    with pytest.raises(sqlite3.IntegrityError):
        idempotency.remember(conn, "counter-1", "k1", fingerprint("a"), StoredResponse(201, b"{}"))


def counts(conn: sqlite3.Connection) -> tuple[int, ...]:
    tables = ("payments", "outbox_entries", "outbox_idempotency", "receipt_counters")
    return tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)


def test_a_retried_payment_replays_the_first_reply_and_writes_nothing_new(
    conn: sqlite3.Connection, seed: Callable[..., None], tx: Callable[..., Any], pay, bill_factory
):
    bill = bill_factory()
    seed(conn, [bill])
    first = tx(conn, lambda c: pay(c, bill["bill_id"], 30_000, key="k1"))
    before = counts(conn)
    again = tx(conn, lambda c: pay(c, bill["bill_id"], 30_000, key="k1", now=1_790_000_000.0))
    assert (again.status, again.body, again.replayed) == (201, first.body, True)
    assert not first.replayed
    assert counts(conn) == before == (1, 1, 1, 1)
    assert json.loads(again.body)["due_after"] == 70_000


def test_a_payment_reusing_a_key_for_another_body_is_refused_and_writes_nothing(
    conn: sqlite3.Connection, seed: Callable[..., None], tx: Callable[..., Any], pay, bill_factory
):
    bill = bill_factory()
    seed(conn, [bill])
    tx(conn, lambda c: pay(c, bill["bill_id"], 30_000, key="k1"))
    before = counts(conn)
    with pytest.raises(errors.IdempotencyKeyReused):
        tx(conn, lambda c: pay(c, bill["bill_id"], 40_000, key="k1"))
    assert counts(conn) == before
    other_client = tx(conn, lambda c: pay(c, bill["bill_id"], 40_000, key="k1", channel="bank-2"))
    assert not other_client.replayed
    assert outbox.stats(conn).last_seq == 2
