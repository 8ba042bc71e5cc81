"""`edge rejected list|resolve`: the payments the centre rejected, and resolving one.

Both go through the running node's HTTP API with an admin token, like `edge replay`: the
node's one writer makes the resolution, its audit trail records it, and the same checks
and answers apply as on the dashboard (GET /v1/admin/rejected, POST .../resolve).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from edge import config, serving
from edge.ops import tokencli

TABLE_COLUMNS = ("payment_id", "receipt", "bill_id", "amount", "cashier", "channel", "reason",
                 "resolution")  # fmt: skip


class Refused(Exception):
    """The node answered with a problem, or did not answer; the message says which."""


def call(
    settings: config.Settings, token: str, method: str, path: str,
    body: dict[str, Any] | None = None, key: str | None = None,
) -> Any:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    if key is not None:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(  # noqa: S310 - the node's own loopback URL
        serving.local_url(settings, path), data=data, method=method, headers=headers
    )
    context = serving.local_client_context(settings)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:  # noqa: S310
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        raise Refused(
            f"the node refused: {exc.code} {exc.read().decode(errors='replace')}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        hint = serving.local_failure_hint(settings)
        raise Refused(f"the node does not answer: {exc}" + (f" ({hint})" if hint else "")) from None


def _resolution(entry: dict[str, Any]) -> str:
    done = entry.get("resolution")
    return "-" if not done else f"{done['action']} by {done['by']}"


def cmd_list(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    try:
        doc = call(settings, tokencli.read_token(args), "GET", "/v1/admin/rejected")
    except Refused as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    rows = [
        [str(e.get(c) if e.get(c) is not None else "-") for c in TABLE_COLUMNS[:-1]]
        + [_resolution(e)]
        for e in doc["entries"]
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(TABLE_COLUMNS)]
    for line in [list(TABLE_COLUMNS), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print(f"{doc['total']} rejected, {doc['unresolved']} unresolved")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    if (args.action == "retarget") != (args.bill is not None):
        print("edge: --bill is required for --action retarget, and only for it", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"action": args.action, "reason": args.reason}
    if args.bill is not None:
        body["bill_id"] = args.bill
    # The same command run again (a lost answer) is the same request: the node answers it
    # from its idempotency record instead of resolving twice.
    key = args.key or f"edge-rejected-{args.action}-{args.payment_id}"
    path = f"/v1/admin/rejected/{args.payment_id}/resolve"
    try:
        doc = call(settings, tokencli.read_token(args), "POST", path, body, key)
    except Refused as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return 1
    new = doc.get("new_payment")
    line = f"{args.payment_id}: {doc['payment']['state']} (entry {doc['entry_id']})"
    if new:
        line += f"; new payment {new['payment_id']} on {new['bill_id']}, receipt {new['receipt']}"
    print(line)
    return 0


def register(sub: Any) -> None:
    rejected = sub.add_parser("rejected", help="payments the centre rejected: list, resolve")
    cmds = rejected.add_subparsers(dest="rejected_cmd", required=True)
    listing = cmds.add_parser("list", help="the rejected payments (newest first, at most 200)")
    config.config_option(listing)
    listing.add_argument(
        "--format", choices=("table", "json"), default="table", help="default table"
    )
    tokencli.token_arguments(listing, f"an admin token (or {tokencli.ENV})")
    listing.set_defaults(func=cmd_list)
    resolve = cmds.add_parser("resolve", help="refund a rejected payment, or move it to a bill")
    config.config_option(resolve)
    resolve.add_argument("payment_id", help="the rejected payment's id")
    resolve.add_argument(
        "--action", choices=("refund", "retarget"), required=True, help="refund, or move to --bill"
    )
    resolve.add_argument("--reason", required=True, help="why (kept with the resolution)")
    resolve.add_argument("--bill", help="retarget: the corrected bill id")
    resolve.add_argument("--key", help="Idempotency-Key (default: from the id and action)")
    tokencli.token_arguments(resolve, f"an admin token (or {tokencli.ENV})")
    resolve.set_defaults(func=cmd_resolve)
