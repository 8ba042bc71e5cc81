"""`edge demo`: a reference centre seeded with a demo governorate, and a node against it.

Both run in this one process on embedded SQLite under one data dir; the node's config is
written to DIR/edge.toml and the centre's to DIR/centre.toml, so the operator tools
(`edge status --config DIR/edge.toml`, `edge centre pay --config DIR/centre.toml ...`) work
on them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import sqlite3
from pathlib import Path

from aiohttp import web

from edge import config, mirror, tokens
from edge.app import create_app
from edge.node import NODE, Node
from edge.ops import tokencli
from sync import signing
from sync.centre import app as centre_app
from sync.centre import seed
from sync.centre.cli import current_cycle
from sync.centre.config import CentreSettings, NodeSettings

log = logging.getLogger(__name__)
NODE_ID, GOV = "dam-1", "DAM"


def _secret_file(path: Path) -> bytes:
    """The demo's shared secret: made once (32 bytes, mode 0600) and read under the rules."""
    if not path.exists():
        signing.write_secret(path)
    return signing.read_secret(path)


def _token(data: Path, tokens_file: Path, name: str, scopes: list[str], given: str | None) -> str:
    """The demo keeps its tokens in plain files beside the data so the README's curl works."""
    plain = data / f"{name}.token"
    if given:
        plain.write_text(given + "\n")
    if plain.exists():
        token = plain.read_text().strip()
        if tokens.hash_token(token) not in tokens.load_tokens(tokens_file):
            _append_hash(tokens_file, f"{name}-{secrets.token_hex(3)}", token, scopes)
        return token
    token = tokens.add_token(tokens_file, f"{name}-{secrets.token_hex(3)}", scopes)
    plain.write_text(token + "\n")
    plain.chmod(0o600)
    return token


def _append_hash(tokens_file: Path, name: str, token: str, scopes: list[str]) -> None:
    with tokens_file.open("a", encoding="utf-8") as fh:
        quoted = ", ".join(f'"{s}"' for s in scopes)
        fh.write(f'\n[tokens."{name}"]\nhash = "{tokens.hash_token(token)}"\nscopes = [{quoted}]\n')


def _write_node_config(path: Path, s: config.Settings) -> None:
    path.write_text(
        "# Written by `edge demo`; see deploy/edge.toml.example for every key.\n"
        f'[node]\nid = "{s.node_id}"\ngovernorate = "{s.node_governorate}"\n'
        f'data_dir = "{s.node_data_dir}"\n'
        f'[http]\nhost = "{s.http_host}"\nport = {s.http_port}\n'
        f'[auth]\ntokens_file = "{s.auth_tokens_file}"\n'
        f'[centre]\nurl = "{s.centre_url}"\nsecret_file = "{s.centre_secret_file}"\n'
        f"pull_interval_s = {s.centre_pull_interval_s}\n"
        f'[ups]\nsource = "{s.ups_source}"\n'
    )


def _toml(value: Path | str) -> str:
    """A TOML basic string (paths may hold quotes or backslashes)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_centre_config(path: Path, s: CentreSettings, port: int, secret_file: Path) -> None:
    """The running centre's own config: every `edge centre` command works with --config it."""
    path.write_text(
        "# Written by `edge demo`: the demo's centre, for `edge centre ... --config` this file.\n"
        f'[centre]\ndata_dir = {_toml(s.data_dir)}\nhost = "127.0.0.1"\nport = {port}\n'
        f'governorate = "{GOV}"\n'
        f'[nodes.{NODE_ID}]\ngovernorate = "{GOV}"\nsecret_file = {_toml(secret_file)}\n'
    )


def _sample_accounts(db: Path, n: int = 3) -> list[tuple[str, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT account, amount - paid FROM bills WHERE paid < amount ORDER BY account LIMIT ?",
            (n,),
        ).fetchall()
    finally:
        conn.close()
    return [(str(a), int(d)) for a, d in rows]


async def run_demo(args: argparse.Namespace, data: Path) -> int:
    secret_path = data / f"{NODE_ID}.secret"
    secret = _secret_file(secret_path)
    centre_settings = CentreSettings(
        data_dir=data / "centre", host="127.0.0.1", port=args.centre_port, governorate=GOV,
        nodes={NODE_ID: NodeSettings(governorate=GOV, secret=secret)},
    )  # fmt: skip
    centre_settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not centre_settings.db_path.exists():
        print(f"seeding the demo centre with {args.bills} {GOV} accounts ...", flush=True)
        await seed.seed_database(centre_settings, args.bills, current_cycle(), seed=2026)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    centre_runner = web.AppRunner(centre_app.create_app(centre_settings), access_log=None)
    await centre_runner.setup()
    await web.TCPSite(centre_runner, "127.0.0.1", args.centre_port).start()
    centre_port = centre_runner.addresses[0][1]
    centre_config = data / "centre.toml"
    _write_centre_config(centre_config, centre_settings, centre_port, secret_path)

    tokens_file = data / "tokens.toml"
    given = tokencli.given_token(args, None) or None
    cashier = _token(data, tokens_file, "cashier", ["inquire", "pay"], given)
    admin = _token(data, tokens_file, "admin", ["admin"], None)
    settings = config.Settings(
        node_id=NODE_ID, node_governorate=GOV, node_data_dir=data / "node",
        http_host=args.host, http_port=args.port, auth_tokens_file=tokens_file,
        centre_url=f"http://127.0.0.1:{centre_port}", centre_secret_file=secret_path,
        centre_pull_interval_s=5.0, ups_source=args.ups, power_final_replay_s=5.0,
    )  # fmt: skip
    config.validate(settings)
    node_app = create_app(settings)
    node_runner = web.AppRunner(node_app, access_log=None)
    try:
        await node_runner.setup()
        await web.TCPSite(node_runner, args.host, args.port).start()
        port = node_runner.addresses[0][1]
        _write_node_config(data / "edge.toml", settings.replace(http_port=port))
        url = f"http://{config.probe_host(args.host)}:{port}"
        await _first_pull(node_app[NODE], stop)
        samples = _sample_accounts(centre_settings.db_path)
        print(f"\nedge demo: node {NODE_ID} ({GOV}) and a reference centre are running", flush=True)
        print(f"  Dashboard:     {url}/", flush=True)
        print(f"  API:           {url}/v1/status", flush=True)
        print(f"  Centre:        http://127.0.0.1:{centre_port}", flush=True)
        print(f"  Cashier token: {cashier}", flush=True)
        print(f"  Admin token:   {admin}", flush=True)
        print(f"  Node config:   {data / 'edge.toml'}", flush=True)
        print(f"  Centre config: {centre_config}", flush=True)
        for account, due in samples:
            print(f"  Sample account: {account} (due {due} piastres)", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await stop.wait()
        print("stopping ...", flush=True)
    finally:
        # The node first: its final replay still reaches the centre.
        await node_runner.cleanup()
        await centre_runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    print("edge demo stopped cleanly", flush=True)
    return 0


async def _first_pull(node: Node, stop: asyncio.Event, timeout_s: float = 120.0) -> None:
    """Wait until the node's mirror holds the centre's bills, so the sample accounts answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline and not stop.is_set():
        if node.db.read(lambda c: mirror.state(c).cursor) is not None:
            return
        await asyncio.sleep(0.1)
    log.warning("the mirror has not finished its first pull yet; inquiries may answer 404")


def cmd_demo(args: argparse.Namespace) -> int:
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run_demo(args, data))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run a reference centre and a node against it")
    demo.add_argument("--port", type=int, default=8080, help="the node's port (0: any free one)")
    demo.add_argument("--host", default="127.0.0.1", help="the node's address")
    demo.add_argument("--data", default="edge-demo", help="data dir (default ./edge-demo)")
    tokencli.token_arguments(demo, "a cashier token to use instead of a new one")
    demo.add_argument("--bills", type=int, default=10_000, help="demo accounts to seed")
    demo.add_argument("--centre-port", type=int, default=0, help="the centre's port (0: any)")
    demo.add_argument(
        "--ups", default="none", choices=("none", "nut", "psutil"), help="ups.source (default none)"
    )
    demo.set_defaults(func=cmd_demo)
