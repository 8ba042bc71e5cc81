"""What every test directory shares: the one bill factory and the one poll-until helper.

Importable by bare name (`from helpers import make_bill, eventually`) from any test: the
pytest settings in pyproject.toml put tests/ and tests/integration on sys.path.

* `make_bill` builds a bill as the centre sends it (and the mirror stores it); `bill_input`
  and `bills_csv` are the same bill as the centre's billing import takes it.
* `TEST_LOOP` is the event loop the tests run on (EDGE_TEST_LOOP: asyncio or uvloop).
* `free_port` finds a port for a daemon that must be told one (upsd, `edge serve`).
* `eventually` (in a coroutine) and `wait_until` (in blocking code) poll a condition until
  it holds, and fail with what they were waiting for once the timeout has passed.
"""

from __future__ import annotations

import asyncio
import csv
import inspect
import io
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import fields as dataclass_fields
from typing import Any, NoReturn, TypeVar

import pytest

from sync.centre import bills

T = TypeVar("T")

# EDGE_TEST_LOOP=uvloop (.ci/run's second run of tests/integration): tests/conftest.py runs
# every asyncio test and fixture on uvloop, the loop `http.loop = "uvloop"` serves on.
TEST_LOOP = os.environ.get("EDGE_TEST_LOOP", "asyncio")

GOV, CYCLE = "DAM", "2026-05"
ACCOUNT = "0100234567"
NAME = "سمير الحلبي"  # personal data: the views that must not show it look for this name
ADDRESS = "دمشق، المزة، شارع 12"

# --- bills ------------------------------------------------------------------------------


def make_bill(
    account: str = ACCOUNT, cycle: str = CYCLE, *, amount: int = 100_000, paid: int = 0,
    version: int = 1, gov: str = GOV, **fields: Any,
) -> dict[str, Any]:  # fmt: skip
    """A bill as the centre sends it; any other field can be given too (`name=`, `bill_id=`)."""
    bill = {
        "bill_id": f"{gov}-{cycle}-{account}",
        "account": account,
        "governorate": gov,
        "cycle": cycle,
        "name": NAME,
        "address": ADDRESS,
        "meter": f"EM-{account[-6:]}",
        "kwh": 420,
        "amount": amount,
        "paid": paid,
        "due_date": "2026-07-15",
        "version": version,
        "updated_at": "2026-06-01T00:00:00Z",
        "credit": 0,
        "fine_paid": 0,
    }
    bill.update(fields)
    return bill


_INPUT_FIELDS = tuple(f.name for f in dataclass_fields(bills.BillInput))


def bill_input(account: str = ACCOUNT, cycle: str = CYCLE, **kwargs: Any) -> bills.BillInput:
    """`make_bill(account, cycle, **kwargs)` as a row of the centre's billing import."""
    bill = make_bill(account, cycle, **kwargs)
    return bills.BillInput(**{name: bill[name] for name in _INPUT_FIELDS})


def bills_csv(accounts: Iterable[str], **kwargs: Any) -> str:
    """A billing CSV (as `centre import` reads it) of `make_bill(a, **kwargs)` per account."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_INPUT_FIELDS)
    for account in accounts:
        row = bill_input(account, **kwargs)
        writer.writerow(getattr(row, name) for name in _INPUT_FIELDS)
    return out.getvalue()


# --- ports ------------------------------------------------------------------------------


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose tool or privilege this machine lacks. In CI, which installs every tool
    (.ci/apt-packages) and runs as root, the same absence fails: nothing is skipped there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it (.ci/apt-packages, root)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for daemons that need a number)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- waiting ----------------------------------------------------------------------------

Check = Callable[[], T | Awaitable[T]]
What = str | Callable[[], str]


def _failure(what: What, timeout: float, check: Callable[..., Any]) -> AssertionError:
    said = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout} s waiting for {said or check}")


async def eventually(
    check: Check[T], timeout: float = 10.0, what: What = "", *, every: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:  # fmt: skip
    """Call `check` (plain or async) every `every` s until it returns something truthy; return it.

    `ignore` lists exceptions that mean "not yet" (a port not listening, a file not there);
    `what` (text, or a function giving text such as a log tail) is the failure message.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
        except ignore:
            pass
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, check)
        await asyncio.sleep(every)


def wait_until(
    check: Callable[[], T], timeout: float = 10.0, what: What = "", *, every: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:  # fmt: skip
    """`eventually` for blocking code (threads, subprocess drivers): sleeps between calls."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except ignore:
            pass
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, check)
        time.sleep(every)
