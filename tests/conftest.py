"""Shared fixtures: a migrated SQLite connection, the bill factory, payments in one transaction,
and a real upsd (see tests/integration/upsd.py: the session's `upsd`, or a `fresh_upsd`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from helpers import GOV, make_bill
from upsd import (
    fresh_upsd_fixture,
    shared_upsd_fixture,
    upsd_fixture,
    upsd_pool_fixture,
    upsd_warm_up_fixture,
)

import outbox
from edge import mirror, payments
from edge.db import MIGRATIONS

NODE = "dam-1"

__all__ = ["fresh_upsd_fixture", "shared_upsd_fixture", "upsd_fixture", "upsd_pool_fixture",
           "upsd_warm_up_fixture"]  # fmt: skip

BillFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def bill_factory() -> BillFactory:
    """helpers.make_bill, for tests that take their bills as a fixture."""
    return make_bill


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A file-backed connection with every migration applied, in autocommit mode."""
    connection = sqlite3.connect(tmp_path / "unit.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    outbox.apply_migrations(connection, MIGRATIONS)
    yield connection
    connection.close()


def in_tx(connection: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """Run `fn` in one write transaction, the way the writer does; roll back if it raises."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = fn(connection)
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result


@pytest.fixture
def tx() -> Callable[[sqlite3.Connection, Callable[[sqlite3.Connection], Any]], Any]:
    return in_tx


def accept_payment(
    connection: sqlite3.Connection,
    bill_id: str,
    amount: int,
    *,
    key: str,
    now: float = 1_780_000_000.0,
    channel: str = "counter-1",
) -> payments.Reply:
    """`payments.accept` with the fields a test does not care about filled in."""
    request = payments.PaymentRequest(bill_id=bill_id, amount=amount, method="cash", cashier="c1")
    return payments.accept(
        connection,
        node=NODE,
        governorate=GOV,
        channel=channel,
        key=key,
        request=request,
        now=now,
        tz=UTC,
    )


@pytest.fixture
def pay() -> Callable[..., payments.Reply]:
    return accept_payment


@pytest.fixture
def seed(
    tx: Callable[..., Any],
) -> Callable[[sqlite3.Connection, list[dict[str, Any]]], None]:
    def run(connection: sqlite3.Connection, bills: list[dict[str, Any]], cursor: int = 1) -> None:
        tx(connection, lambda c: mirror.apply_changes(c, bills, cursor))

    return run
