"""Fixtures that run a real node on 127.0.0.1 (ephemeral port) over a seeded mirror.

`make_bill` is helpers.make_bill, importable from here too.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import make_bill

from edge import config, mirror, serving, tokens
from edge.app import create_app
from edge.node import NODE, Node
from edge.web import server

__all__ = ["NO_LIMITS", "RunningNode", "make_bill", "running", "start_node"]

# Rate limits off (DESIGN 5.7). start_node uses it unless a test gives limits of its own: most
# tests drive many requests from one address and one token on purpose (fuzzing, crowds of
# cashiers). The `running` fixture keeps the shipped defaults, so ordinary traffic meets them.
NO_LIMITS = {
    "limits_inquiries_per_s": 0, "limits_payments_per_s": 0, "limits_per_address_per_s": 0,
    "limits_auth_failures": 0,
}  # fmt: skip
DEFAULT_LIMITS = {name: getattr(config.Settings(), name) for name in NO_LIMITS}


@dataclass
class RunningNode:
    url: str
    node: Node
    session: aiohttp.ClientSession
    tokens: dict[str, str]
    data_dir: Path
    app: web.Application

    def headers(self, who: str = "cashier", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    def db_counts(self) -> tuple[int, int, int, int]:
        """Rows in outbox, payments, idempotency records and receipt counters."""

        def count(conn: Any) -> tuple[int, int, int, int]:
            return tuple(  # type: ignore[return-value]
                conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("outbox_entries", "payments", "outbox_idempotency", "receipt_counters")
            )

        return self.node.db.read(count)


async def start_node(
    tmp_path: Path,
    bills: list[dict[str, Any]],
    *,
    clock: Callable[[], float] = time.time,
    client_ssl: ssl.SSLContext | bool = True,
    monotonic: Callable[[], float] = time.monotonic,
    **overrides: Any,
) -> tuple[web.AppRunner, RunningNode]:
    """With `http_cert_file` in `overrides`, served over https with the context `edge serve`
    uses; `client_ssl` is the session's (e.g. one trusting the test CA)."""
    tokens_file = tmp_path / "tokens.toml"
    issued = {
        "cashier": tokens.add_token(tokens_file, "counter-1", ["inquire", "pay"]),
        "viewer": tokens.add_token(tokens_file, "kiosk-1", ["inquire"]),
        "admin": tokens.add_token(tokens_file, "ops", ["admin"]),
        "cashier2": tokens.add_token(tokens_file, "counter-2", ["inquire", "pay"]),
        "auditor": tokens.add_token(tokens_file, "audit-1", ["audit"]),
    }
    settings = config.Settings(
        node_id="dam-1", node_data_dir=tmp_path / "data", auth_tokens_file=tokens_file,
        http_host="127.0.0.1", http_port=0, ups_source="none", storage_min_free_mb=0, centre_url="",
    ).replace(**(NO_LIMITS | overrides))  # fmt: skip
    server_ssl = serving.server_context(settings)
    app = create_app(settings, clock=clock, monotonic=monotonic)
    # The same runner and guarded site as `edge serve`: the tests go through its limits.
    runner = server.runner(app, settings)
    await runner.setup()
    await server.site(runner, settings, ssl_context=server_ssl).start()
    port = runner.addresses[0][1]
    node = app[NODE]
    if bills:
        await node.db.write(lambda c: mirror.apply_changes(c, bills, 1, now=clock()))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl))
    scheme = "https" if server_ssl else "http"
    return runner, RunningNode(
        f"{scheme}://127.0.0.1:{port}", node, session, issued, tmp_path / "data", app
    )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningNode]:
    bills = [make_bill("0100234567", amount=150_000),
             make_bill("0100234567", "2026-03", amount=150_000, paid=150_000),
             make_bill("0100999999", amount=80_000, paid=30_000)]  # fmt: skip
    runner, rn = await start_node(tmp_path, bills, **DEFAULT_LIMITS)
    try:
        yield rn
    finally:
        await rn.session.close()
        await runner.cleanup()
