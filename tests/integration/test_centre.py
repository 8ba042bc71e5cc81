"""The reference centre on a real loopback port, on SQLite and on PostgreSQL (both_stores):
feeds and the ledger."""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgpack
import pytest
from aiohttp.test_utils import TestServer
from centrefixtures import on_store
from helpers import bill_input

import outbox
from sync import protocol
from sync.centre import cli, seed
from sync.centre.app import STORE, create_app
from sync.centre.config import CentreSettings, NodeSettings, load_settings
from sync.centre.connect import open_store
from sync.centre.stores import CentreDB
from sync.protocol import WireEntry
from sync.snapshot import SnapshotReader

NODE, GOV = "dam-1", "DAM"
SECRETS = {
    "dam-1": b"secret-of-dam-1-0123456789-0123456789",
    "ale-1": b"secret-of-ale-1-0123456789-0123456789",
}
CYCLE = "2026-05"
T = TypeVar("T")
pytestmark = pytest.mark.both_stores


# Bills every test starts with: unpaid, fully paid, partly paid, and one of Aleppo.
UNPAID, PAID, PARTLY = "0100000001", "0100000002", "0100000003"
ALEPPO = "0200000001"


def bid(account: str, gov: str = GOV) -> str:
    return f"{gov}-{CYCLE}-{account}"


@dataclass
class Chain:
    """A node's outbox as the centre should see it: consecutive, hash-linked entries."""

    node: str = NODE
    seq: int = 0
    prev: str = outbox.GENESIS
    entries: list[WireEntry] = field(default_factory=list)

    def add(self, kind: str, payload: bytes, entry_id: str | None = None) -> WireEntry:
        self.seq += 1
        eid = entry_id or outbox.new_entry_id(self.node)
        digest = outbox.entry_hash(self.prev, self.seq, eid, kind, payload)
        entry = WireEntry(self.seq, eid, kind, payload, self.prev, digest)
        self.prev = digest
        self.entries.append(entry)
        return entry

    def pay(self, acct: str, amount: int, gov: str = GOV, **over: Any) -> WireEntry:
        eid = outbox.new_entry_id(self.node)
        payload: dict[str, Any] = {
            "payment_id": eid, "bill_id": bid(acct, gov), "account": acct, "amount": amount,
            "channel": "counter-1", "idempotency_key": eid, "method": "cash", "cashier": "c1",
            "accepted_at": "2026-06-01T08:00:00.000Z", "receipt": "DAM-20260601-000001",
        }  # fmt: skip
        payload.update(over)
        return self.add("payment", msgpack.packb(payload, use_bin_type=True), eid)


@dataclass
class Centre:
    server: TestServer
    session: aiohttp.ClientSession
    settings: CentreSettings

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def request(
        self, method: str, path: str, body: bytes = b"", *, node: str = NODE,
        secret: bytes | None = None, timestamp: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:  # fmt: skip
        signed = protocol.sign(
            secret or SECRETS.get(node, b"x"), node, method, path, body,
            int(time.time() if timestamp is None else timestamp),
        )  # fmt: skip
        signed["Content-Type"] = protocol.CONTENT_TYPE
        signed.update(headers or {})
        # A file-like body: aiohttp warns that large raw bytes may block the event loop.
        data = io.BytesIO(body)
        async with self.session.request(method, self.url(path), data=data, headers=signed) as resp:
            return resp.status, await resp.read(), resp.headers

    async def post(
        self, entries: list[WireEntry], node: str = NODE, **kw: Any
    ) -> tuple[int, bytes]:
        body = protocol.encode_batch(node, entries)
        status, raw, _ = await self.request(
            "POST", f"/v1/nodes/{node}/outbox", body, node=node, **kw
        )
        return status, raw

    async def send(self, entries: list[WireEntry]) -> protocol.Reply:
        status, raw = await self.post(entries)
        assert status == 200, protocol.decode_error(raw)
        return protocol.decode_reply(raw)

    @property
    def db(self) -> CentreDB:
        return self.server.app[STORE]

    async def ledger(self, node: str | None = None) -> list[tuple[Any, ...]]:
        """(id, node, seq, bill_id, amount, verdict) in (node, seq) order."""
        return [row[:6] for row in await self.db.ledger_rows(node)]

    async def bill(self, account: str) -> dict[str, Any]:
        found = await self.db.bill(bid(account))
        assert found is not None
        return found


def centre_settings_for(tmp_path: Path) -> CentreSettings:
    return on_store(
        CentreSettings(
            data_dir=tmp_path / "centre",
            governorate=GOV,
            nodes={
                "dam-1": NodeSettings(governorate="DAM", secret=SECRETS["dam-1"]),
                "ale-1": NodeSettings(governorate="ALE", secret=SECRETS["ale-1"]),
            },
        )
    )


async def centre_write(settings: CentreSettings, job: Callable[[CentreDB], Awaitable[T]]) -> T:
    """`job(store)` on the centre's store, opened for it (with the app running or not)."""
    db = open_store(settings)
    await db.open()
    try:
        return await job(db)
    finally:
        await db.close()


def query(settings: CentreSettings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of one statement on the centre's store, from a test that is not async."""
    return asyncio.run(centre_write(settings, lambda db: db.query(sql, *args)))


@pytest.fixture
async def centre_settings(tmp_path: Path) -> CentreSettings:
    settings = centre_settings_for(tmp_path)
    now = time.time()

    async def load(db: CentreDB) -> None:
        rows = [
            bill_input(UNPAID),
            bill_input(PAID, amount=50_000, paid=50_000),
            bill_input(PARTLY, amount=80_000, paid=30_000),
        ]
        await db.upsert_bills(GOV, rows, now)
        await db.upsert_bills("ALE", [bill_input(ALEPPO)], now)

    await centre_write(settings, load)
    return settings


@pytest.fixture
async def centre(centre_settings: CentreSettings, centre_store: str) -> AsyncIterator[Centre]:
    server = TestServer(create_app(centre_settings), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        running = Centre(server, session, centre_settings)
        assert running.db.kind == centre_store  # the store the test is parametrized with
        yield running
    await server.close()


# --- basics ---------------------------------------------------------------------------------


async def test_healthz_and_errors_are_msgpack_frames_with_date(centre: Centre) -> None:
    async with centre.session.get(centre.url("/healthz")) as resp:
        assert resp.status == 200
        assert "Date" in resp.headers
    async with centre.session.get(centre.url("/nope")) as resp:
        assert resp.status == 404
        assert protocol.decode_error(await resp.read())[0] == "not_found"
        assert "Date" in resp.headers
    async with centre.session.get(centre.url("/v1/nodes/dam-1/outbox")) as resp:
        assert resp.status == 405
        assert protocol.decode_error(await resp.read())[0] == "method_not_allowed"


# --- outbox batches -------------------------------------------------------------------------


async def test_batch_recorded_once_and_resend_is_duplicate(centre: Centre) -> None:
    chain = Chain()
    chain.pay(UNPAID, 40_000)
    first = await centre.send(chain.entries)
    assert [(r.verdict, r.version) for r in first.results] == [("applied", 2)]
    assert first.acked_seq == 1
    again = await centre.send(chain.entries)
    assert [(r.verdict, r.reason, r.version) for r in again.results] == [
        ("duplicate", "applied", 2)
    ]
    assert again.acked_seq == 1
    assert len(await centre.ledger()) == 1
    assert (await centre.bill(UNPAID))["paid"] == 40_000
    assert (await centre.bill(UNPAID))["version"] == 2


async def test_payment_verdicts_and_versions(centre: Centre) -> None:
    chain = Chain()
    chain.pay(UNPAID, 30_000)  # partial: 70,000 left
    chain.pay(UNPAID, 70_000)  # pays it off
    chain.pay(PARTLY, 60_000)  # 50,000 due: 10,000 becomes credit
    chain.pay(PAID, 5_000)  # already paid: all credit
    chain.pay(UNPAID, 1_000)  # paid off earlier in this batch: credit
    reply = await centre.send(chain.entries)
    # Credit is published on its bill (protocol 3): a credited payment changes the bill too.
    assert [(r.seq, r.verdict, r.reason, r.version, r.credit) for r in reply.results] == [
        (1, "applied", None, 2, 0),
        (2, "applied", None, 3, 0),
        (3, "applied", None, 2, 10_000),
        (4, "credited", None, 2, 5_000),
        (5, "credited", None, 4, 1_000),
    ]
    unpaid, partly, paid = (
        (await centre.bill(UNPAID)),
        (await centre.bill(PARTLY)),
        (await centre.bill(PAID)),
    )
    assert (unpaid["paid"], unpaid["version"], unpaid["credit"]) == (100_000, 4, 1_000)
    assert (partly["paid"], partly["version"], partly["credit"]) == (80_000, 2, 10_000)
    assert (paid["version"], paid["credit"]) == (2, 5_000)
    credits = await centre.db.query("SELECT source, account, amount FROM credits ORDER BY id")
    ids = [e.id for e in chain.entries]
    assert credits == [(ids[2], PARTLY, 10_000), (ids[3], PAID, 5_000), (ids[4], UNPAID, 1_000)]
    rows = await centre.ledger()
    assert [(r[2], r[3], r[4], r[5]) for r in rows] == [
        (1, bid(UNPAID), 30_000, "applied"), (2, bid(UNPAID), 70_000, "applied"),
        (3, bid(PARTLY), 60_000, "applied"), (4, bid(PAID), 5_000, "credited"),
        (5, bid(UNPAID), 1_000, "credited"),
    ]  # fmt: skip


async def test_rejections_still_advance_the_chain(centre: Centre) -> None:
    chain = Chain()
    chain.pay("0999999999", 1_000)
    chain.pay(ALEPPO, 1_000, gov="ALE")
    chain.pay(UNPAID, 0)
    chain.pay(UNPAID, 1_000, account="0100000009")
    chain.add("payment", b"\xc1not msgpack")
    chain.add("parcel", msgpack.packb({"kwh": 5}))  # no such kind (meter_reading is, from 4)
    chain.pay(UNPAID, 1_000)
    reply = await centre.send(chain.entries)
    assert [(r.verdict, r.reason) for r in reply.results] == [
        ("rejected", "unknown_bill"), ("rejected", "governorate_mismatch"),
        ("rejected", "bad_payload"), ("rejected", "account_mismatch"),
        ("rejected", "bad_payload"), ("rejected", "unknown_kind"), ("applied", None),
    ]  # fmt: skip
    assert reply.acked_seq == 7
    # A resent rejection stays a rejection, so the node's operator still sees it.
    again = await centre.send(chain.entries[:1])
    assert [(r.verdict, r.reason) for r in again.results] == [("rejected", "unknown_bill")]
    chain.pay(UNPAID, 1_000)
    assert [r.verdict for r in (await centre.send(chain.entries[-1:])).results] == ["applied"]


async def test_batches_continue_across_requests_with_overlap(centre: Centre) -> None:
    chain = Chain()
    for _ in range(6):
        chain.pay(UNPAID, 1_000)
    await centre.send(chain.entries[:3])
    reply = await centre.send(chain.entries[1:6])  # a retry that overlaps what was recorded
    assert [r.verdict for r in reply.results] == [
        "duplicate",
        "duplicate",
        "applied",
        "applied",
        "applied",
    ]
    assert reply.acked_seq == 6
    assert len(await centre.ledger()) == 6


async def assert_refused(centre: Centre, entries: list[WireEntry], status: int, code: str) -> None:
    before = await centre.ledger()
    got, raw = await centre.post(entries)
    assert (got, protocol.decode_error(raw)[0]) == (status, code), protocol.decode_error(raw)
    assert (await centre.ledger()) == before


async def test_chain_gap_reorder_and_edit_are_refused_whole(centre: Centre) -> None:
    chain = Chain()
    for _ in range(4):
        chain.pay(UNPAID, 1_000)
    e1, e2, e3, e4 = chain.entries
    await assert_refused(centre, [e2, e3], 409, "chain_gap")  # nothing recorded yet: gap
    await assert_refused(centre, [e1, e3], 409, "chain_gap")
    await assert_refused(centre, [e1, e3, e2], 409, "chain_gap")  # reorder
    edited = WireEntry(e2.seq, e2.id, e2.kind, e2.payload + b"\x00", e2.prev_hash, e2.hash)
    await assert_refused(centre, [e1, edited], 409, "chain_broken")
    rehashed = WireEntry(e2.seq, e2.id, e2.kind, e2.payload, "ab" * 32, e2.hash)
    await assert_refused(centre, [e1, rehashed], 409, "chain_broken")
    assert (await centre.bill(UNPAID))["paid"] == 0
    await centre.send([e1, e2])
    other = Chain(seq=2, prev=e2.hash)
    other.pay(UNPAID, 5)
    other.seq, other.prev = 1, outbox.GENESIS
    forged = other.pay(UNPAID, 5)  # seq 2 again under a new id
    await assert_refused(centre, [forged], 409, "chain_broken")
    changed = WireEntry(e2.seq, e2.id, e2.kind, e2.payload, e2.prev_hash, "cd" * 32)
    await assert_refused(centre, [changed, e3], 409, "chain_broken")  # known id, other hash
    reply = await centre.send([e3, e4])
    assert reply.acked_seq == 4
    assert (await centre.bill(UNPAID))["paid"] == 4_000


async def test_bad_signatures_are_401_and_record_nothing(centre: Centre) -> None:
    chain = Chain()
    chain.pay(UNPAID, 1_000)
    cases = [
        ({"secret": b"wrong-secret-0123456789-0123456789"}, "unauthorized"),
        ({"timestamp": time.time() - 3600}, "stale_timestamp"),
        ({"timestamp": time.time() + 3600}, "stale_timestamp"),  # the window is symmetric
        ({"headers": {"X-Edge-Node": "xyz-9"}}, "unauthorized"),  # no enumeration of nodes
        ({"headers": {"X-Edge-Key": "00000000"}}, "unauthorized"),
        ({"headers": {"X-Edge-Signature": ""}}, "unauthorized"),
        ({"headers": {"X-Edge-Nonce": ""}}, "unauthorized"),
        ({"headers": {"X-Edge-Digest": "0" * 64}}, "unauthorized"),
    ]
    for kwargs, code in cases:
        status, raw = await centre.post(chain.entries, **kwargs)
        assert (status, protocol.decode_error(raw)[0]) == (401, code)
    assert (await centre.ledger()) == []


async def test_stale_clock_corrects_from_the_date_header(centre: Centre) -> None:
    chain = Chain()
    chain.pay(UNPAID, 1_000)
    body = protocol.encode_batch(NODE, chain.entries)
    path = f"/v1/nodes/{NODE}/outbox"
    status, _, headers = await centre.request("POST", path, body, timestamp=time.time() - 86_400)
    assert status == 401
    server_now = aiohttp.helpers.parse_http_date(headers["Date"])  # type: ignore[index]
    assert server_now is not None
    status, _, _ = await centre.request("POST", path, body, timestamp=server_now.timestamp())
    assert status == 200


async def test_node_mismatches_are_403(centre: Centre) -> None:
    chain = Chain()
    chain.pay(UNPAID, 1_000)
    body = protocol.encode_batch(NODE, chain.entries)
    status, raw, _ = await centre.request("POST", "/v1/nodes/ale-1/outbox", body, node="dam-1")
    assert (status, protocol.decode_error(raw)[0]) == (403, "node_mismatch")
    status, raw, _ = await centre.request("POST", "/v1/nodes/ale-1/outbox", body, node="ale-1")
    assert (status, protocol.decode_error(raw)[0]) == (403, "node_mismatch")
    assert (await centre.ledger()) == []


async def test_bad_frames_and_limits(centre: Centre) -> None:
    path = f"/v1/nodes/{NODE}/outbox"
    for body in (
        b"",
        b"\xc1",
        msgpack.packb({"v": protocol.PROTOCOL_VERSION, "node": NODE, "entries": [1]}),
    ):
        status, raw, _ = await centre.request("POST", path, body)
        assert (status, protocol.decode_error(raw)[0]) == (400, "bad_frame")
    status, raw, _ = await centre.request(
        "POST", path, msgpack.packb({"v": 7, "node": NODE, "entries": []})
    )
    assert (status, protocol.decode_error(raw)[0]) == (400, "unsupported_version")
    # A node still on protocol 2 (before credit) is told plainly, and nothing is recorded.
    status, raw, _ = await centre.request(
        "POST", path, msgpack.packb({"v": 2, "node": NODE, "entries": []})
    )
    code, detail = protocol.decode_error(raw)
    assert (status, code) == (400, "unsupported_version")
    assert "version 2 is not supported (this side speaks 4)" in detail
    status, raw, _ = await centre.request(
        "POST", path, b"{}", headers={"Content-Type": "application/json"}
    )
    assert (status, protocol.decode_error(raw)[0]) == (415, "unsupported_media_type")
    chain = Chain()
    chain.pay(UNPAID, 1)
    one = chain.entries[0]
    status, raw = await centre.post([one] * (protocol.MAX_BATCH + 1))
    assert (status, protocol.decode_error(raw)[0]) == (413, "batch_too_large")
    status, raw, _ = await centre.request("POST", path, b"\x00" * (17 * 1024 * 1024))
    assert (status, protocol.decode_error(raw)[0]) == (413, "body_too_large")
    assert (await centre.ledger()) == []


# --- change feed and snapshot ---------------------------------------------------------------


async def get_changes(centre: Centre, since: int, limit: int, node: str = NODE) -> protocol.Changes:
    status, raw, _ = await centre.request(
        "GET", f"/v1/governorates/DAM/bills/changes?since={since}&limit={limit}", node=node
    )
    assert status == 200, protocol.decode_error(raw)
    return protocol.decode_changes(raw)


async def test_changes_feed_pages_with_cursor_and_more(centre: Centre) -> None:
    accounts = [f"01000001{n:02d}" for n in range(25)]
    await centre_write(
        centre.settings,
        lambda db: db.upsert_bills(GOV, [bill_input(a) for a in accounts], time.time()),
    )
    seen: list[str] = []
    cursor, more = 0, True
    while more:
        page = await get_changes(centre, cursor, 10)
        assert len(page.changes) <= 10
        seen += [b["bill_id"] for b in page.changes]
        assert page.cursor >= cursor
        cursor, more = page.cursor, page.more
    assert seen == [bid(UNPAID), bid(PAID), bid(PARTLY)] + [bid(a) for a in accounts]
    assert all(b.startswith("DAM-") for b in seen)
    empty = await get_changes(centre, cursor, 10)
    assert (empty.changes, empty.cursor, empty.more) == ([], cursor, False)
    # A payment moves its bill to the end of the feed with a higher version.
    chain = Chain()
    chain.pay(PARTLY, 1_000)
    await centre.send(chain.entries)
    page = await get_changes(centre, cursor, 10)
    assert [(b["bill_id"], b["paid"], b["version"]) for b in page.changes] == [
        (bid(PARTLY), 31_000, 2)
    ]


@pytest.mark.parametrize(
    "query",
    [
        "since=-1",
        "since=abc",
        "limit=0",
        "limit=10001",
        "since=99999999999999999999",
        "since=%D9%A3",
    ],
)
async def test_bad_change_queries_are_400(centre: Centre, query: str) -> None:
    status, raw, _ = await centre.request("GET", f"/v1/governorates/DAM/bills/changes?{query}")
    assert (status, protocol.decode_error(raw)[0]) == (400, "bad_query")


async def test_other_governorate_is_forbidden(centre: Centre) -> None:
    for path in (
        "/v1/governorates/DAM/bills/changes?since=0",
        "/v1/governorates/DAM/bills/snapshot",
    ):
        status, raw, _ = await centre.request("GET", path, node="ale-1")
        assert (status, protocol.decode_error(raw)[0]) == (403, "forbidden_governorate")
    status, raw, _ = await centre.request(
        "GET", "/v1/governorates/DAM/bills/changes", secret=b"bad"
    )
    assert (status, protocol.decode_error(raw)[0]) == (401, "unauthorized")


async def test_snapshot_streams_every_bill_then_its_cursor(centre: Centre) -> None:
    result = await centre_write(
        centre.settings,
        lambda db: db.upsert_bills(
            GOV, seed.make_bills(GOV, 3_000, CYCLE, random.Random(7)), time.time()
        ),
    )
    assert result.inserted == 3_000
    path = "/v1/governorates/DAM/bills/snapshot"
    headers = protocol.sign(SECRETS[NODE], NODE, "GET", path, b"", int(time.time()))
    reader = SnapshotReader(SECRETS[NODE], headers["X-Edge-Signature"], governorate=GOV)
    got: list[dict[str, Any]] = []
    async with centre.session.get(centre.url(path), headers=headers) as resp:
        assert resp.status == 200
        assert resp.content_type == protocol.CONTENT_TYPE
        async for chunk in resp.content.iter_chunked(4096):
            got += reader.feed(chunk)
    reader.finish()
    assert reader.count == len(got) == 3_003
    assert len({b["bill_id"] for b in got}) == 3_003
    assert {b["governorate"] for b in got} == {GOV}
    assert [(reader.cursor,)] == await centre.db.query("SELECT last FROM change_counter")
    after = await get_changes(centre, reader.cursor or 0, 10)
    assert after.changes == []


async def test_abandoned_snapshot_leaves_the_centre_working(centre: Centre) -> None:
    await centre_write(
        centre.settings,
        lambda db: db.upsert_bills(
            GOV, seed.make_bills(GOV, 20_000, CYCLE, random.Random(3)), time.time()
        ),
    )
    path = "/v1/governorates/DAM/bills/snapshot"
    headers = protocol.sign(SECRETS[NODE], NODE, "GET", path, b"", int(time.time()))
    async with centre.session.get(centre.url(path), headers=headers) as resp:
        assert resp.status == 200
        await resp.content.read(1000)
        resp.close()
    chain = Chain()
    chain.pay(UNPAID, 1_000)
    assert [r.verdict for r in (await centre.send(chain.entries)).results] == ["applied"]
    page = await get_changes(centre, 0, 5)
    assert page.more


# --- CLI ------------------------------------------------------------------------------------


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "dam-1.secret").write_text(SECRETS["dam-1"].decode() + "\n", encoding="utf-8")
    (tmp_path / "dam-1.secret").chmod(0o600)
    config = tmp_path / "centre.toml"
    database = on_store(CentreSettings()).database
    config.write_text(
        f'[centre]\ndata_dir = "data"\ngovernorate = "DAM"\nport = 0\ndatabase = "{database}"\n'
        '[nodes.dam-1]\ngovernorate = "DAM"\nsecret_file = "dam-1.secret"\n',
        encoding="utf-8",
    )
    return config


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edge")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


CSV = (
    "account,cycle,name,address,meter,kwh,amount,paid,due_date\n"
    "0100000101,2026-05,سعاد الحلبي,دمشق، المزة،  شارع 12,EM-1,420,150000,0,2026-07-15\n"
    '0100000102,2026-05,"نزار القباني","دمشق، أبو رمانة",EM-2,900,480000,100000,2026-07-15\n'
)


def test_cli_import_reimport_and_bad_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    data = tmp_path / "bills.csv"
    data.write_text(CSV, encoding="utf-8")
    assert run_cli("centre", "import", "--config", str(config), str(data)) == 0
    settings = load_settings(config)

    def state() -> list[tuple[Any, ...]]:
        return query(
            settings,
            "SELECT bill_id, amount, paid, version, change_seq FROM bills ORDER BY bill_id",
        )

    assert state() == [
        ("DAM-2026-05-0100000101", 150_000, 0, 1, 1),
        ("DAM-2026-05-0100000102", 480_000, 100_000, 1, 2),
    ]
    assert run_cli("centre", "import", "--config", str(config), str(data)) == 0
    assert state()[0][3:] == (1, 1)  # unchanged: nothing moves
    data.write_text(CSV.replace("150000", "160000"), encoding="utf-8")
    assert run_cli("centre", "import", "--config", str(config), str(data)) == 0
    assert state()[0] == ("DAM-2026-05-0100000101", 160_000, 0, 2, 3)
    before = state()
    for bad, needle in [
        (CSV + "0100000103,2026-05,x,y,EM-3,1,10.5,0,2026-07-15\n", "line 4: amount"),
        (CSV + "0100000103,2026-13,x,y,EM-3,1,10,0,2026-07-15\n", "line 4: cycle"),
        (CSV + "0100000103,2026-05,x,y,EM-3,1,10,20,2026-07-15\n", "line 4: paid"),
        (CSV + "0100000101,2026-05,x,y,EM-3,1,10,0,2026-07-15\n", "line 4: account 0100000101"),
        (CSV + "0100000103,2026-05,x,y\n", "line 4"),
        (CSV.replace("due_date", "due"), "line 1"),
    ]:
        data.write_text(bad.replace("160000", "170000"), encoding="utf-8")
        assert run_cli("centre", "import", "--config", str(config), str(data)) == 1
        assert needle in capsys.readouterr().err
        assert state() == before


def test_cli_seed_pay_cycle_and_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert (
        run_cli(
            "centre",
            "seed",
            "--config",
            str(config),
            "--bills",
            "50",
            "--cycle",
            CYCLE,
            "--seed",
            "1",
        )
        == 0
    )
    settings = load_settings(config)
    rows = query(settings, "SELECT bill_id, account, name, amount, paid FROM bills")
    assert len(rows) == 50
    assert all(len(r[1]) == 10 and r[1].isdigit() for r in rows)
    assert all(0 <= r[4] <= r[3] for r in rows)
    unpaid = next(r for r in rows if r[4] == 0)
    capsys.readouterr()
    assert run_cli("centre", "pay", "--config", str(config), unpaid[0], str(unpaid[3] + 500)) == 0
    assert "credit 500, version 2" in capsys.readouterr().out
    assert run_cli("centre", "pay", "--config", str(config), "DAM-2026-05-1", "5") == 1
    assert run_cli("centre", "cycle", "--config", str(config), "--cycle", "2026-07") == 0
    assert run_cli("centre", "cycle", "--config", str(config), "--cycle", "2026-07") == 0
    assert query(settings, "SELECT COUNT(*) FROM bills WHERE cycle = '2026-07'") == [(50,)]
    capsys.readouterr()
    assert run_cli("centre", "ledger", "--config", str(config)) == 0
    # The old six columns first (scripts keep working), then clearing's (issue 16).
    assert capsys.readouterr().out == (
        "id,node,seq,bill_id,amount,verdict,accepted_at,recorded_at,receipt,method,channel,"
        "cashier,kind\n"
    )


def test_cli_bad_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "centre.toml"
    config.write_text('[centre]\nport = "x"\n', encoding="utf-8")
    assert run_cli("centre", "ledger", "--config", str(config)) == 2
    assert "centre.port" in capsys.readouterr().err
    config.write_text(
        '[nodes.dam-1]\ngovernorate = "DAM"\nsecret_file = "none"\n', encoding="utf-8"
    )
    assert run_cli("centre", "ledger", "--config", str(config)) == 2
    assert "nodes.dam-1.secret_file" in capsys.readouterr().err


async def test_ledger_rows_per_node(centre: Centre) -> None:
    chain = Chain()
    chain.pay(UNPAID, 1_000)
    chain.pay("0999999999", 2_000)
    await centre.send(chain.entries)
    assert await centre.ledger("ale-1") == []
    assert await centre.ledger("dam-1") == [
        (chain.entries[0].id, "dam-1", 1, bid(UNPAID), 1000, "applied"),
        (chain.entries[1].id, "dam-1", 2, "DAM-2026-05-0999999999", 2000, "rejected"),
    ]
