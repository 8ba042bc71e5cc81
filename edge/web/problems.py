"""One middleware renders every error as application/problem+json (RFC 9457).

Body: `{type, title, status, detail, code, title_ar}` and any extension members the error
carries (`offline_limit`: `limit`, `value`, `used`, `detail_ar`). aiohttp's own HTTP errors (404,
405, 413) get stable codes too, and anything unexpected becomes a logged 500 without a
stack trace in the body.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from edge import errors

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"

_HTTP_CODES: dict[int, type[errors.ApiError]] = {
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.BodyTooLarge,
    415: errors.UnsupportedMediaType,
}


def problem(error: errors.ApiError) -> web.Response:
    body = {
        "type": f"https://edge.invalid/problems/{error.code}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "title_ar": error.title_ar,
    }
    body |= {k: v for k, v in error.extra.items() if k not in body}
    return web.Response(
        status=error.status,
        # "replace": a detail quoting a client's lone surrogate (JSON "\ud800") must not turn a
        # 400 into a 500 (found by tests/integration/test_fuzz_api.py).
        body=json.dumps(body, ensure_ascii=False).encode("utf-8", "replace"),
        content_type=PROBLEM,
        charset="utf-8",
        headers=error.headers,
    )


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.ApiError as exc:
        return problem(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _HTTP_CODES.get(exc.status)
        err = kind() if kind is not None else errors.HttpError(exc.status, exc.reason)
        err.headers.update({k: v for k, v in exc.headers.items() if k == "Allow"})
        return problem(err)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(errors.InternalError("the node hit an unexpected error; it is logged"))
