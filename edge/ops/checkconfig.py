"""`edge check-config`: the checks `edge serve` makes before it starts (edge.preflight), all
at once, each naming the key and the fix; then every setting with where it came from, and
the valid but unwise ones as warnings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

from edge import config, preflight, serving
from edge.errors import ConfigError
from sync import tls


def effective(path: Path, env: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(key, value, source) for every setting; raises ConfigError naming the bad key."""
    settings = config.load(path, env)
    with path.open("rb") as fh:
        in_file = set(config.flatten(tomllib.load(fh), path))
    environ = os.environ if env is None else env
    rows = []
    for field in fields(settings):
        names = [field.name, *(old for old, new in config.ALIASES.items() if new == field.name)]
        given = [config.variable_of(n) for n in names if config.variable_of(n) in environ]
        source = f"env {given[0]}" if given else "file" if field.name in in_file else "default"
        value = getattr(settings, field.name)
        shown = f'"{value}"' if isinstance(value, str | Path) else str(value)
        rows.append((config.key_of(field.name), shown, source))
    return rows


def cmd_check_config(args: argparse.Namespace) -> int:
    """The checks `edge serve` makes before it starts (edge.preflight), all at once."""
    if args.file is not None and args.config is not None and args.file != args.config:
        print(f"edge: give the file once: --config {args.config} or {args.file}", file=sys.stderr)
        return 2
    path = args.config or args.file
    if path is None:
        print("edge: give the node's settings file: edge check-config --config FILE",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        settings = preflight.check(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: error: {problem}", file=sys.stderr)
        count = len(exc.problems)
        print(f"{path}: {count} {'error' if count == 1 else 'errors'}: edge serve would refuse"
              " this configuration", file=sys.stderr)  # fmt: skip
        return 2
    rows = effective(path)
    width = max(len(key) for key, _, _ in rows)
    for key, value, source in rows:
        print(f"{key:<{width}} = {value:<40} # {source}")
    for warning in config_warnings(settings):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    print(f"{path}: valid. Next: edge doctor --config {path}", file=sys.stderr)
    return 0


def config_warnings(s: config.Settings) -> list[str]:
    """Valid but unwise settings: check-config says so without refusing the file."""
    out = []
    if tls.insecure(s.centre_url):
        out.append(f"centre.url {tls.origin(s.centre_url)} is plain http:// to another machine:"
                   " use https:// with centre.ca_file (deploy/README.md, TLS)")  # fmt: skip
    tls_keys = [k for k in ("ca_file", "cert_file", "key_file") if getattr(s, f"centre_{k}")]
    if tls_keys and not s.centre_url.startswith("https://"):
        out.append(
            f"centre.{', centre.'.join(tls_keys)} set but unused: centre.url is not https://"
        )
    if serving.insecure(s):
        out.append(f"http.host {s.http_host or '*'} serves plain http to other machines:"
                   f" {serving.PLAIN_ADVICE}")  # fmt: skip
    return out


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `check-config` to the `edge` command."""
    parser = sub.add_parser(
        "check-config",
        help="check a node's settings as edge serve does, and print the effective settings",
        description="Load FILE, then EDGE_* variables, and check them exactly as edge serve"
        " does before it starts: every value, unknown keys and variables, and the files they"
        " name (secret, tokens, certificates and keys, UPS password: there, loadable, mode"
        " 0600 and owned by this user or root for secrets and keys). Print every setting with"
        " where it came from; exit 2 listing every error. Run it as the service user.",
    )
    parser.add_argument(
        "file", type=Path, metavar="FILE", nargs="?", help="the same as --config FILE"
    )
    config.config_option(parser, required=False)
    parser.set_defaults(func=cmd_check_config)
