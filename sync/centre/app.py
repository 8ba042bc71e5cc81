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

from aiohttp import web

import outbox
from sync import bill, protocol
from sync.centre.config import CentreSettings
from sync.centre.ledger import record_batch
from sync.centre.store import CentreStore
from sync.errors import BadSignature, ProtocolError, Refused

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 1_000, protocol.MAX_CHANGES
SETTINGS = web.AppKey("centre_settings", CentreSettings)
STORE = web.AppKey("centre_store", CentreStore)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("centre_clock")

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
        log.warning("refused %s %s: %s (%s)", request.method, request.path, exc.code, exc.detail)
        return error_response(401, exc.code, exc.detail)
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
    except Exception:
        # A bug, not bad input: still answer with a frame so the node backs off cleanly.
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error at the centre")


async def _authenticate(request: web.Request) -> tuple[str, bytes]:
    """(node, body) of a genuinely signed request; raises BadSignature."""
    body = await request.read()
    settings = request.app[SETTINGS]
    node = protocol.verify(
        settings.secrets,
        request.method,
        request.raw_path,
        body,
        request.headers,
        request.app[CLOCK](),
        settings.max_skew_s,
    )
    return node, body


async def post_outbox(request: web.Request) -> web.Response:
    node, body = await _authenticate(request)
    if node != request.match_info["node"]:
        raise Refused(403, "node_mismatch", f"node {node} may not post to another node's outbox")
    if request.content_type != protocol.CONTENT_TYPE:
        raise Refused(415, "unsupported_media_type", f"send {protocol.CONTENT_TYPE}")
    batch = protocol.decode_batch(body)
    if batch.node != node:
        raise Refused(403, "node_mismatch", f"the frame's node {batch.node} is not the signer")
    governorate = request.app[SETTINGS].nodes[node].governorate
    limits = request.app[SETTINGS].limits(node)
    now = time.time()
    reply = await request.app[STORE].write(
        lambda conn: record_batch(conn, node, governorate, batch.entries, now, limits)
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


async def _reader_for(request: web.Request) -> str:
    node, _ = await _authenticate(request)
    governorate = request.match_info["gov"]
    if request.app[SETTINGS].nodes[node].governorate != governorate:
        raise Refused(403, "forbidden_governorate", f"node {node} may not read {governorate[:8]}")
    return governorate


async def get_changes(request: web.Request) -> web.Response:
    governorate = await _reader_for(request)
    since = _query_int(request, "since", 0, 0, bill.MAX_INT)
    limit = _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    body = await request.app[STORE].changes_body(governorate, since, limit)
    return web.Response(body=body, content_type=protocol.CONTENT_TYPE)


async def get_snapshot(request: web.Request) -> web.StreamResponse:
    governorate = await _reader_for(request)
    response = web.StreamResponse(headers={"Content-Type": protocol.CONTENT_TYPE})
    async with contextlib.aclosing(request.app[STORE].snapshot(governorate)) as chunks:
        async for chunk in chunks:
            if not response.prepared:
                await response.prepare(request)
            try:
                await response.write(chunk)
            except ConnectionResetError:
                log.info("snapshot of %s abandoned by the client", governorate)
                return response
    await response.write_eof()
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = CentreStore(app[SETTINGS].db_path)
    await store.open()
    app[STORE] = store
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
    app.cleanup_ctx.append(_store_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/nodes/{node}/outbox", post_outbox)
    # No HEAD: it would read a whole governorate to send nothing.
    app.router.add_get("/v1/governorates/{gov}/bills/changes", get_changes, allow_head=False)
    app.router.add_get("/v1/governorates/{gov}/bills/snapshot", get_snapshot, allow_head=False)
    return app
