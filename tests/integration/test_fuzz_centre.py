"""Fault matrix row 6, bad input at the centre: hostile msgpack frames and query strings.

The reference centre runs on loopback (one per test function, on a LoopHost thread) and
hypothesis feeds it, byte for byte:

- arbitrary msgpack values as outbox frames, correctly signed so they pass the signature
  check and reach the decoder;
- valid frames (real payments continuing the node's chain at the centre) with one to three
  structural mutations (a value anywhere replaced by any msgpack value, a key dropped or
  added, the version changed) or byte-level damage (flips, truncation, insertions);
- valid frames with bad signatures: wrong secret, garbage signature, missing headers,
  stale, future or malformed timestamps, unknown node, unknown or malformed key ids,
  malformed or replayed nonces, a digest header that is not the body's, another node's
  credentials, body changed after signing;
- garbage query strings on the change feed and the snapshot, the ledger and the chain.

For every answer: never 5xx; every refusal is a msgpack error frame `{v, error, detail}`
with a stable code and the status that code implies; every answer to a genuine request
carries the centre's answer signature over that request (checked with sync.answers), and
every other refusal is the one generic, unsigned `401 unauthorized`; the ledger (every table of the
centre's database) is unchanged by every refusal; and the decoder's verdict matches
sync.protocol's: a frame the protocol module refuses is refused with the same code, and a
200 answers every entry of the frame, in order, with the acked seq the centre now holds.

EDGE_FUZZ_EXAMPLES scales the examples per test (default 150, derandomized).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack
import pytest
from aiohttp import web
from centrefixtures import on_store
from helpers import bill_input
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from loophost import LoopHost, RawResponse, raw_request
from yarl import URL

import outbox
from sync import answers, chain, protocol, signing
from sync.centre.app import STORE, create_app
from sync.centre.config import CentreSettings, NodeSettings
from sync.errors import ProtocolError, SyncError
from sync.snapshot import SnapshotReader

pytestmark = pytest.mark.both_stores
EXAMPLES = int(os.environ.get("EDGE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NODE, OTHER = "dam-1", "ale-1"
SECRETS = {
    NODE: b"fuzz-secret-of-dam-1-0123456789-abc",
    OTHER: b"fuzz-secret-of-ale-1-0123456789-abc",
}
LEDGER_ONLY = "seen_nonces"  # a read's nonce is remembered: not part of the ledger
CYCLE = "2026-05"
ACCOUNTS = [f"01000000{i:02d}" for i in range(1, 6)]
OUTBOX = f"/v1/nodes/{NODE}/outbox"
# code -> the status the centre must answer it with (sync/PROTOCOL.md, sync/centre/app.py).
STATUS_OF = {
    "bad_frame": 400, "unsupported_version": 400, "too_large": 400, "bad_query": 400,
    "bad_request": 400, "batch_too_large": 413, "body_too_large": 413,
    "unauthorized": 401, "stale_timestamp": 401,
    "node_mismatch": 403, "forbidden_governorate": 403, "chain_broken": 409, "chain_gap": 409,
    "receipt_code_taken": 409,
    "unsupported_media_type": 415, "not_found": 404, "method_not_allowed": 405,
}  # fmt: skip


@dataclass(frozen=True)
class Answer(RawResponse):
    """An answer with the request's signature, and whether the request was genuine."""

    signature: str = ""
    genuine: bool = False
    stream: bool = False  # a snapshot: its pages are signed, the answer over "stream"


class CentreFuzzer:
    """One reference centre with two nodes, and the checks every answer must pass."""

    def __init__(self, host: LoopHost, data_dir: Path) -> None:
        self.host = host
        self.settings = on_store(CentreSettings(
            data_dir=data_dir, host="127.0.0.1", port=0, governorate="DAM",
            nodes={NODE: NodeSettings("DAM", SECRETS[NODE]),
                   OTHER: NodeSettings("ALE", SECRETS[OTHER])},
        ))  # fmt: skip
        data_dir.mkdir()
        self.app = create_app(self.settings)
        self.runner = web.AppRunner(self.app)
        host.run(self.runner.setup())
        host.run(web.TCPSite(self.runner, "127.0.0.1", 0).start())
        self.port = int(self.runner.addresses[0][1])
        seeds = [bill_input(a, CYCLE, amount=10**9) for a in ACCOUNTS]
        self.db = self.app[STORE]
        host.run(self.db.upsert_bills("DAM", seeds, time.time()))
        self.seen: Counter[str] = Counter()
        self.refusals_changed_ledger = 0

    def close(self) -> None:
        self.host.run(self.runner.cleanup())

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.host.run(self.db.query(sql, *args))

    def digest(self) -> str:
        """SHA-256 over every row of every table of the centre's store but LEDGER_ONLY."""
        if self.db.kind == "sqlite":
            listing = (
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' AND name != ? ORDER BY name"
            )
        else:
            listing = (
                "SELECT table_name::text FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_name != ? ORDER BY 1"
            )
        names = [name for (name,) in self.query(listing, LEDGER_ONLY)]
        digest = hashlib.sha256()
        if self.db.kind != "sqlite":
            # One round trip: each table's rows as text, sorted (row order is not content).
            parts = [f"(SELECT '{n}' || md5(COALESCE(string_agg(t::text, '|' ORDER BY t::text),"
                     f" '')) FROM \"{n}\" t)" for n in names]  # fmt: skip
            digest.update(repr(self.query("SELECT " + ", ".join(parts))).encode())
            return digest.hexdigest()
        for name in names:
            digest.update(name.encode())
            # Sorted here: row order is not content.
            for text in sorted(repr(row) for row in self.query(f'SELECT * FROM "{name}"')):
                digest.update(text.encode())
        return digest.hexdigest()

    def head(self) -> tuple[int, str]:
        rows = self.query("SELECT seq, hash FROM chain_heads WHERE node = ?", NODE)
        return (0, outbox.GENESIS) if not rows else (int(rows[0][0]), str(rows[0][1]))

    def next_entries(self, count: int) -> list[dict[str, Any]]:
        """`count` real payments that continue dam-1's chain from the centre's head."""
        seq, prev = self.head()
        out = []
        for i in range(count):
            seq += 1
            eid = outbox.new_entry_id(NODE)
            payload = msgpack.packb(
                {"payment_id": eid, "bill_id": f"DAM-{CYCLE}-{ACCOUNTS[i % 5]}",
                 "account": ACCOUNTS[i % 5], "amount": 100, "channel": "counter-1",
                 "idempotency_key": eid, "method": "cash", "cashier": "c1",
                 "accepted_at": "2026-06-01T08:00:00.000Z", "receipt": "DAM-20260601-000001"},
                use_bin_type=True,
            )  # fmt: skip
            digest = outbox.entry_hash(prev, seq, eid, "payment", payload)
            out.append({"seq": seq, "id": eid, "kind": "payment", "payload": payload,
                        "prev_hash": prev, "hash": digest})  # fmt: skip
            prev = digest
        return out

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        *,
        node: str = NODE,
        secret: bytes | None = None,
        timestamp: int | None = None,
        sign_body: bytes | None = None,
        drop: tuple[str, ...] = (),
        extra: dict[str, bytes] | None = None,
        content_type: bytes = protocol.CONTENT_TYPE.encode(),
        nonce: str | None = None,
    ) -> Answer:
        signed = protocol.sign(
            secret or SECRETS.get(node, b"unknown"), node, method, target,
            body if sign_body is None else sign_body,
            int(time.time()) if timestamp is None else timestamp, nonce,
        )  # fmt: skip
        headers = [(k.encode(), v.encode()) for k, v in signed.items() if k not in drop]
        headers += [(k.encode(), v) for k, v in (extra or {}).items()]
        headers.append((b"Content-Type", content_type))
        resp = self.host.run(
            raw_request(self.port, method.encode(), target.encode(), headers, body)
        )
        genuine = (
            not drop and not extra and secret is None and sign_body is None and node in SECRETS
        )
        return Answer(
            resp.status,
            resp.headers,
            resp.body,
            signed[signing.SIGNATURE_HEADER],
            genuine,
            resp.status == 200 and "/snapshot" in target,
        )

    def check(self, resp: RawResponse, before: str) -> str | None:
        """The common contract; returns the error code of a refusal (None for a 200)."""
        assert resp.status < 500, (resp.status, resp.body[:300])
        assert resp.content_type == protocol.CONTENT_TYPE, resp.headers
        self.check_signed(resp)
        if resp.status == 200:
            self.seen["200"] += 1
            event("200")
            return None
        code, detail = protocol.decode_error(resp.body)
        assert code in STATUS_OF, (resp.status, code, detail)
        assert STATUS_OF[code] == resp.status, (resp.status, code, detail)
        assert detail
        self.seen[f"{resp.status} {code}"] += 1
        event(f"{resp.status} {code}")
        if self.digest() != before:
            self.refusals_changed_ledger += 1
            raise AssertionError(f"a refused frame ({code}) changed the ledger")
        return code

    def check_signed(self, resp: RawResponse) -> None:
        """A genuine request's answer verifies under its own signature; any other is the
        generic unsigned 401, or (a genuine but stale request) a signed stale_timestamp."""
        code = None if resp.status == 200 else protocol.decode_error(resp.body)[0]
        signature = resp.signature if isinstance(resp, Answer) else ""
        if code == "unauthorized":
            assert answers.ANSWER_HEADER.lower() not in resp.headers
            assert protocol.decode_error(resp.body)[1] == "the request is not signed by a known key"
            self.seen["unsigned 401"] += 1
            return
        assert (isinstance(resp, Answer) and resp.genuine) or code == "stale_timestamp", (
            code,
            resp.status,
        )
        for secret in (SECRETS[NODE], SECRETS[OTHER]):
            try:
                stream = isinstance(resp, Answer) and resp.stream
                body = None if stream else resp.body
                answers.check_answer(secret, signature, resp.status, resp.headers, body)
                break
            except SyncError:
                continue
        else:
            raise AssertionError(f"an answer ({resp.status} {code}) without a valid signature")
        self.seen["signed answer"] += 1

    def post_frame(self, body: bytes, **kw: Any) -> str | None:
        """Send one outbox frame; check it against the contract and the protocol's decoder."""
        before = self.digest()
        resp = self.request("POST", OUTBOX, body, **kw)
        code = self.check(resp, before)
        if kw:  # signature and header faults: the decoder is never reached
            return code
        try:
            batch = protocol.decode_batch(body)
        except ProtocolError as exc:
            assert code == exc.code, (code, exc.code, exc.detail)
            return code
        if batch.node != NODE:
            assert code == "node_mismatch"
        elif code is None:
            reply = protocol.decode_reply(resp.body)
            assert [(r.seq, r.id) for r in reply.results] == [(e.seq, e.id) for e in batch.entries]
            assert reply.acked_seq == self.head()[0]
        else:
            assert code in ("chain_gap", "chain_broken"), code
        return code


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[CentreFuzzer]:
    host = LoopHost()
    try:
        fuzzer = CentreFuzzer(host, tmp_path / "centre")
        try:
            yield fuzzer
        finally:
            fuzzer.close()
    finally:
        host.close()


# --- strategies ------------------------------------------------------------------------

keys = st.text(max_size=12) | st.sampled_from(["v", "node", "entries", "seq", "id", "hash"])
msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4)
        | st.dictionaries(st.integers(0, 3), inner, min_size=1, max_size=2)
    ),  # non-string keys
    max_leaves=12,
)


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def mutate(frame: Any, draw: st.DrawFn) -> Any:
    """One structural change somewhere in the frame: replace, drop or add, at a random depth."""
    node = frame
    while isinstance(node, dict | list) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        child = node[key]
        if not isinstance(child, dict | list) or not child:
            break
        node = child
    how = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
    if isinstance(node, dict):
        key = draw(st.sampled_from(sorted(node))) if node else "v"
        if how == "drop":
            node.pop(key, None)
        elif how == "add":
            node[draw(keys)] = draw(msgpack_values)
        else:
            node[key] = draw(msgpack_values | st.sampled_from([0, 2, -1, "1", b"\x00" * 32]))
    elif isinstance(node, list):
        if how == "drop" and node:
            node.pop(draw(st.integers(0, len(node) - 1)))
        elif how == "add" or not node:
            node.insert(draw(st.integers(0, len(node))), draw(msgpack_values))
        else:
            node[draw(st.integers(0, len(node) - 1))] = draw(msgpack_values)
    return frame


def frame_of(entries: list[dict[str, Any]], node: str = NODE) -> dict[str, Any]:
    return {"v": protocol.PROTOCOL_VERSION, "node": node, "entries": entries}


def damage(raw: bytes, draw: st.DrawFn) -> bytes:
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[at] = draw(st.sampled_from([0xC1, 0xDD, 0xDF, 0xC6, 0xD9, 0xFF, 0x00]))
    return bytes(data)


# --- tests -----------------------------------------------------------------------------


def test_arbitrary_msgpack_values_as_frames(centre: CentreFuzzer) -> None:
    @FUZZ
    @given(value=msgpack_values | st.dictionaries(keys, msgpack_values, max_size=5))
    def check(value: Any) -> None:
        centre.post_frame(pack(value))

    check()
    assert centre.refusals_changed_ledger == 0
    print(f"\narbitrary msgpack: {dict(centre.seen)}")


def test_arbitrary_bytes_as_frames(centre: CentreFuzzer) -> None:
    @FUZZ
    @given(body=st.binary(max_size=300))
    def check(body: bytes) -> None:
        centre.post_frame(body)

    check()
    print(f"\narbitrary bytes: {dict(centre.seen)}")


def chain_fault(entries: list[dict[str, Any]], draw: st.DrawFn) -> None:
    """Break the chain in place: skip or reorder entries, or edit a seq, a hash or a payload."""
    i = draw(st.integers(0, len(entries) - 1))
    how = draw(st.sampled_from(["skip", "swap", "seq", "prev_hash", "hash", "payload", "id"]))
    if how == "skip":
        entries.pop(0)
    elif how == "swap":
        entries.reverse()
    elif how == "seq":
        entries[i]["seq"] += draw(st.integers(-3, 3))
    elif how in ("prev_hash", "hash"):
        entries[i][how] = draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
    elif how == "payload":
        entries[i]["payload"] = draw(st.binary(max_size=64))
    else:
        entries[i]["id"] = outbox.new_entry_id(NODE)


def test_mutated_valid_frames(centre: CentreFuzzer) -> None:
    @FUZZ
    @given(
        data=st.data(),
        count=st.integers(1, 3),
        faults=st.lists(st.sampled_from(["struct", "chain"]), max_size=3),
    )
    def check(data: st.DataObject, count: int, faults: list[str]) -> None:
        frame = frame_of(centre.next_entries(count))
        for fault in sorted(faults):  # chain faults first, while the entries are still maps
            if fault == "chain" and frame["entries"]:
                chain_fault(frame["entries"], data.draw)
            elif fault == "struct":
                frame = mutate(frame, data.draw)
        try:
            body = pack(frame)
        except (OverflowError, ValueError, TypeError):
            return  # not every mutation is packable (e.g. an int too large for msgpack)
        centre.post_frame(body)

    check()
    assert centre.seen["200"] > 0, centre.seen  # unmutated frames do reach the ledger
    print(f"\nmutated frames: {dict(centre.seen)}")


def test_byte_damaged_valid_frames(centre: CentreFuzzer) -> None:
    @FUZZ
    @given(data=st.data(), count=st.integers(1, 3))
    def check(data: st.DataObject, count: int) -> None:
        centre.post_frame(damage(pack(frame_of(centre.next_entries(count))), data.draw))

    check()
    print(f"\ndamaged frames: {dict(centre.seen)}")


SIGNATURE_FAULTS = st.one_of(
    st.builds(lambda s: {"secret": s}, st.binary(min_size=1, max_size=40)),
    st.builds(
        lambda t: {"timestamp": int(time.time()) + t},
        st.integers(301, 10**9) | st.integers(-(10**9), -301),
    ),
    st.builds(
        lambda h: {"drop": (h,)},
        st.sampled_from(
            [
                signing.NODE_HEADER,
                signing.TIMESTAMP_HEADER,
                signing.SIGNATURE_HEADER,
                signing.KEY_HEADER,
                signing.NONCE_HEADER,
                signing.DIGEST_HEADER,
            ]
        ),
    ),
    st.builds(
        lambda h, v: {"drop": (h,), "extra": {h: v}},
        st.sampled_from([signing.KEY_HEADER, signing.NONCE_HEADER, signing.DIGEST_HEADER]),
        st.binary(max_size=70).map(lambda b: bytes(c for c in b if 0x21 <= c < 0x7F) or b"x")
        | st.from_regex(rb"[0-9a-f]{8}|[0-9a-f]{32}|[0-9a-f]{64}", fullmatch=True),
    ),
    st.just({"replay": True}),  # the very same request twice: the second is refused
    st.builds(
        lambda v: {"drop": (protocol.SIGNATURE_HEADER,), "extra": {protocol.SIGNATURE_HEADER: v}},
        st.binary(max_size=80).map(lambda b: bytes(c for c in b if 0x21 <= c < 0x7F) or b"x")
        | st.from_regex(rb"[0-9a-fA-F]{64}", fullmatch=True),
    ),
    st.builds(
        lambda v: {"drop": (protocol.TIMESTAMP_HEADER,), "extra": {protocol.TIMESTAMP_HEADER: v}},
        st.sampled_from([b"", b"1.5", b"1e9", b"now", b"-", b"9" * 40, b"\xd9\xa1\xd9\xa2"]),
    ),
    st.builds(
        lambda n: {"node": n},
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
    ),
    st.just({"node": OTHER}),  # genuinely signed, by another node
    st.builds(lambda b: {"sign_body": b}, st.binary(max_size=20)),  # body changed after signing
)


def test_bad_signatures_are_refused(centre: CentreFuzzer) -> None:
    @FUZZ
    @given(fault=SIGNATURE_FAULTS)
    def check(fault: dict[str, Any]) -> None:
        if fault.get("node") == NODE:
            return  # the one name that is not a fault
        if fault.get("replay"):
            # The first copy is recorded; the same nonce again is refused, records nothing.
            body, nonce = pack(frame_of(centre.next_entries(1))), signing.new_nonce()
            assert centre.post_frame(body, nonce=nonce) is None
            assert centre.post_frame(body, nonce=nonce) == "unauthorized"
            return
        code = centre.post_frame(pack(frame_of(centre.next_entries(1))), **fault)
        assert code is not None, fault  # nothing badly signed is ever recorded
        if "node" in fault and fault["node"] == OTHER:
            assert code == "node_mismatch"
        else:
            assert code in ("unauthorized", "stale_timestamp")

    check()
    print(f"\nbad signatures: {dict(centre.seen)}")


QUERY_TEXT = st.text(max_size=30).map(
    lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="=&")
)
QUERY_VALUES = (
    st.from_regex(r"-?[0-9]{1,25}", fullmatch=True)
    | st.sampled_from(
        [
            "",
            "0",
            "1",
            "10000",
            "10001",
            "9223372036854775807",
            "9223372036854775808",
            "%D9%A1",
            "1.0",
            "0x10",
            "+1",
            "%201",
            "1e3",
        ]
    )
    | QUERY_TEXT
)


def query_parts(*keys: str) -> st.SearchStrategy[str]:
    """Query strings of up to four `key=value` parts, keys mostly from `keys`."""
    return st.lists(
        st.tuples(st.sampled_from([*keys, *keys, ""]) | QUERY_TEXT, QUERY_VALUES), max_size=4
    ).map(lambda parts: "&".join(f"{k}={v}" for k, v in parts))


QUERY_PARTS = query_parts("since", "limit", "cursor")


def test_garbage_query_strings_on_the_change_feed(centre: CentreFuzzer) -> None:
    @FUZZ
    @given(
        query=QUERY_PARTS | QUERY_TEXT,
        feed=st.sampled_from(["changes", "changes", "changes", "snapshot"]),
        gov=st.sampled_from(["DAM", "DAM", "DAM", "ALE", "XXX", "dam", "%00"]),
    )
    def check(query: str, feed: str, gov: str) -> None:
        before = centre.digest()
        target = f"/v1/governorates/{gov}/bills/{feed}?{query}"
        resp = centre.request("GET", target)
        code = centre.check(resp, before)
        if gov != "DAM":
            assert code in ("forbidden_governorate", "bad_query"), code
        if code is None and feed == "changes":
            changes = protocol.decode_changes(resp.body)
            assert all(b["governorate"] == "DAM" for b in changes.changes)
        elif code is None:
            reader = SnapshotReader(SECRETS[NODE], resp.signature, governorate="DAM")
            assert len(reader.feed(resp.body)) == len(ACCOUNTS)
            reader.finish()
        else:
            assert code in ("bad_query", "forbidden_governorate"), code

    check()
    print(f"\nchange feed queries: {dict(centre.seen)}")


def test_garbage_on_the_ledger_endpoint(centre: CentreFuzzer) -> None:
    """GET /v1/nodes/{node}/ledger (reconciliation): any query and node in the path, signed
    by either node. A 200 is only ever the signer's own ledger of a well-formed day."""
    sent = centre.request("POST", OUTBOX, pack(frame_of(centre.next_entries(3))))
    assert sent.status == 200  # three payments of 2026-06-01 to list

    @FUZZ
    @given(
        query=QUERY_PARTS | QUERY_TEXT | st.sampled_from(["day=2026-06-01", "day=2026-02-30"]),
        path_node=st.sampled_from([NODE, NODE, OTHER, "xx", "%00", "dam-1%2F"]),
        signer=st.sampled_from([NODE, NODE, OTHER]),
    )
    def check(query: str, path_node: str, signer: str) -> None:
        before = centre.digest()
        resp = centre.request("GET", f"/v1/nodes/{path_node}/ledger?{query}", node=signer)
        code = centre.check(resp, before)
        if path_node != signer:
            assert code == "node_mismatch", code
        elif code is None:
            day = query.removeprefix("day=")
            found = protocol.decode_ledger(resp.body, signer, day)
            assert len(found) == (3 if (signer, day) == (NODE, "2026-06-01") else 0)
        else:
            assert code == "bad_query", code

    check()
    print(f"\nledger queries: {dict(centre.seen)}")


def test_garbage_on_the_chain_endpoint(centre: CentreFuzzer) -> None:
    """GET /v1/nodes/{node}/chain (edge restore): any query and node in the path, signed by
    either node. A 200 is only ever the signer's own chain after the seq asked for, whole."""
    sent = centre.request("POST", OUTBOX, pack(frame_of(centre.next_entries(3))))
    assert sent.status == 200

    @FUZZ
    @given(
        query=query_parts("after", "limit") | st.sampled_from(["after=1&limit=1", "after=9"]),
        path_node=st.sampled_from([NODE, NODE, OTHER, "xx", "%00", "dam-1%2F"]),
        signer=st.sampled_from([NODE, NODE, OTHER]),
    )
    def check(query: str, path_node: str, signer: str) -> None:
        before = centre.digest()
        resp = centre.request("GET", f"/v1/nodes/{path_node}/chain?{query}", node=signer)
        code = centre.check(resp, before)
        if path_node != signer:
            assert code == "node_mismatch", code
        elif code is None:
            asked = URL("/?" + query).query
            after = int(asked.get("after", "0"))
            page = chain.decode(resp.body, signer, after)
            assert page.head == (3 if signer == NODE else 0)
            limit = int(asked.get("limit", str(chain.DEFAULT_PAGE)))
            assert len(page.entries) == max(0, min(limit, page.head - after))
        else:
            assert code == "bad_query", code

    check()
    print(f"\nchain queries: {dict(centre.seen)}")
