"""`edge token add|list|revoke`, and how every command that needs a token reads it.

A token is never taken from the command line: argv shows in `ps` and in shell history.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time

from edge import config, lastused, tokens
from edge.db import DB_NAME
from edge.errors import ConfigError
from sync.timefmt import iso_or_none

ENV = "EDGE_ADMIN_TOKEN"


def token_arguments(parser: argparse.ArgumentParser, what: str = f"the token (or {ENV})") -> None:
    parser.add_argument(
        "--token-file", metavar="FILE", help=f"{what}, read from FILE ('-': standard input)"
    )
    # Kept only to refuse it with a reason instead of argparse's bare "unrecognized argument".
    parser.add_argument("--token", help=argparse.SUPPRESS)


def read_token(args: argparse.Namespace) -> str:
    """The token from --token-file (a file, or '-' for stdin) or EDGE_ADMIN_TOKEN."""
    token = given_token(args, ENV)
    if not token:
        raise ConfigError(f"give a token with --token-file FILE, --token-file - or {ENV}")
    return token


def given_token(args: argparse.Namespace, env: str | None) -> str:
    """The token from --token-file or the `env` variable; empty when neither gives one."""
    if args.token is not None:
        raise ConfigError(
            "--token is refused: a token on the command line shows in `ps` and shell history;"
            f" use --token-file FILE, --token-file - (standard input) or {ENV}"
        )
    if args.token_file == "-":  # noqa: S105 - "-" is standard input, not a secret
        token = sys.stdin.readline().strip()
    elif args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.readline().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {args.token_file}: {exc}") from exc
    else:
        token = os.environ.get(env, "").strip() if env else ""
    return token


def cmd_add(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    scopes = [s.strip() for s in args.scope.split(",") if s.strip()]
    expires_at = None if args.expires is None else time.time() + tokens.parse_duration(args.expires)
    token = tokens.add_token(settings.auth_tokens_file, args.name, scopes, expires_at=expires_at)
    until = "" if expires_at is None else f", expires {iso_or_none(expires_at)}"
    print(f"token for {args.name} ({', '.join(scopes)}{until}); shown once, store it now:")
    print(token)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    records = tokens.read_records(settings.auth_tokens_file)
    unknown = "never"
    try:
        used = lastused.read_all(settings.node_data_dir / DB_NAME)
    except sqlite3.Error as exc:  # the tokens are still worth listing
        print(f"edge: cannot read the last uses from the node's database: {exc}", file=sys.stderr)
        used, unknown = {}, "unknown"
    now = time.time()
    rows = [("NAME", "SCOPES", "STATE", "CREATED", "LAST USED", "EXPIRES")]
    for r in records:
        rows.append((
            r.name, ",".join(r.scopes), r.state(now), iso_or_none(r.created_at) or "-",
            iso_or_none(used.get(r.name)) or unknown, iso_or_none(r.expires_at) or "never",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    record = tokens.revoke_token(settings.auth_tokens_file, args.name)
    print(
        f"token {record.name} revoked at {iso_or_none(record.revoked_at)};"
        " a running node refuses it within 2 s"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="client tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    add = token.add_parser("add", help="create a client token (printed once)")
    config.config_option(add)
    add.add_argument("--name", required=True, help="the client, e.g. counter-3")
    add.add_argument(
        "--scope", default="inquire,pay", help=f"comma list of {','.join(tokens.SCOPES)}"
    )
    add.add_argument("--expires", metavar="N{h,d}", help="valid for N hours or days, e.g. 90d")
    add.set_defaults(func=cmd_add)

    listing = token.add_parser("list", help="name, scopes, state, created, last used, expiry")
    config.config_option(listing)
    listing.set_defaults(func=cmd_list)

    revoke = token.add_parser("revoke", help="revoke a token (the node refuses it within 2 s)")
    config.config_option(revoke)
    revoke.add_argument("name", help="the token's name, as edge token list shows it")
    revoke.set_defaults(func=cmd_revoke)
