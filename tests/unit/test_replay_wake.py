"""The replayer on sync.loop: each attempt a fresh signed request, the durable schedule equal
to the wait it makes, and the rules for waking it (payments, answers from the centre).

No network: a scripted session stands in for aiohttp, an inline writer for the writer thread,
and the sleep is injected, so the retries take no time.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

import outbox
from outbox import RetryPolicy
from sync import answers, protocol, signing
from sync.errors import CentreRefused, CentreUnavailable
from sync.link import Link
from sync.replayer import ReplayConfig, Replayer, StepResult

POLICY = RetryPolicy(base_s=1.0, factor=2.0, cap_s=60.0)


SECRET = b"s" * 32


class Answer:
    def __init__(self, status: int, body: bytes = b"", signature: str = "") -> None:
        mac = answers.answer_mac(SECRET, signature, status, "", body)
        self.status, self.body = status, body
        self.headers = {"Date": "", answers.ANSWER_HEADER: mac}

    async def read(self) -> bytes:
        return self.body

    async def __aenter__(self) -> Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class Session:
    """Answers each POST with the next scripted status (200: every entry applied)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.posts: list[tuple[io.BytesIO, dict[str, str]]] = []

    def post(
        self, url: str, data: io.BytesIO, headers: dict[str, str], *, allow_redirects: bool
    ) -> Answer:
        assert allow_redirects is False  # a signed request goes to the centre only
        self.posts.append((data, headers))
        status = self.statuses.pop(0)
        if status == 0:
            raise ConnectionResetError("simulated")
        if status != 200:
            error = protocol.encode_error("internal_error", "scripted")
            return Answer(status, error, headers[signing.SIGNATURE_HEADER])
        batch = protocol.decode_batch(data.getvalue())
        results = [protocol.Verdict(e.seq, e.id, "applied", None, 2) for e in batch.entries]
        reply = protocol.encode_reply(results, batch.entries[-1].seq)
        return Answer(200, reply, headers[signing.SIGNATURE_HEADER])


class Writer:
    def __init__(self, conn: sqlite3.Connection, tx: Callable[..., Any]) -> None:
        self.conn, self.tx = conn, tx

    async def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return self.tx(self.conn, fn)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def make(
    conn: sqlite3.Connection, tx: Callable[..., Any], statuses: list[int], entries: int = 3
) -> tuple[Replayer, Session, Sleeps, list[StepResult]]:
    for i in range(entries):
        tx(conn, lambda c, i=i: outbox.append(c, "dam-1", "payment", b"p%d" % i, now=1000.0 + i))
    ticks = iter(range(1_780_000_000, 1_790_000_000, 7))  # the clock moves between attempts
    session, sleeps, results = Session(statuses), Sleeps(), []
    config = ReplayConfig(node="dam-1", url="http://centre", secret=SECRET, policy=POLICY)
    replayer = Replayer(config, Writer(conn, tx), session, Link(clock=lambda: next(ticks)),  # type: ignore[arg-type]
                        clock=lambda: 5000.0, on_result=results.append, sleep=sleeps)  # fmt: skip
    return replayer, session, sleeps, results


async def test_each_attempt_is_a_fresh_signed_request_and_the_schedule_is_the_wait(
    conn: sqlite3.Connection, tx: Callable[..., Any]
) -> None:
    replayer, session, sleeps, results = make(conn, tx, [503, 0, 200])
    done = await replayer.step()
    assert done.verdicts == {"applied": 3} and replayer.failures == 0
    bodies = {id(data) for data, _ in session.posts}
    stamps = [h[signing.TIMESTAMP_HEADER] for _, h in session.posts]
    assert len(bodies) == 3 and len(set(stamps)) == 3  # new body stream, new timestamp
    assert [r.error is not None for r in results] == [True, True, False]
    assert results[0].error == "centre answered 503"
    assert (results[1].error or "").startswith("transport: ConnectionResetError")
    # Every wait tenacity made is the one reported and written as next_attempt_at.
    assert sleeps.waits == [r.retry_in_s for r in results[:2]]
    for failures, wait in enumerate(sleeps.waits, start=1):
        assert POLICY.ceiling(failures) / 2 <= wait <= POLICY.ceiling(failures)
    rows = conn.execute("SELECT state, attempts FROM outbox_entries").fetchall()
    assert rows == [("delivered", 2)] * 3


async def test_a_step_whose_attempts_all_fail_raises_with_the_schedule_recorded(
    conn: sqlite3.Connection, tx: Callable[..., Any]
) -> None:
    replayer, session, sleeps, results = make(conn, tx, [502, 503, 504])
    with pytest.raises(CentreUnavailable) as raised:
        await replayer.step()
    assert len(session.posts) == 3 and len(sleeps.waits) == 2 and replayer.failures == 3
    due = conn.execute("SELECT DISTINCT next_attempt_at, attempts FROM outbox_entries").fetchall()
    assert due == [(5000.0 + results[-1].retry_in_s, 3)]
    # run() waits exactly that long before the next step: the last failure is not recounted.
    assert replayer.failure(raised.value) == results[-1].retry_in_s
    assert replayer.failures == 3


async def test_a_refusal_is_one_attempt_and_a_slow_retry(
    conn: sqlite3.Connection, tx: Callable[..., Any]
) -> None:
    replayer, session, _, results = make(conn, tx, [409, 200])
    with pytest.raises(CentreRefused):
        await replayer.step()
    assert len(session.posts) == 1 and results[0].config_fault
    assert results[0].retry_in_s == replayer.config.config_fault_retry_s and replayer.holding


def replayer_at(link: Link, now: list[float]) -> Replayer:
    config = ReplayConfig(node="dam-1", url="http://centre", secret=SECRET, policy=POLICY)
    return Replayer(config, writer=None, session=None, link=link,  # type: ignore[arg-type]
                    monotonic=lambda: now[0])  # fmt: skip


def wakes(r: Replayer, notify: Callable[[], None]) -> bool:
    notify()
    woken = r.woken
    r._wake.clear()
    return woken


async def test_a_payment_wakes_a_healthy_replayer_every_time() -> None:
    r = replayer_at(Link(), [0.0])
    assert all(wakes(r, r.notify) for _ in range(5))


async def test_payments_while_backing_off_wake_at_most_once_per_base_interval() -> None:
    link, now = Link(), [100.0]
    r = replayer_at(link, now)
    r.failure(CentreUnavailable("down"))
    link.failed("down")  # one failure: degraded, not down
    got = []
    for t in (100.0, 100.2, 100.9, 101.0, 101.5, 102.1):
        now[0] = t
        got.append(wakes(r, r.notify))
    assert got == [True, False, False, True, False, True]
    assert r.failures == 1  # the count is kept: a wake that fails costs one attempt


async def test_payments_while_the_link_is_down_or_refused_do_not_wake() -> None:
    link, now = Link(), [0.0]
    r = replayer_at(link, now)
    r.failure(CentreUnavailable("down"))
    for _ in range(3):
        link.failed("down")
    assert link.state == "down"
    assert not any(wakes(r, r.notify) for _ in range(10))
    link.ok()  # the puller got through: the replayer resumes, its backoff reset
    assert r.woken and r.failures == 0
    r._wake.clear()
    r.failure(CentreRefused(409, "chain_broken", "seq 2"))
    assert r.holding
    now[0] = 10.0
    assert not wakes(r, r.notify)
    assert not wakes(r, link.ok)
    assert wakes(r, r.trigger) and r.failures == 0  # the operator's "replay now"
