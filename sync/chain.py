"""A node's chain as the centre holds it (GET /v1/nodes/{node}/chain, PROTOCOL.md 4.8): the
frame, and reading it page by page with every answer's signature and every link checked.

`edge restore` asks it before it puts a backup in place (DESIGN 5.20): the centre's head,
and the entries it acknowledged after the backup's head, so a restored node can continue
the sequence after them instead of reusing seqs the centre holds for other entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from outbox.chain import GENESIS, verify_link
from outbox.errors import ChainBroken
from outbox.ids import ENTRY_ID
from sync import answers, protocol, signing, tls
from sync.errors import BadAnswer, CentreRefused, CentreUnavailable, ProtocolError, SyncError
from sync.link import parse_http_date

DEFAULT_PAGE, MAX_PAGE = 500, 1_000
PAGE_BYTES = 4 * 1024 * 1024  # payload bytes in one page (at least one entry): bounded answers
_FIELDS = 11


@dataclass(frozen=True)
class Held:
    """One entry the centre recorded from the node, with the centre's first verdict on it."""

    seq: int
    id: str
    kind: str
    payload: bytes
    prev_hash: str
    hash: str
    verdict: str  # applied, credited or rejected (never duplicate)
    reason: str | None
    version: int | None
    credit: int
    fine: int | None


@dataclass(frozen=True)
class Page:
    node: str
    head: int  # the node's chain head at the centre: its seq ...
    head_hash: str  # ... and hash (GENESIS for an empty chain)
    after: int
    after_hash: str | None  # the hash the centre holds at `after`; None when after > head
    entries: list[Held]
    more: bool


def encode(page: Page) -> bytes:
    return protocol._pack(
        {
            "v": protocol.PROTOCOL_VERSION, "node": page.node, "head": page.head,
            "head_hash": page.head_hash, "after": page.after, "after_hash": page.after_hash,
            "entries": [[e.seq, e.id, e.kind, e.payload, e.prev_hash, e.hash, e.verdict,
                         e.reason, e.version, e.credit, e.fine] for e in page.entries],
            "more": page.more,
        }
    )  # fmt: skip


def _hash(value: object, where: str) -> str:
    return protocol._str(value, where, protocol._HASH)


def _held(item: object, where: str) -> Held:
    if not isinstance(item, list) or len(item) != _FIELDS:
        raise ProtocolError(f"{where} must be an array of {_FIELDS}")
    seq, eid, kind, payload, prev, digest, verdict, reason, version, credit, fine = item
    if not isinstance(payload, bytes):
        raise ProtocolError(f"{where}.payload must be bin")
    if verdict not in protocol.CENTRE_VERDICTS:
        raise ProtocolError(f"{where}.verdict must be one of {protocol.CENTRE_VERDICTS}")
    return Held(
        seq=protocol._int(seq, f"{where}.seq", low=1),
        id=protocol._str(eid, f"{where}.id", ENTRY_ID),
        kind=protocol._str(kind, f"{where}.kind", protocol._KIND),
        payload=payload,
        prev_hash=_hash(prev, f"{where}.prev_hash"),
        hash=_hash(digest, f"{where}.hash"),
        verdict=verdict,
        reason=None if reason is None else protocol._str(reason, f"{where}.reason", protocol._CODE),
        version=None if version is None else protocol._int(version, f"{where}.version"),
        credit=protocol._int(credit, f"{where}.credit"),
        fine=None if fine is None else protocol._int(fine, f"{where}.fine"),
    )


def decode(body: bytes, node: str, after: int) -> Page:
    """The chain page of `node` after `after`; another node's or another start is refused,
    and so is a page whose seqs do not follow `after` one by one or overrun the head."""
    keys = ("node", "head", "head_hash", "after", "after_hash", "entries", "more")
    frame = protocol._frame(protocol._unpack(body, MAX_PAGE), keys)
    if frame["node"] != node or frame["after"] != after:
        raise ProtocolError("the chain page is not of the node and seq asked for")
    head = protocol._int(frame["head"], "head")
    raw = frame["after_hash"]
    after_hash = None if raw is None else _hash(raw, "after_hash")
    items = protocol._list(frame["entries"], "entries", MAX_PAGE)
    entries = [_held(item, f"entries[{i}]") for i, item in enumerate(items)]
    if [e.seq for e in entries] != list(range(after + 1, after + 1 + len(entries))):
        raise ProtocolError("the chain page's seqs do not follow the seq asked for")
    more, end = frame["more"], after + len(entries)
    if type(more) is not bool or end > max(head, after) or more != (end < head):
        raise ProtocolError("the chain page's more or head does not match its entries")
    if (after_hash is None) != (after > head):
        raise ProtocolError("the chain page's after_hash must be nil exactly when after > head")
    head_hash = _hash(frame["head_hash"], "head_hash")
    return Page(node, head, head_hash, after, after_hash, entries, more)


async def _page(
    session: aiohttp.ClientSession, url: str, node: str, secret: bytes, after: int, now: float,
    limit: int,
) -> tuple[Page | None, float | None]:  # fmt: skip
    """One signed read; (None, centre time) when the centre said our clock is off."""
    path = f"/v1/nodes/{node}/chain?after={after}&limit={limit}"
    headers = signing.sign(secret, node, "GET", path, b"", int(now))
    try:
        # Never a redirect: the signed request and our trust in the answer stay with the URL.
        async with session.get(url + path, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            status, got = resp.status, resp.headers
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise tls.transport_failure(exc, url) from exc
    if status >= 500:
        code, detail = protocol.decode_error(body)
        raise CentreUnavailable(f"{status} {code}: {detail}")
    try:
        answers.check_answer(secret, headers[signing.SIGNATURE_HEADER], status, got, body)
    except BadAnswer as exc:
        raise answers.unsigned_refusal(status, body, exc) from exc
    if status != 200:
        code, detail = protocol.decode_error(body)
        refused = CentreRefused(status, code, detail)
        if refused.stale:
            return None, parse_http_date(got.get("Date"))
        raise refused
    try:
        return decode(body, node, after), None
    except ProtocolError as exc:
        raise SyncError(f"bad chain page from the centre: {exc}", code=exc.code) from exc


@dataclass(frozen=True)
class View:
    """The centre's head, its hash at `after`, and every entry after it, links verified."""

    head: int
    head_hash: str
    after: int
    after_hash: str | None
    entries: Sequence[Held]


async def read(
    session: aiohttp.ClientSession, url: str, node: str, secret: bytes, after: int, now: float,
    *, limit: int = MAX_PAGE,
) -> View:  # fmt: skip
    """Every page after `after`, each signed for its own request. Each entry must chain onto
    the one before (its hash recomputed from its payload) from the centre's hash at `after`
    up to its head, so an entry edited, dropped or slipped in on the way is refused; the
    caller compares `after_hash` with its own hash at `after`."""
    skew: float | None = None  # the clock correction from a signed stale_timestamp, once
    first: Page | None = None
    entries: list[Held] = []
    seq = after
    while True:
        page, centre_time = await _page(session, url, node, secret, seq, now + (skew or 0), limit)
        if page is None:
            if centre_time is None or skew is not None:
                raise SyncError("the centre refuses our clock (stale_timestamp) even corrected")
            skew = centre_time - now  # a restore is one short exchange: corrected once
            continue
        if first is None:
            first = page
        elif page.head != first.head or page.head_hash != first.head_hash:
            raise SyncError("the node's chain moved at the centre during the read: try again")
        entries += page.entries
        seq += len(page.entries)
        if not page.more:
            break
        if not page.entries:
            raise SyncError("bad chain page from the centre: more, but no entries")
    assert first is not None
    # decode() saw to it: after_hash is None only past the head, where there are no entries.
    prev_seq, prev_hash = after, first.after_hash or GENESIS
    try:
        for entry in entries:
            verify_link(prev_hash, prev_seq, entry)
            prev_seq, prev_hash = entry.seq, entry.hash
    except ChainBroken as exc:
        raise SyncError(f"the centre's chain does not hold: {exc}", code="chain_broken") from exc
    if entries and prev_hash != first.head_hash:
        raise SyncError("the centre's entries do not end at its head", code="chain_broken")
    return View(first.head, first.head_hash, after, first.after_hash, entries)
