"""Signed answers (protocol 2): the centre's HMAC over the request's own signature, the status,
the Date header and the body digest, and per page of the snapshot stream (PROTOCOL.md 3.3).

The centre signs with the key the request named; the node checks before it acts on anything.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from sync import protocol
from sync.errors import BadAnswer, CentreRefused, SyncError
from sync.signing import header, mac

ANSWER_HEADER = "X-Edge-Answer"
ANSWER_TAG = "edge-answer/2"
PAGE_TAG = "edge-page/2"
STREAM = "stream"  # the digest line of a snapshot's answer: its pages are signed one by one
# The snapshot's announced size (PROTOCOL.md 4.4): headers, so a node that predates them
# reads the stream as before; signed apart from the answer, whose string is unchanged.
COUNT_HEADER = "X-Edge-Snapshot-Count"
COUNT_MAC_HEADER = "X-Edge-Snapshot-Count-Mac"
COUNT_TAG = "edge-snapshot-count/2"


def answer_string(request_signature: str, status: int, date: str, digest: str) -> bytes:
    return f"{ANSWER_TAG}\n{request_signature}\n{status}\n{date}\n{digest}".encode(
        "utf-8", "surrogatepass"
    )


def answer_mac(
    secret: bytes, request_signature: str, status: int, date: str, body: bytes | None
) -> str:
    """The X-Edge-Answer value; `body=None` for a stream (the snapshot)."""
    digest = STREAM if body is None else hashlib.sha256(body).hexdigest()
    return mac(secret, answer_string(request_signature, status, date, digest))


def page_string(
    request_signature: str,
    page: int,
    bills: int,
    digest: str,
    end: tuple[int, int] | None = None,
) -> bytes:
    """What a snapshot page seal signs; `end` is (cursor, count) on the stream's last seal."""
    text = f"{PAGE_TAG}\n{request_signature}\n{page}\n{bills}\n{digest}"
    if end is not None:
        text += f"\nend\n{end[0]}\n{end[1]}"
    return text.encode()


def page_mac(
    secret: bytes,
    request_signature: str,
    page: int,
    bills: int,
    digest: str,
    end: tuple[int, int] | None = None,
) -> str:
    return mac(secret, page_string(request_signature, page, bills, digest, end))


def count_mac(secret: bytes, request_signature: str, count: int) -> str:
    """The X-Edge-Snapshot-Count-Mac value over the request's signature and the count."""
    return mac(secret, f"{COUNT_TAG}\n{request_signature}\n{count}".encode())


def announced_count(
    secret: bytes, request_signature: str, headers: Mapping[str, str]
) -> int | None:
    """The snapshot's announced bill count if present and signed for this request, else None.

    It only feeds progress (the end seal's signed `count` is what is checked), so a missing
    or wrong one costs the progress its total, never the snapshot.
    """
    raw, given = header(headers, COUNT_HEADER), header(headers, COUNT_MAC_HEADER).lower()
    if not raw or not raw.isascii() or not raw.isdigit() or len(raw) > 18 or not given:
        return None
    expected = count_mac(secret, request_signature, int(raw))
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        return None
    return int(raw)


def check_answer(
    secret: bytes,
    request_signature: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes | None,
) -> None:
    """Raise BadAnswer unless the answer carries the centre's signature for this request."""
    given = header(headers, ANSWER_HEADER).lower()
    if not given:
        raise BadAnswer(f"unsigned answer ({status}) at the centre's URL: ignored")
    expected = answer_mac(secret, request_signature, status, header(headers, "Date"), body)
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise BadAnswer(f"wrongly signed answer ({status}) at the centre's URL: ignored")


def unsigned_refusal(status: int, body: bytes, exc: BadAnswer) -> SyncError:
    """What to make of an answer that failed `check_answer`: a 401 `unauthorized` is what a
    centre that does not know our key sends (it cannot sign it), so it is the refusal it
    says, a configuration fault that settles nothing; anything else stays a BadAnswer."""
    code, _ = protocol.decode_error(body)
    if status == 401 and code == "unauthorized":
        return CentreRefused(
            401, code, "the centre does not accept this node's key (an unsigned refusal):"
            " check centre.secret_file against the centre's secret_file for this node",
        )  # fmt: skip
    return exc
