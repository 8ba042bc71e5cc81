"""Shared fixtures: a migrated SQLite connection, the bill factory, payments in one transaction,
and a real upsd (see tests/integration/upsd.py: the session's `upsd`, or a `fresh_upsd`)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from helpers import GOV, make_bill, unavailable
from pgcluster import Cluster, bindir
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

WORKERS = 2


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: WORKERS processes for tests/integration (with tests/unit or not), else none.

    Integration tests bind ephemeral ports and keep to their tmp_path, so two run side by
    side, and half their time is waiting (NUT's timers, a browser, polls) that the other
    worker fills. The system tests (fixed ports in network namespaces, processes killed,
    recovery times measured) and the simulation stay in one process, as do runs of single
    files or tests and tests/unit alone (starting workers costs more than it saves there).
    Two: CI's machine has two cores.
    """
    tests = config.rootpath / "tests"
    paths = []
    for arg in config.args:
        path = (config.invocation_params.dir / arg).resolve()
        if "::" in arg or path not in (tests / "unit", tests / "integration"):
            return 0
        paths.append(path)
    if tests / "integration" not in paths or (os.cpu_count() or 1) < WORKERS:
        return 0
    return WORKERS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On xdist workers, tests marked slow go first (in order otherwise): the longest test
    started last would finish alone on one worker while the other waits."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster per test process (tests/pgcluster.py), started when
    first asked for; each test takes a fresh database of it."""
    found = bindir()
    if found is None:
        unavailable("PostgreSQL is not installed (initdb; .ci/apt-packages has postgresql)")
    cluster = Cluster.start(found)
    try:
        yield cluster
    finally:
        cluster.stop()
