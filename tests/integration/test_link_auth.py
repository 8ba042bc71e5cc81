"""The authenticated link: a fake centre settles and applies nothing, the real centre refuses
replays, future timestamps and unsigned bodies before reading them, and signs its answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from centrefixtures import (
    ACCOUNTS,
    CYCLE,
    GOV,
    NODE,
    SECRET,
    Centre,
    bill_input,
    eventually,
    on_store,
    start_link,
)
from fakecentre import FakeCentre
from test_replication import BILL, all_delivered, bootstrapped, pay, pending

import outbox
from edge import mirror
from sync import answers, protocol, signing
from sync.centre.config import CentreSettings, NodeSettings
from sync.protocol import WireEntry

pytestmark = pytest.mark.both_stores

FORGED = f"{GOV}-{CYCLE}-{ACCOUNTS[1]}"
REASONS = {"unsigned": "unsigned answer", "wrong": "wrongly signed", "replay": "wrongly signed",
           "foreign": "'ALE'"}  # fmt: skip


def mirror_row(lk: object, bill_id: str) -> tuple[int, int] | None:
    row = lk.node.node.db.read(  # type: ignore[attr-defined]
        lambda c: c.execute(
            "SELECT paid, version FROM bills WHERE bill_id = ?", (bill_id,)
        ).fetchone()
    )
    return None if row is None else (int(row[0]), int(row[1]))


@pytest.mark.parametrize("mode", ["unsigned", "wrong", "replay", "foreign"])
async def test_a_fake_centre_settles_nothing_and_the_node_delivers_once_later(
    tmp_path: Path, mode: str
) -> None:
    fake = FakeCentre(SECRET.encode(), ACCOUNTS[1])
    await fake.start()
    lk, close = await start_link(tmp_path, centre_url=f"http://127.0.0.1:{fake.port}")
    fake.upstream = f"http://127.0.0.1:{lk.proxy.port}"
    try:
        await bootstrapped(lk)
        cursor = lk.node.node.db.read(lambda c: mirror.state(c).cursor)
        fake.mode = mode
        body = await pay(lk, BILL, 7_000, f"fake-{mode}")
        link = lk.node.node.link

        async def refused_twice() -> bool:
            # Both loops met the fake: a verdict and a bills page were refused.
            return (
                fake.forged >= (2 if mode == "foreign" else 3)
                and link.state == "degraded"
                and REASONS[mode] in (link.last_error or "")
            )

        await eventually(refused_twice, what=f"the node to refuse the {mode} answers")
        await asyncio.sleep(0.3)
        assert link.state == "degraded"  # answered, so never "down"
        if mode != "foreign":  # there the outbox passes through to the real centre
            found = lk.node.node.db.read(lambda c: outbox.get(c, body["payment_id"]))
            assert found is not None and found.verdict is None  # nothing settled
            assert pending(lk) == 1
        assert mirror_row(lk, FORGED) == (0, 1)  # nothing applied
        assert mirror_row(lk, "ALE-2026-05-0100000001") is None
        assert lk.node.node.db.read(lambda c: mirror.state(c).cursor) == cursor
        fake.mode = "pass"
        await all_delivered(lk)
        rows = await lk.centre.ledger()
        assert [(r[0], r[5]) for r in rows] == [(body["payment_id"], "applied")]
        assert await lk.centre.bill(BILL) == (7_000, 2)

        async def up() -> bool:
            return link.state == "up"

        await eventually(up, what="the link to recover")
    finally:
        await close()
        await fake.close()


@pytest.mark.parametrize("mode", ["unsigned", "wrong", "foreign"])
async def test_a_fake_snapshot_bootstraps_nothing(tmp_path: Path, mode: str) -> None:
    fake = FakeCentre(SECRET.encode(), ACCOUNTS[1])
    fake.mode = mode
    await fake.start()
    lk, close = await start_link(tmp_path, centre_url=f"http://127.0.0.1:{fake.port}")
    fake.upstream = f"http://127.0.0.1:{lk.proxy.port}"
    try:
        link = lk.node.node.link

        async def refused() -> bool:
            return fake.forged >= 2 and link.state == "degraded"

        await eventually(refused, what="the fake snapshot to be refused")
        assert REASONS[mode] in (link.last_error or "")
        state = lk.node.node.db.read(mirror.state)
        assert (state.cursor, state.bills) == (None, 0)
        fake.mode = "pass"
        await bootstrapped(lk)
        assert mirror_row(lk, FORGED) == (0, 1)
    finally:
        await close()
        await fake.close()


async def test_a_redirect_from_the_centre_url_is_never_followed(tmp_path: Path) -> None:
    """A man in the middle answers 307 towards a server of its own that would pass the signed
    request on to the real centre: the node sends nothing there and settles nothing."""
    fake = FakeCentre(SECRET.encode(), ACCOUNTS[1])
    trap = FakeCentre(SECRET.encode(), ACCOUNTS[1])
    await fake.start()
    await trap.start()
    lk, close = await start_link(tmp_path, centre_url=f"http://127.0.0.1:{fake.port}")
    fake.upstream = trap.upstream = f"http://127.0.0.1:{lk.proxy.port}"
    fake.redirect_to = f"http://127.0.0.1:{trap.port}"
    try:
        await bootstrapped(lk)
        fake.mode = "redirect"
        body = await pay(lk, BILL, 7_000, "redirected")
        link = lk.node.node.link

        async def refused() -> bool:
            # Both loops met the redirect (a replay and a pull) and took it as a refusal.
            return fake.forged >= 2 and link.state == "degraded"

        await eventually(refused, what="the node to refuse the redirects")
        assert "307" in (link.last_error or "")
        assert trap.seen == 0
        found = lk.node.node.db.read(lambda c: outbox.get(c, body["payment_id"]))
        assert found is not None and found.verdict is None
        fake.mode = "pass"
        await all_delivered(lk)
        rows = await lk.centre.ledger()
        assert [(r[0], r[5]) for r in rows] == [(body["payment_id"], "applied")]
        assert trap.seen == 0
    finally:
        await close()
        await fake.close()
        await trap.close()


# --- the real centre ------------------------------------------------------------------------

KEY = SECRET.encode()


@pytest.fixture
async def centre(tmp_path: Path) -> Centre:
    settings = on_store(CentreSettings(
        data_dir=tmp_path / "centre", port=0, governorate=GOV,
        nodes={NODE: NodeSettings(governorate=GOV, secret=KEY, next_secret=b"n" * 64)},
    ))  # fmt: skip
    settings.data_dir.mkdir()
    c = Centre(settings)
    await c.start()
    await c.db.upsert_bills(GOV, [bill_input(ACCOUNTS[0])], time.time())
    yield c  # type: ignore[misc]
    await c.stop()


def batch() -> bytes:
    import msgpack

    eid = outbox.new_entry_id(NODE, now=time.time())
    payload = msgpack.packb({
        "payment_id": eid, "bill_id": BILL, "account": ACCOUNTS[0], "amount": 1_000,
        "channel": "c", "idempotency_key": "k", "method": "cash", "cashier": "h",
        "accepted_at": "2026-06-01T00:00:00.000Z", "receipt": "DAM-20260601-1",
    })  # fmt: skip
    digest = outbox.entry_hash(outbox.GENESIS, 1, eid, "payment", payload)
    return protocol.encode_batch(
        NODE, [WireEntry(1, eid, "payment", payload, outbox.GENESIS, digest)]
    )


async def send(
    centre: Centre, headers: dict[str, str], body: bytes, path: str = f"/v1/nodes/{NODE}/outbox"
) -> tuple[int, str, bytes, dict[str, str]]:
    method = "POST" if path.endswith("outbox") else "GET"
    async with aiohttp.ClientSession() as s, s.request(
        method, f"http://127.0.0.1:{centre.port}{path}", data=body,
        headers={**headers, "Content-Type": protocol.CONTENT_TYPE},
    ) as resp:  # fmt: skip
        raw = await resp.read()
        return resp.status, protocol.decode_error(raw)[0], raw, dict(resp.headers)


async def test_a_replayed_request_is_401_and_records_nothing(
    centre: Centre, tmp_path: Path
) -> None:
    body = batch()
    path = f"/v1/nodes/{NODE}/outbox"
    headers = signing.sign(KEY, NODE, "POST", path, body, int(time.time()))
    status, _, raw, answer = await send(centre, headers, body)
    assert status == 200
    answers.check_answer(KEY, headers["X-Edge-Signature"], 200, answer, raw)
    assert (await send(centre, headers, body))[:2] == (401, "unauthorized")
    # Remembered across a restart, too.
    await centre.stop()
    await centre.start()
    assert (await send(centre, headers, body))[:2] == (401, "unauthorized")
    assert len(await centre.ledger()) == 1
    # A fresh nonce on the same body is a retry, answered from the record.
    again = signing.sign(KEY, NODE, "POST", path, body, int(time.time()))
    status, _, raw, _ = await send(centre, again, body)
    assert status == 200 and protocol.decode_reply(raw).results[0].verdict == "duplicate"


async def test_a_future_timestamp_is_refused_with_a_signed_answer(centre: Centre) -> None:
    body = batch()
    headers = signing.sign(
        KEY, NODE, "POST", f"/v1/nodes/{NODE}/outbox", body, int(time.time()) + 400
    )
    status, code, raw, answer = await send(centre, headers, body)
    assert (status, code) == (401, "stale_timestamp")
    answers.check_answer(KEY, headers["X-Edge-Signature"], 401, answer, raw)
    assert await centre.ledger() == []


async def test_the_next_key_works_and_its_answers_are_signed_with_it(centre: Centre) -> None:
    path = f"/v1/governorates/{GOV}/bills/changes?since=0&limit=10"
    nxt = b"n" * 64
    headers = signing.sign(nxt, NODE, "GET", path, b"", int(time.time()))
    status, _, raw, answer = await send(centre, headers, b"", path)
    assert status == 200
    answers.check_answer(nxt, headers["X-Edge-Signature"], 200, answer, raw)
    with pytest.raises(Exception, match="wrongly signed"):
        answers.check_answer(KEY, headers["X-Edge-Signature"], 200, answer, raw)


async def _raw_request(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        # Nothing of the body is sent: the answer must come anyway.
        return await asyncio.wait_for(reader.read(4096), 5.0)
    finally:
        writer.close()


async def test_an_unsigned_huge_body_is_refused_before_it_is_sent(centre: Centre) -> None:
    head = (
        f"POST /v1/nodes/{NODE}/outbox HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/msgpack\r\nContent-Length: 15728640\r\n\r\n"
    ).encode()
    answer = await _raw_request(centre.port, head)
    assert answer.startswith(b"HTTP/1.1 401")
    assert b"unauthorized" in answer and b"unknown" not in answer


async def test_a_signed_oversized_body_is_413_before_it_is_read(centre: Centre) -> None:
    path = f"/v1/nodes/{NODE}/outbox"
    headers = signing.sign(KEY, NODE, "POST", path, b"x", int(time.time()))
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n{lines}"
        "Content-Length: 17000000\r\n\r\n"
    ).encode()
    answer = await _raw_request(centre.port, head)
    assert answer.startswith(b"HTTP/1.1 413") and b"body_too_large" in answer


async def test_a_body_that_is_not_the_signed_one_is_401(centre: Centre) -> None:
    body = batch()
    headers = signing.sign(KEY, NODE, "POST", f"/v1/nodes/{NODE}/outbox", body, int(time.time()))
    assert (await send(centre, headers, body + b"\x00"))[:2] == (401, "unauthorized")
    assert await centre.ledger() == []
