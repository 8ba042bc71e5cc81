"""Asking the centre for one node's day (GET /v1/nodes/{node}/ledger?day=, PROTOCOL.md 5.4):
signed like every request, its answer checked before anything in it is believed."""

from __future__ import annotations

import aiohttp

from sync import answers, protocol, signing, tls
from sync.errors import BadAnswer, CentreRefused, CentreUnavailable, ProtocolError, SyncError


async def fetch(
    session: aiohttp.ClientSession, url: str, node: str, secret: bytes, day: str, now: float
) -> list[protocol.LedgerEntry]:
    """The centre's entries of `node`'s local `day`; a SyncError for anything else."""
    path = f"/v1/nodes/{node}/ledger?day={day}"
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
        raise CentreRefused(status, code, detail)
    try:
        return protocol.decode_ledger(body, node, day)
    except ProtocolError as exc:
        raise SyncError(f"bad ledger from the centre: {exc}", code=exc.code) from exc
