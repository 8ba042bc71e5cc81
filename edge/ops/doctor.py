"""`edge doctor`: is this server ready to run a node, and if not, why.

Each doctor check prints OK, WARN or FAIL with what it saw and, when it is not OK, what to
do. The exit status is 0 when nothing FAILs, 1 otherwise, 2 for an unusable configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import outbox
from edge import config, mirror, tokens
from edge.errors import ConfigError
from edge.ops import backup, probes
from edge.ops.probes import FAIL, OK, WARN, Check
from outbox import readers
from sync import signing

SERVICE_USER = "edge"
SLOW_FSYNC_S = 0.050
OLD_PENDING_S, LOST_PENDING_S = 3600.0, 72 * 3600.0


# --- local checks ----------------------------------------------------------------------


def check_data_dir(s: config.Settings) -> Check:
    d = s.node_data_dir
    if not d.is_dir():
        return Check(
            "data dir",
            FAIL,
            f"{d} does not exist",
            f"create it: install -d -o {SERVICE_USER} -g {SERVICE_USER} -m 750 {d}",
        )
    try:
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as exc:
        return Check(
            "data dir",
            FAIL,
            f"{d} is not writable: {exc}",
            f"chown -R {SERVICE_USER}:{SERVICE_USER} {d}",
        )
    detail = f"{d} is writable"
    try:
        service_uid = pwd.getpwnam(SERVICE_USER).pw_uid
    except KeyError:
        return Check("data dir", OK, detail)
    if d.stat().st_uid != service_uid:
        return Check(
            "data dir",
            WARN,
            f"{detail}, but not owned by the service user {SERVICE_USER}",
            f"the unit runs as {SERVICE_USER}: chown -R {SERVICE_USER}:{SERVICE_USER} {d}",
        )
    return Check("data dir", OK, f"{detail} (owner {SERVICE_USER})")


def check_free_space(s: config.Settings) -> Check:
    free_mb = shutil.disk_usage(s.node_data_dir).free / 2**20
    floor = s.storage_min_free_mb
    detail = f"{free_mb:,.0f} MB free (payments stop below storage.min_free_mb = {floor})"
    if free_mb < floor:
        return Check(
            "free space",
            FAIL,
            detail,
            "the node answers 507 storage_full: free space on that disk now",
        )
    if free_mb < max(4 * floor, 512):
        return Check("free space", WARN, detail, "little room left: move old backups off this disk")
    return Check("free space", OK, detail)


def check_fsync(s: config.Settings, rounds: int = 5) -> Check:
    timings = []
    try:
        with tempfile.NamedTemporaryFile(dir=s.node_data_dir) as fh:
            for _ in range(rounds):
                fh.write(os.urandom(4096))
                fh.flush()
                started = time.perf_counter()
                os.fsync(fh.fileno())
                timings.append(time.perf_counter() - started)
    except OSError as exc:
        return Check(
            "fsync",
            FAIL,
            f"fsync in {s.node_data_dir} failed: {exc}",
            "the disk or filesystem is failing: check dmesg and smartctl",
        )
    median = statistics.median(timings)
    detail = f"median {median * 1000:.1f} ms, worst {max(timings) * 1000:.1f} ms"
    if median > SLOW_FSYNC_S:
        return Check(
            "fsync",
            WARN,
            detail,
            "every payment commit waits for one fsync: a slow disk caps throughput;"
            " prefer an SSD, and check the disk is not failing (smartctl)",
        )
    return Check("fsync", OK, detail)


def _look(conn: sqlite3.Connection) -> tuple[Any, mirror.MirrorState, outbox.Stats]:
    return conn.execute("PRAGMA quick_check").fetchone(), mirror.state(conn), outbox.stats(conn)


async def check_database(s: config.Settings, out: list[Check]) -> int | None:
    """Integrity, mirror age and the oldest pending payment; returns the mirror cursor."""
    path = s.db_path
    if not path.exists():
        out.append(
            Check(
                "database",
                WARN,
                f"{path} does not exist yet",
                "it is created when the node first starts",
            )
        )
        return None
    try:
        async with backup.read_only(path) as conn:
            row, state, stats = await readers.run(conn, _look)
    except (sqlite3.Error, backup.BackupError) as exc:
        out.append(
            Check(
                "database",
                FAIL,
                f"{path} cannot be read: {exc}",
                "stop the node and restore the latest backup: edge restore",
            )
        )
        return None
    if row is None or row[0] != "ok":
        out.append(
            Check(
                "database",
                FAIL,
                f"quick_check: {row}",
                "stop the node (systemctl stop edge) and restore the latest backup"
                " (edge restore BACKUP --config ...)",
            )
        )
        return state.cursor
    out.append(
        Check(
            "database", OK, f"quick_check ok; {stats.last_seq} outbox entries, {state.bills} bills"
        )
    )
    out.append(_mirror_age(s, state))
    out.append(_pending_age(stats))
    return state.cursor


def _mirror_age(s: config.Settings, state: mirror.MirrorState) -> Check:
    if state.as_of is None:
        return Check(
            "mirror",
            WARN,
            "the mirror has never heard from the centre",
            "inquiries have no bills until the first pull: check the centre below",
        )
    age = time.time() - state.as_of
    detail = f"last heard from the centre {age / 60:.0f} min ago ({state.bills} bills)"
    if age > s.mirror_stale_after_s:
        return Check(
            "mirror",
            WARN,
            detail,
            "inquiries say stale: the link to the centre is down or refused (see below)",
        )
    return Check("mirror", OK, detail)


def _pending_age(stats: outbox.Stats) -> Check:
    age = stats.oldest_pending_age_s
    detail = (
        f"{stats.pending} payments wait for the centre"
        if age is None or stats.pending == 0
        else f"{stats.pending} payments wait, the oldest for {age / 3600:.1f} h"
    )
    if stats.rejected:
        detail += f"; {stats.rejected} rejected by the centre"
    if age is not None and age > LOST_PENDING_S:
        return Check(
            "outbox",
            FAIL,
            detail,
            "payments have waited longer than any expected outage: fix the link"
            " (see centre below), then edge replay --config ... --token-file ADMIN_TOKEN_FILE",
        )
    if (age is not None and age > OLD_PENDING_S) or stats.rejected:
        return Check(
            "outbox",
            WARN,
            detail,
            "check the link to the centre; rejected payments need an operator"
            " (dashboard with an admin token)",
        )
    return Check("outbox", OK, detail)


def _service_cannot_read(path: Path) -> str | None:
    """Why the service user could not read `path` (None: it can, or there is no such user)."""
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    st = path.stat()
    if st.st_uid == user.pw_uid and st.st_mode & 0o400:
        return None
    if st.st_gid == user.pw_gid and st.st_mode & 0o040:
        return None
    return f"the node runs as {SERVICE_USER} and cannot read it: chown {SERVICE_USER} {path}"


def _service_user_exists() -> bool:
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return False
    return True


def check_secret(s: config.Settings) -> tuple[Check, bytes | None]:
    """The rules the node starts under: >= 32 bytes of key, mode 0600, the service's file."""
    path = s.centre_secret_file
    unreadable = _service_cannot_read(path) if path.exists() else None
    if unreadable:
        return Check("secret", FAIL, f"{path} is not the node's", unreadable), None
    try:
        # With a service user, its ownership is checked above (doctor may run as root).
        secret = signing.read_secret(path, check_owner=not _service_user_exists())
    except Exception as exc:
        return Check(
            "secret",
            FAIL,
            str(exc),
            f"generate one: edge secret new --force {path}; chown {SERVICE_USER} {path};"
            f" and give the same text to the centre for [nodes.{s.node_id}]"
            " (next_secret_file while the old key is still in use)",
        ), None
    key = signing.key_id(secret)
    return Check("secret", OK, f"{path} ({len(secret)} bytes, mode 600, key id {key})"), secret


def check_tokens(s: config.Settings) -> Check:
    path = s.auth_tokens_file
    add = "edge token add --config CONFIG --name counter-1 --scope inquire,pay"
    try:
        clients = tokens.load_tokens(path)
    except ConfigError as exc:
        return Check("tokens", FAIL, str(exc), f"fix the file, or move it away and {add}")
    if not clients:
        return Check("tokens", WARN, f"no client tokens in {path}: no one can pay", add)
    unreadable = _service_cannot_read(path)
    if unreadable:
        return Check("tokens", FAIL, f"{path} is not readable by the node", unreadable)
    return Check("tokens", OK, f"{len(clients)} client tokens in {path}")


# --- running -------------------------------------------------------------------------


async def local_checks(s: config.Settings) -> tuple[list[Check], int | None]:
    out = [check_data_dir(s)]
    if out[0].level == FAIL:
        return out, None
    out += [check_free_space(s), check_fsync(s)]
    cursor = await check_database(s, out)
    return out, cursor


async def run(s: config.Settings, clock: Callable[[], float] = time.time) -> list[Check]:
    """Every check, in the order an administrator would fix things."""
    checks, cursor = await local_checks(s)
    checks.append(check_tokens(s))
    checks.append(probes.check_http_security(s))
    secret_check, secret = check_secret(s) if s.centre_url else (None, None)
    if secret_check is not None:
        checks.append(secret_check)
        checks.append(probes.check_link_security(s))
    checks.append(await probes.check_ups(s))
    checks += await probes.check_centre(s, secret, cursor, clock)
    checks.append(await probes.check_node(s))
    return checks


def report(checks: list[Check], out: Callable[[str], None] = print) -> int:
    width = max(len(c.name) for c in checks)
    for c in checks:
        out(f"{c.level:<4}  {c.name:<{width}}  {c.detail}")
        if c.advice and c.level != OK:
            out(f"{'':<4}  {'':<{width}}  -> {c.advice}")
    failed = sum(c.level == FAIL for c in checks)
    warned = sum(c.level == WARN for c in checks)
    out(f"{failed} FAIL, {warned} WARN, {len(checks) - failed - warned} OK")
    return 1 if failed else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"{args.config}: error: {exc}", file=sys.stderr)
        return 2
    return report(asyncio.run(run(settings)))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `doctor` to the `edge` command."""
    parser = sub.add_parser(
        "doctor",
        help="check this server: disk, database, UPS, centre, clock",
        description="Check the data directory, free space, fsync, the database, the UPS"
        " (NUT), the centre (a signed request) and the clock; say what to do about each"
        " problem. Exit 0 when nothing FAILs. Run it as the service user: sudo -u edge ...",
    )
    config.config_option(parser)
    parser.set_defaults(func=cmd_doctor)
