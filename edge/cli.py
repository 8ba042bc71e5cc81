"""The `edge` command: serve a node, replay, secrets, and the other tools' `register(sub)`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edge import __version__, config, preflight, serving
from edge.errors import ConfigError, DatabaseError
from edge.ops import (
    audit,
    backup,
    checkconfig,
    clearing,
    demo,
    doctor,
    notify,
    resend,
    restore,
    tokencli,
    transfer,
)
from edge.ops import payments as payments_cli
from edge.ops import rejected as rejected_cli
from sync.centre import cli as centre_cli

log = logging.getLogger(__name__)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    from edge.app import create_app
    from edge.web import server

    # Every problem at once, the same that check-config finds (exit 2): settings and files.
    settings = preflight.check(args.config)
    ssl_context = serving.server_context(settings)  # preflight loaded it: this one is kept
    app = create_app(settings)
    notify.install(app)
    serving.warn_if_insecure(settings)
    log.info(
        "starting node %s (%s): %s on %s:%d%s, data in %s",
        settings.node_id, settings.node_governorate, "https" if ssl_context else "http",
        settings.http_host, settings.http_port,
        " (client certificates required)" if settings.http_client_ca_file else "",
        settings.node_data_dir,
    )  # fmt: skip
    server.serve(app, settings, ssl_context=ssl_context)
    log.info("node stopped cleanly")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    settings = config.load(args.config)
    context = serving.local_client_context(settings)
    url = serving.local_url(settings, "/v1/status")
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:  # noqa: S310
            doc = json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"edge: the node at {serving.local_url(settings)} does not answer: {exc}"
            + _hint(settings),
            file=sys.stderr,
        )
        return 1
    print(json.dumps(doc, ensure_ascii=False, indent=2))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    settings = config.load(args.config)
    token = tokencli.read_token(args)
    context = serving.local_client_context(settings)
    request = urllib.request.Request(  # noqa: S310
        serving.local_url(settings, f"/v1/admin/replay?wait={REPLAY_WAIT_S}"),
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        timeout = REPLAY_WAIT_S + 10
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
            doc = json.load(resp)
    except urllib.error.HTTPError as exc:
        print(
            f"edge: the node refused: {exc.code} {exc.read().decode(errors='replace')}",
            file=sys.stderr,
        )
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"edge: the node does not answer: {exc}" + _hint(settings), file=sys.stderr)
        return 1
    link = doc.get("link") or {"state": "up"}  # a node before `link` in the reply: as before
    if link.get("state") != "up":
        why = link.get("last_error") or "no answer from the centre yet"
        print(
            f"edge: replay not done: the link to the centre is {link.get('state')}: {why};"
            f" {doc.get('pending')} entries wait, and the node keeps retrying by itself",
            file=sys.stderr,
        )
        return 1
    print(f"replay triggered, the centre answers; {doc.get('pending')} entries pending")
    return 0


REPLAY_WAIT_S = 10  # how long `edge replay` waits for the centre's answer


def _hint(settings: config.Settings) -> str:
    hint = serving.local_failure_hint(settings)
    return f" ({hint})" if hint else ""


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
    config.config_option(serve)
    serve.set_defaults(func=cmd_serve)

    tokencli.register(sub)

    status = sub.add_parser("status", help="print the running node's /v1/status")
    config.config_option(status)
    status.set_defaults(func=cmd_status)

    replay = sub.add_parser("replay", help="ask the running node to replay its outbox now")
    config.config_option(replay)
    tokencli.token_arguments(replay, f"an admin token (or {tokencli.ENV})")
    replay.set_defaults(func=cmd_replay)

    secret = sub.add_parser("secret", help="shared secrets with the centre").add_subparsers(
        dest="secret_cmd", required=True
    )
    new = secret.add_parser("new", help="write a fresh 32-byte hex secret, mode 0600")
    new.add_argument("file", type=Path, help="where to write it (e.g. /etc/edge/centre.secret)")
    new.add_argument("--force", action="store_true", help="replace an existing file")
    new.set_defaults(func=cmd_secret_new)

    ups = sub.add_parser("ups", help="print the UPS as the node sees it (exit 1: no data)")
    config.config_option(ups)
    ups.set_defaults(func=cmd_ups)

    centre_cli.register(sub)
    demo.register(sub)
    checkconfig.register(sub)
    doctor.register(sub)
    backup.register(sub)
    restore.register(sub)
    resend.register(sub)
    audit.register(sub)
    payments_cli.register(sub)
    rejected_cli.register(sub)
    clearing.register(sub)
    transfer.register(sub)
    return parser


PRIVATE_UMASK = 0o077  # databases, backups, tokens and secrets are nobody else's business


def main(argv: Sequence[str] | None = None) -> int:
    # First, before anything can open a file; the modules set 0600 themselves as well.
    os.umask(PRIVATE_UMASK)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems or (str(exc),):
            print(f"edge: configuration error: {problem}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"edge: database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
