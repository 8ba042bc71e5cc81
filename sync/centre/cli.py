"""The `edge centre ...` commands (DESIGN 6.1): serve, import, export, ledger, seed, pay,
credits, cycle, verify-receipt.

`register(subparsers)` adds the group to the `edge` parser; each command is
`args.func(args) -> int` (0 ok, 1 refused, 2 bad configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from sync import bill, protocol
from sync.centre import (
    bills,
    clearing,
    credits,
    fines,
    migrate,
    receipts,
    requests,
    seed,
    transfers,
)
from sync.centre.app import create_app
from sync.centre.config import CentreSettings, load_settings
from sync.centre.connect import open_store
from sync.centre.stores import CentreDB
from sync.errors import CentreConfigError, ImportFailed, SyncError
from sync.fines import Rule
from sync.progress import Progress

log = logging.getLogger(__name__)
T = TypeVar("T")


def current_cycle(today: date | None = None) -> str:
    """Cycles are two months long and start in odd months."""
    day = today or date.today()
    return f"{day.year:04d}-{day.month - (day.month - 1) % 2:02d}"


async def _with_store(settings: CentreSettings, job: Callable[[CentreDB], Awaitable[T]]) -> T:
    """`job(store)` on the store `[centre] database` names, opened for it and closed after."""
    store = open_store(settings)
    await store.open()
    try:
        return await job(store)
    finally:
        await store.close()


def _run(args: argparse.Namespace, action: Callable[[CentreSettings], int]) -> int:
    try:
        return action(load_settings(args.config))
    except CentreConfigError as exc:
        for problem in exc.detail.splitlines():  # every problem in the file, one a line
            print(f"edge centre: configuration error: {problem}", file=sys.stderr)
        return 2
    except SyncError as exc:
        print(f"edge centre: {exc.detail}", file=sys.stderr)
        return 1


def cmd_serve(args: argparse.Namespace) -> int:
    def action(settings: CentreSettings) -> int:
        if args.port is not None:  # one file for several processes (edge-centre@.service)
            settings = dataclasses.replace(settings, port=args.port)
        context = settings.ssl_context()
        mode = "http" if context is None else "https"
        if settings.client_ca_file is not None:
            mode += " (client certificates required)"
        log.info("centre on %s:%d, %s, with %d nodes", settings.host, settings.port, mode,
                 len(settings.nodes))  # fmt: skip
        web.run_app(
            create_app(settings), host=settings.host, port=settings.port, ssl_context=context
        )
        return 0

    return _run(args, action)


def cmd_check_config(args: argparse.Namespace) -> int:
    """What `serve` checks before it starts: the file (every problem at once), then TLS."""

    def action(settings: CentreSettings) -> int:
        context = settings.ssl_context()
        print(f"{args.config}: valid: {len(settings.nodes)} nodes, data in {settings.data_dir},"
              f" serving {'http' if context is None else 'https'} on {settings.host}:"
              f"{settings.port}", file=sys.stderr)  # fmt: skip
        return 0

    return _run(args, action)


def cmd_import(args: argparse.Namespace) -> int:
    if args.file is not None:  # `import outbox FILE`: a node's transfer file (PROTOCOL.md 11)
        if str(args.csv) != "outbox":
            print("edge centre: import takes BILLS.csv, or outbox FILE", file=sys.stderr)
            return 2
        return transfers.cmd_import_outbox(args)

    def action(settings: CentreSettings) -> int:
        rows, result = import_bills(settings, args.csv)
        print(f"{rows} rows: {result.inserted} new, {result.updated} changed,"
              f" {result.unchanged} unchanged")  # fmt: skip
        return 0

    return _run(args, action)


def import_bills(settings: CentreSettings, path: Path) -> tuple[int, bills.UpsertResult]:
    """Check the whole file first (a bad row changes nothing), then apply it in chunks of
    `bills.CHUNK` rows, one write job each, while the next chunk is read: memory stays flat.
    Cut short after the check (killed, disk full), the chunks committed stay; running the
    same import again finishes it, the rows already in counting as unchanged."""
    governorate = settings.require_governorate()
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc}") from exc
    with Progress(f"check {path.name}", size, unit="B") as checking:
        rows = bills.check_csv(path, read=checking.advance)
    return rows, asyncio.run(_apply_csv(settings, governorate, path, rows))


async def _apply_csv(
    settings: CentreSettings, governorate: str, path: Path, rows: int
) -> bills.UpsertResult:
    now, totals = time.time(), [0, 0, 0]
    store = open_store(settings)
    await store.open()
    applied = 0
    try:
        with Progress(f"import {path.name}", rows, unit="rows") as progress:

            async def apply(chunk: list[bills.BillInput]) -> None:
                nonlocal applied
                done = await store.upsert_bills(governorate, chunk, now)
                applied += len(chunk)
                totals[0], totals[1] = totals[0] + done.inserted, totals[1] + done.updated
                totals[2] += done.unchanged
                progress.advance(len(chunk))

            in_flight: asyncio.Task[None] | None = None
            chunk: list[bills.BillInput] = []
            try:
                for _, bill in bills.iter_csv(path):
                    chunk.append(bill)
                    if len(chunk) >= bills.CHUNK:
                        if in_flight is not None:
                            await in_flight
                        in_flight = asyncio.create_task(apply(chunk))
                        await asyncio.sleep(0)  # hand it to the writer, then read on
                        chunk = []
                if in_flight is not None:
                    await in_flight
                    in_flight = None
                await apply(chunk)
            except ImportFailed as exc:
                raise ImportFailed(
                    f"{path} changed while it was imported ({exc.detail}); {applied} rows were"
                    " applied: check the file and import it again"
                ) from exc
            finally:
                if in_flight is not None:
                    in_flight.cancel()
    finally:
        await store.close()
    if applied != rows:
        raise ImportFailed(f"{path} changed while it was imported: {rows} rows checked,"
                           f" {applied} applied; import it again")  # fmt: skip
    return bills.UpsertResult(*totals)


def cmd_ledger(args: argparse.Namespace) -> int:
    def action(settings: CentreSettings) -> int:
        rows = asyncio.run(_with_store(settings, lambda db: db.ledger_rows(args.node)))
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(clearing.LEDGER_HEADER)
        out.writerows(rows)
        return 0

    return _run(args, action)


def cmd_report_clearing(args: argparse.Namespace) -> int:
    def action(settings: CentreSettings) -> int:
        try:
            day, tz = date.fromisoformat(args.date), ZoneInfo(args.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            print("edge centre: --date is YYYY-MM-DD, --timezone an IANA zone", file=sys.stderr)
            return 2
        rows = asyncio.run(_with_store(settings, lambda db: db.clearing(day, tz, args.governorate)))
        clearing.show(rows, args.format, sys.stdout)
        return 0

    return _run(args, action)


def cmd_seed(args: argparse.Namespace) -> int:
    def action(settings: CentreSettings) -> int:
        result = asyncio.run(seed.seed_database(settings, args.bills, args.cycle, args.seed))
        print(f"seeded {result.inserted} bills of cycle {args.cycle} for {settings.governorate}")
        return 0

    return _run(args, action)


def cmd_pay(args: argparse.Namespace) -> int:
    def action(settings: CentreSettings) -> int:
        now = time.time()
        paid = asyncio.run(
            _with_store(settings, lambda db: db.pay_online(args.bill_id, args.amount, now))
        )
        print(f"{paid.bill_id}: paid {paid.paid} after {paid.applied} applied,"
              f" credit {paid.credit}, version {paid.version}")  # fmt: skip
        return 0

    return _run(args, action)


def cmd_cycle(args: argparse.Namespace) -> int:
    def action(settings: CentreSettings) -> int:
        governorate = settings.require_governorate()
        rng = random.Random(args.seed)  # noqa: S311 - demo consumption figures, not a secret

        async def issue(db: CentreDB) -> bills.UpsertResult:
            latest = await db.accounts_without_cycle(governorate, args.cycle)
            new = seed.cycle_bills(latest, args.cycle, rng)
            return await db.upsert_bills(governorate, new, time.time())

        result = asyncio.run(_with_store(settings, issue))
        print(f"issued {result.inserted} bills of cycle {args.cycle} for {governorate}")
        return 0

    return _run(args, action)


def cmd_credits(args: argparse.Namespace) -> int:
    def action(settings: CentreSettings) -> int:
        found = asyncio.run(_with_store(settings, lambda db: db.credit_accounts(args.governorate)))
        return credits.show(found, args.format)

    return _run(args, action)


VERIFY_EXIT = {receipts.GENUINE: 0, receipts.FORGED: 1, receipts.UNKNOWN: 3}
VERIFY_DB_ERROR = 4  # not 1: an unreadable database must never read as "forged"


def cmd_fine_rule(args: argparse.Namespace) -> int:
    def action(settings: CentreSettings) -> int:
        def job(db: CentreDB) -> Awaitable[Rule]:
            return db.publish_fine_rule(args.governorate, args.effective, args.grace_days,
                                        args.fixed, args.percent_bp, args.cap, time.time())  # fmt: skip

        try:
            rule = asyncio.run(_with_store(settings, job))
        except ValueError as exc:
            print(f"edge centre fine-rule: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(protocol.rule_map(rule)))
        return 0

    return _run(args, action)


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    def action(settings: CentreSettings) -> int:
        try:
            check = asyncio.run(
                _with_store(settings, lambda db: db.verify_receipt(args.text, settings.nodes))
            )
        except SyncError as exc:
            print(f"edge centre: {exc.detail}", file=sys.stderr)
            return VERIFY_DB_ERROR
        print(f"{check.outcome}: {check.detail}")
        return VERIFY_EXIT[check.outcome]

    return _run(args, action)


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return int(text)


def _cycle(text: str) -> str:
    if not bill.CYCLE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a cycle YYYY-MM")
    return text


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `centre` and its sub-commands to the `edge` command's sub-parsers."""
    centre = subparsers.add_parser("centre", help="run and operate the reference centre")
    sub = centre.add_subparsers(dest="centre_command", required=True, metavar="COMMAND")

    def command(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--config", required=True, type=Path, help="the centre's TOML file")
        parser.set_defaults(func=func)
        return parser

    parser = command("serve", "run the reference centre", cmd_serve)
    parser.add_argument("--port", type=_port, help="listen here instead of [centre] port")
    command(
        "check-config",
        "check the centre's file as serve does (every key, secret and TLS file); exit 2 listing"
        " every error",
        cmd_check_config,
    )
    parser = command(
        "import",
        "load or update bills from a billing export (CSV); `import outbox FILE --verdicts-out"
        " V`: record a node's transfer file and write the signed verdicts",
        cmd_import,
    )
    parser.add_argument(
        "csv", type=Path, metavar="BILLS.csv|outbox", help="a billing export, or the word outbox"
    )
    parser.add_argument(
        "file", type=Path, nargs="?", metavar="FILE", help="outbox: the node's file"
    )
    parser.add_argument(
        "--verdicts-out", type=Path, metavar="FILE", help="outbox: where to write the verdicts"
    )
    transfers.register(command)
    parser = command("ledger", "the entries recorded from nodes, as CSV", cmd_ledger)
    parser.add_argument("--node", help="only this node's entries")
    report = sub.add_parser("report", help="reports for clearing").add_subparsers(
        dest="report_command", required=True, metavar="REPORT"
    )
    parser = report.add_parser("clearing", help="the day's clearing report (read-only)")
    parser.add_argument("--config", required=True, type=Path, help="the centre's TOML file")
    parser.add_argument("--date", required=True, help="the recording day YYYY-MM-DD")
    parser.add_argument("--governorate", help="only this governorate (e.g. DAM)")
    parser.add_argument("--timezone", default="Asia/Damascus", help="whose day (IANA zone)")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="default csv")
    parser.set_defaults(func=cmd_report_clearing)
    parser = command("seed", "add realistic demo bills", cmd_seed)
    parser.add_argument("--bills", type=_positive, required=True, help="how many bills")
    parser.add_argument("--cycle", type=_cycle, default=current_cycle(), help="YYYY-MM")
    parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable data)")
    parser = command("pay", "record an online payment at the centre", cmd_pay)
    parser.add_argument("bill_id", metavar="BILL_ID", help="the bill paid")
    parser.add_argument("amount", type=_positive, metavar="AMOUNT", help="piastres")
    credits.register(command, cmd_credits)
    fines.register(command, cmd_fine_rule)
    requests.register(sub, _run, _with_store)
    migrate.register(sub)
    parser = command("cycle", "issue a new cycle's bill for every account", cmd_cycle)
    parser.add_argument("--cycle", type=_cycle, required=True, help="YYYY-MM")
    parser.add_argument("--seed", type=int, default=None, help="random seed for consumption")
    parser = command(
        "verify-receipt",
        "check a receipt's QR text: genuine (exit 0), forged (1) or genuine-but-unknown (3)",
        cmd_verify_receipt,
    )
    parser.add_argument("text", metavar="QR_TEXT", help="the text read from the receipt's QR")
