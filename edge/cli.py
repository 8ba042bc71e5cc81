"""The `edge` command: serve a node, manage tokens, run the demo and the reference centre."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from edge import __version__, config, tokens
from edge.errors import ConfigError, DatabaseError
from edge.ops import audit, backup, demo, doctor, notify
from sync.centre import cli as centre_cli

log = logging.getLogger(__name__)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    from edge import replication
    from edge.app import create_app

    settings = config.load(args.config)
    if settings.centre_url:
        replication.read_secret(settings)  # a bad secret file stops the start here (exit 2)
    app = create_app(settings)
    notify.install(app)
    log.info(
        "node %s (%s) serving on %s:%d, data in %s",
        settings.node_id, settings.node_governorate, settings.http_host, settings.http_port,
        settings.node_data_dir,
    )  # fmt: skip
    web.run_app(
        app,
        host=settings.http_host,
        port=settings.http_port,
        shutdown_timeout=settings.http_shutdown_timeout_s,
        print=None,
        access_log=None,
    )
    log.info("node stopped cleanly")
    return 0


def cmd_token_add(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    scopes = [s.strip() for s in args.scope.split(",") if s.strip()]
    token = tokens.add_token(settings.auth_tokens_file, args.name, scopes)
    print(f"token for {args.name} ({', '.join(scopes)}); shown once, store it now:")
    print(token)
    return 0


def _node_url(settings: config.Settings, path: str) -> str:
    host = config.probe_host(settings.http_host)
    return f"http://{host}:{settings.http_port}{path}"


def cmd_status(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    settings = config.load(args.config)
    try:
        with urllib.request.urlopen(_node_url(settings, "/v1/status"), timeout=10) as resp:  # noqa: S310
            doc = json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"edge: the node at {_node_url(settings, '')} does not answer: {exc}", file=sys.stderr
        )
        return 1
    print(json.dumps(doc, ensure_ascii=False, indent=2))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import json
    import os
    import urllib.error
    import urllib.request

    settings = config.load(args.config)
    token = args.token or os.environ.get("EDGE_ADMIN_TOKEN", "")
    if not token:
        print("edge: give an admin token with --token or EDGE_ADMIN_TOKEN", file=sys.stderr)
        return 2
    request = urllib.request.Request(  # noqa: S310
        _node_url(settings, "/v1/admin/replay"),
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            doc = json.load(resp)
    except urllib.error.HTTPError as exc:
        print(
            f"edge: the node refused: {exc.code} {exc.read().decode(errors='replace')}",
            file=sys.stderr,
        )
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"edge: the node does not answer: {exc}", file=sys.stderr)
        return 1
    print(f"replay triggered; {doc.get('pending')} entries pending")
    return 0


def cmd_secret_new(args: argparse.Namespace) -> int:
    from sync import signing

    path: Path = args.file
    if path.exists() and not args.force:
        print(f"edge: {path} exists; give --force to replace it", file=sys.stderr)
        return 1
    try:
        key = signing.write_secret(path, force=args.force)
    except OSError as exc:
        print(f"edge: cannot write {path}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote a new 32-byte secret to {path} (mode 600), key id {key}")
    return 0


def cmd_ups(args: argparse.Namespace) -> int:
    import asyncio

    from edge.ops import ups

    return asyncio.run(ups.report(config.load(args.config)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="Governorate edge node")
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node")
    serve.add_argument("--config", type=Path, required=True)
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="client tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    add = token.add_parser("add", help="create a client token (printed once)")
    add.add_argument("--config", type=Path, required=True)
    add.add_argument("--name", required=True, help="the client, e.g. counter-3")
    add.add_argument("--scope", default="inquire,pay", help="comma list of inquire,pay,admin,audit")
    add.set_defaults(func=cmd_token_add)

    status = sub.add_parser("status", help="print the running node's /v1/status")
    status.add_argument("--config", type=Path, required=True)
    status.set_defaults(func=cmd_status)

    replay = sub.add_parser("replay", help="ask the running node to replay its outbox now")
    replay.add_argument("--config", type=Path, required=True)
    replay.add_argument("--token", help="an admin token (or set EDGE_ADMIN_TOKEN)")
    replay.set_defaults(func=cmd_replay)

    secret = sub.add_parser("secret", help="shared secrets with the centre").add_subparsers(
        dest="secret_cmd", required=True
    )
    new = secret.add_parser("new", help="write a fresh 32-byte hex secret, mode 0600")
    new.add_argument("file", type=Path)
    new.add_argument("--force", action="store_true", help="replace an existing file")
    new.set_defaults(func=cmd_secret_new)

    ups = sub.add_parser("ups", help="print the UPS as the node sees it (exit 1: no data)")
    ups.add_argument("--config", type=Path, required=True)
    ups.set_defaults(func=cmd_ups)

    centre_cli.register(sub)
    demo.register(sub)
    doctor.register(sub)
    backup.register(sub)
    audit.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"edge: configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"edge: database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
