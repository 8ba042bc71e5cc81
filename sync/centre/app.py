"""The reference centre's HTTP API (DESIGN 6.4): outbox batches in, bill changes and snapshots out.

Start one in-process (the demo, tests) with:

    app = create_app(settings)            # no I/O here; the store opens in cleanup_ctx
    runner = web.AppRunner(app); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    ...; await runner.cleanup()
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from email.utils import formatdate

from aiohttp import web

import outbox
from sync import answers, bill, chain, protocol, signing, snapshot
from sync.centre.config import CentreSettings
from sync.centre.connect import open_store
from sync.centre.nonces import Nonce, NoncesFull
from sync.centre.stores import CentreDB
from sync.errors import BadSignature, ProtocolError, Refused, StoreFailed

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 1_000, protocol.MAX_CHANGES
SETTINGS = web.AppKey("centre_settings", CentreSettings)
STORE = web.AppKey("centre_store", CentreDB)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("centre_clock")
SIGNED = web.RequestKey("edge_signed", signing.Signed)  # the verified signer: its key signs

_HTTP_CODES = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
    415: "unsupported_media_type",
}  # fmt: skip
_PROTOCOL_STATUS = {"batch_too_large": 413}


def error_response(status: int, code: str, detail: str) -> web.Response:
    return web.Response(
        status=status, body=protocol.encode_error(code, detail), content_type=protocol.CONTENT_TYPE
    )


@web.middleware
async def error_frames(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every refusal as a msgpack error frame with its status; never a 500 for bad input."""
    try:
        return await handler(request)
    except BadSignature as exc:
        # The reason stays here; the wire gets one generic refusal (or stale_timestamp).
        log.warning("refused %s %s: %s (%s)", request.method, request.path, exc.code, exc.detail)
        if exc.code == "stale_timestamp":
            return error_response(401, exc.code, exc.detail)
        return error_response(401, "unauthorized", "the request is not signed by a known key")
    except ProtocolError as exc:
        return error_response(_PROTOCOL_STATUS.get(exc.code, 400), exc.code, exc.detail)
    except Refused as exc:
        log.warning("refused %s %s: %s (%s)", request.method, request.path, exc.code, exc.detail)
        return error_response(exc.status, exc.code, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    except outbox.StorageError as exc:
        log.error("storage failure on %s %s: %s", request.method, request.path, exc)
        return error_response(507, "storage_error", "the centre cannot write to its disk")
    except StoreFailed as exc:
        log.error("database failure on %s %s: %s", request.method, request.path, exc.detail)
        return error_response(503, exc.code, "the centre's database is unavailable; retry")
    except Exception:
        # A bug, not bad input: still answer with a frame so the node backs off cleanly.
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error at the centre")


async def _authenticate(request: web.Request) -> signing.Signed:
    """The verified signer, from the headers alone, before any of the body is read.

    Every failure is one generic 401 `unauthorized` (the reason goes to this log); only a
    genuine request outside the time window is told `stale_timestamp`, with a signed answer.
    """
    settings, now = request.app[SETTINGS], request.app[CLOCK]()
    try:
        signed = signing.check_headers(
            settings.keys, request.method, request.raw_path, request.headers, now,
            settings.max_skew_s,
        )  # fmt: skip
    except signing.StaleTimestamp as exc:
        request[SIGNED] = exc.signed
        raise
    try:
        replayed = await request.app[STORE].nonce_seen(_nonce(signed), now)
    except NoncesFull as exc:
        raise Refused(503, "busy", "too many requests in the time window; retry later") from exc
    if replayed:
        raise signing.unauthorized(f"replayed nonce {signed.nonce} from node {signed.node}")
    return signed


async def _read_body(request: web.Request, signed: signing.Signed) -> bytes:
    """The body, read only up to MAX_BODY (never allocated past it); its digest must match."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Refused(413, "body_too_large", f"the body is over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(256 * 1024):
        body += chunk
        if len(body) > MAX_BODY:
            raise Refused(413, "body_too_large", f"the body is over {MAX_BODY} bytes")
    if not signed.body_matches(bytes(body)):
        request.pop(SIGNED, None)  # not the signed request: its refusal is not signed either
        raise signing.unauthorized(
            f"the body of node {signed.node}'s request is not the signed one"
        )
    return bytes(body)


def _nonce(signed: signing.Signed) -> Nonce:
    return Nonce(signed.node, signed.nonce, signed.timestamp)


async def _remember(request: web.Request, signed: signing.Signed) -> None:
    """Persist a read's nonce, so a restart cannot make it replayable; a full disk only
    costs that after a restart (a repeated read changes nothing)."""
    try:
        await request.app[STORE].remember_nonce(_nonce(signed), request.app[CLOCK]())
    except (outbox.StorageError, StoreFailed) as exc:
        log.warning("nonce of node %s not persisted: %s", signed.node, exc)


async def _sign_answer(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer gets a Date from the centre's clock; one to a verified request is signed
    with that request's key over its signature, the status, the Date and the body digest."""
    date = formatdate(request.app[CLOCK](), usegmt=True)
    response.headers["Date"] = date
    signed = request.get(SIGNED)
    if isinstance(signed, signing.Signed):
        raw: bytes | None = None  # a StreamResponse (the snapshot): its pages are sealed
        if isinstance(response, web.Response):
            body = response.body
            raw = body if isinstance(body, bytes) else b""
        response.headers[answers.ANSWER_HEADER] = answers.answer_mac(
            signed.secret, signed.signature, response.status, date, raw
        )


async def post_outbox(request: web.Request) -> web.Response:
    signed = await _authenticate(request)
    request[SIGNED] = signed
    node = signed.node
    if node != request.match_info["node"]:
        raise Refused(403, "node_mismatch", f"node {node} may not post to another node's outbox")
    if request.content_type != protocol.CONTENT_TYPE:
        raise Refused(415, "unsupported_media_type", f"send {protocol.CONTENT_TYPE}")
    batch = protocol.decode_batch(await _read_body(request, signed))
    if batch.node != node:
        raise Refused(403, "node_mismatch", f"the frame's node {batch.node} is not the signer")
    own = request.app[SETTINGS].nodes[node]
    governorate, duplicates = own.governorate, own.duplicate_receipt_codes
    limits = request.app[SETTINGS].limits(node)
    # The nonce is recorded with the batch, in one transaction.
    reply = await request.app[STORE].record_batch(
        node, governorate, batch.entries, time.time(), limits, duplicates, nonce=_nonce(signed)
    )
    return web.Response(
        body=protocol.encode_reply(reply.results, reply.acked_seq),
        content_type=protocol.CONTENT_TYPE,
    )


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise Refused(400, "bad_query", f"{name} must be an integer in [{low}, {high}]")
    return int(raw)


async def _reader_for(request: web.Request) -> tuple[str, signing.Signed]:
    signed = await _authenticate(request)
    request[SIGNED] = signed
    node = signed.node
    if request.content_length:
        raise Refused(400, "bad_request", "a GET carries no body")
    await _remember(request, signed)
    governorate = request.match_info["gov"]
    if request.app[SETTINGS].nodes[node].governorate != governorate:
        raise Refused(403, "forbidden_governorate", f"node {node} may not read {governorate[:8]}")
    return governorate, signed


async def get_changes(request: web.Request) -> web.Response:
    governorate, _ = await _reader_for(request)
    since = _query_int(request, "since", 0, 0, bill.MAX_INT)
    limit = _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    body = await request.app[STORE].changes_body(governorate, since, limit)
    return web.Response(body=body, content_type=protocol.CONTENT_TYPE)


async def get_snapshot(request: web.Request) -> web.StreamResponse:
    governorate, signed = await _reader_for(request)
    # Read just before the stream's own transaction, so only a progress figure: the end
    # seal's count is the one checked.
    total = await request.app[STORE].bill_count(governorate)
    response = web.StreamResponse(headers={
        "Content-Type": protocol.CONTENT_TYPE, answers.COUNT_HEADER: str(total),
        answers.COUNT_MAC_HEADER: answers.count_mac(signed.secret, signed.signature, total),
    })  # fmt: skip
    sealer = snapshot.Sealer(signed.secret, signed.signature)
    async with contextlib.aclosing(request.app[STORE].snapshot(governorate)) as pages:
        async for page, n in pages:
            # Each page is followed by its signed seal; the last seal carries the cursor.
            chunk = page + sealer.seal(page, n) if page else sealer.end(cursor=n)
            if not response.prepared:
                await response.prepare(request)
            try:
                await response.write(chunk)
            except ConnectionResetError:
                log.info("snapshot of %s abandoned by the client", governorate)
                return response
    await response.write_eof()
    return response


async def get_fine_rules(request: web.Request) -> web.Response:
    governorate, _ = await _reader_for(request)
    rules = await request.app[STORE].fine_rules(governorate)
    return web.Response(body=protocol.encode_fine_rules(rules), content_type=protocol.CONTENT_TYPE)


async def _node_reader(request: web.Request) -> str:
    """The signing node of a read of its own records (`/v1/nodes/{node}/...`)."""
    signed = await _authenticate(request)
    request[SIGNED] = signed
    if request.content_length:
        raise Refused(400, "bad_request", "a GET carries no body")
    await _remember(request, signed)
    if signed.node != request.match_info["node"]:
        raise Refused(403, "node_mismatch", f"node {signed.node} may not read another's records")
    return signed.node


async def get_ledger(request: web.Request) -> web.Response:
    """What the centre recorded from the signing node for its local day (reconciliation)."""
    node = await _node_reader(request)
    raw = request.query.get("day", "")
    try:
        if not protocol.valid_day(raw) or set(request.query) != {"day"}:
            raise ValueError
        day = date.fromisoformat(raw)
    except ValueError:
        raise Refused(400, "bad_query", "give exactly day=YYYY-MM-DD") from None
    found = await request.app[STORE].node_day(node, day)
    return web.Response(
        body=protocol.encode_ledger(node, raw, found), content_type=protocol.CONTENT_TYPE
    )


async def get_chain(request: web.Request) -> web.Response:
    """The signing node's chain head here and the entries after `after` (edge restore)."""
    node = await _node_reader(request)
    if not set(request.query) <= {"after", "limit"}:
        raise Refused(400, "bad_query", "give only after= and limit=")
    after = _query_int(request, "after", 0, 0, bill.MAX_INT)
    limit = _query_int(request, "limit", chain.DEFAULT_PAGE, 1, chain.MAX_PAGE)
    page = await request.app[STORE].chain_page(node, after, limit)
    return web.Response(body=chain.encode(page), content_type=protocol.CONTENT_TYPE)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[SETTINGS])
    await store.open()
    app[STORE] = store
    try:
        await store.remember_keys(app[SETTINGS].nodes, app[CLOCK]())
    except BaseException:
        await store.close()
        raise
    try:
        yield
    finally:
        await store.close()


def create_app(
    settings: CentreSettings, *, clock: Callable[[], float] = time.time
) -> web.Application:
    """The centre's aiohttp application; no I/O until it starts (the store opens then)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[error_frames])
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app.on_response_prepare.append(_sign_answer)
    app.cleanup_ctx.append(_store_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/nodes/{node}/outbox", post_outbox)
    app.router.add_get("/v1/nodes/{node}/ledger", get_ledger, allow_head=False)
    app.router.add_get("/v1/nodes/{node}/chain", get_chain, allow_head=False)
    # No HEAD: it would read a whole governorate to send nothing.
    app.router.add_get("/v1/governorates/{gov}/bills/changes", get_changes, allow_head=False)
    app.router.add_get("/v1/governorates/{gov}/bills/snapshot", get_snapshot, allow_head=False)
    app.router.add_get("/v1/governorates/{gov}/fine-rules", get_fine_rules, allow_head=False)
    return app
