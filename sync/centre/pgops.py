"""The PostgreSQL SQL of the centre's operations (sync.centre.pgstore runs each in its
transaction): a batch's reads and writes, imports by COPY, online payments, requests' statuses,
fine rules and the reports. Every decision is the shared one (verdicts, bills, requests,
fines, receipts, clearing); only the SQL is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, tzinfo
from typing import Any

from sync import receiptcode
from sync.bill import CYCLE
from sync.centre import bills, clearing, corrections, fines, readings, receipts, requests, verdicts
from sync.centre.bills import BillInput, OnlinePayment, UpsertResult
from sync.centre.config import NodeSettings
from sync.centre.credits import AccountCredit, Source
from sync.errors import ImportFailed
from sync.fines import Rule
from sync.timefmt import iso

Conn = Any  # an asyncpg connection (asyncpg ships no type information)
_ENTRY = f"SELECT {clearing.ENTRY_COLUMNS} FROM entries"
PAGE = 1_000  # entries per fetch of a report


def _tuples(rows: Iterable[Any]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in rows]


# --- one batch (record_batch) ---------------------------------------------------------


async def known(conn: Conn, ids: list[str]) -> dict[str, verdicts.Stored]:
    # An entry's credit is its row in `credits` (source = the entry id), so a resend is
    # answered with the credit its first verdict gave.
    rows = await conn.fetch(
        "SELECT e.id, e.node, e.hash, e.verdict, e.reason, e.version, COALESCE(c.amount, 0),"
        " e.fine FROM entries e LEFT JOIN credits c ON c.source = e.id"
        " WHERE e.id = ANY($1::text[])",
        sorted(set(ids)),
    )
    return {r[0]: verdicts.Stored(*tuple(r)[1:]) for r in rows}


async def facts(conn: Conn, found: verdicts.Scan, governorate: str) -> verdicts.Facts:
    rows = await conn.fetch(
        "SELECT e.id, e.node, e.bill_id, e.amount, e.verdict,"
        " EXISTS (SELECT 1 FROM credits c WHERE c.source = e.id),"
        " EXISTS (SELECT 1 FROM corrections k WHERE k.target = e.id), COALESCE(e.fine, 0)"
        " FROM entries e WHERE e.kind IN ('payment', 'retarget') AND e.id = ANY($1::text[])",
        found.original_ids(),
    )
    originals = {r[0]: corrections.Original(*tuple(r)[1:]) for r in rows}
    # Locked in bill_id order: a bill two nodes pay at once is decided by one at a time.
    rows = await conn.fetch(
        "SELECT bill_id, governorate, account, amount, paid, version, credit, due_date,"
        " fine_paid FROM bills WHERE bill_id = ANY($1::text[]) ORDER BY bill_id FOR UPDATE",
        found.bill_ids(originals),
    )
    states = {r[0]: [*tuple(r)[1:6], False, *tuple(r)[6:]] for r in rows}
    meters_of: dict[str, set[str]] = {}
    if accounts := found.accounts():
        rows = await conn.fetch(
            "SELECT account, meter FROM bills WHERE governorate = $1 AND account = ANY($2::text[])",
            governorate, accounts,
        )  # fmt: skip
        for account, meter in rows:
            meters_of.setdefault(account, set()).add(meter)
    owners: dict[str, str] = {}
    if wanted := found.request_bills():
        rows = await conn.fetch(
            "SELECT bill_id, account FROM bills WHERE governorate = $1"
            " AND bill_id = ANY($2::text[])",
            governorate, wanted,
        )  # fmt: skip
        owners = {r[0]: r[1] for r in rows}
    last: dict[str, int] = {}
    if meters := found.meters():
        rows = await conn.fetch(
            "SELECT DISTINCT ON (meter) meter, reading FROM meter_readings"
            " WHERE governorate = $1 AND verdict = 'applied' AND meter = ANY($2::text[])"
            " ORDER BY meter, n DESC",
            governorate, meters,
        )  # fmt: skip
        last = {r[0]: r[1] for r in rows}
    return verdicts.Facts(
        originals, states, await rules_of(conn, governorate), meters_of, owners, last
    )


async def next_seqs(conn: Conn, n: int) -> int:
    """Take `n` change_seq values: the first is the result + 1. The counter's row stays
    locked until commit, so changes commit in change_seq order (the feed's cursor relies on
    it); taken last in a transaction, after its bills, to hold that lock briefly."""
    if n == 0:
        return 0
    last: int = await conn.fetchval(
        "UPDATE change_counter SET last = last + $1 WHERE id = 1 RETURNING last", n
    )
    return last - n


def _insert(table: str, columns: Sequence[str]) -> str:
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"


async def write_plan(conn: Conn, node: str, plan: verdicts.Plan, now: float) -> None:
    if plan.corrected:
        await conn.executemany(
            _insert("corrections", ("target", "entry", "kind", "created_at")), plan.corrected
        )
    if plan.entries:
        # COPY: one round trip for the whole batch's entries.
        await conn.copy_records_to_table(
            "entries", records=plan.entries, columns=verdicts.ENTRY_COLUMNS
        )
        await conn.execute(
            "UPDATE chain_heads SET seq = $2, hash = $3 WHERE node = $1", node, *plan.head
        )
    if plan.credits:
        await conn.executemany(_insert("credits", verdicts.CREDIT_COLUMNS), plan.credits)
    if plan.readings:
        await conn.executemany(_insert("meter_readings", readings.COLUMNS), plan.readings)
    if plan.requests:
        await conn.executemany(_insert("requests", requests.COLUMNS), plan.requests)
    base = await next_seqs(conn, len(plan.history) + len(plan.bills))
    if plan.history:
        await conn.executemany(
            _insert("request_history", requests.HISTORY_COLUMNS),
            [(*h, base + k) for k, h in enumerate(plan.history, 1)],
        )
    if plan.bills:
        base += len(plan.history)
        stamp = iso(now)
        await conn.executemany(
            "UPDATE bills SET paid = $1, version = $2, credit = $3, fine_paid = $4,"
            " change_seq = $5, updated_at = $6 WHERE bill_id = $7",
            [
                (state[3], state[4], state[6], state[8], base + k, stamp, bill_id)
                for k, (bill_id, state) in enumerate(plan.bills, 1)
            ],
        )


async def rules_of(conn: Conn, governorate: str) -> list[Rule]:
    rows = await conn.fetch(
        f"SELECT {fines.RULE_COLUMNS} FROM fine_rules WHERE governorate = $1 ORDER BY version",
        governorate,
    )
    return fines.rules_from(_tuples(rows))


async def remember_keys(conn: Conn, nodes: Mapping[str, NodeSettings], now: float) -> None:
    await conn.executemany(
        "INSERT INTO receipt_keys (node, key_id, key, seen_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (node, key_id) DO NOTHING",
        [
            (node, key_id, receiptcode.receipt_key(secret), now)
            for node, settings in nodes.items()
            for key_id, secret in settings.keys.items()
        ],
    )


# --- operators' commands --------------------------------------------------------------


async def upsert_bills(
    conn: Conn, governorate: str, rows: Sequence[BillInput], now: float
) -> UpsertResult:
    """COPY the import into a temporary table, lock the bills it names, decide (bills.
    plan_upsert), then COPY the new bills in and update the changed ones from a second COPY."""
    await conn.execute("CREATE TEMPORARY TABLE incoming (bill_id text PRIMARY KEY) ON COMMIT DROP")
    ids = sorted({b.bill_id(governorate) for b in rows})
    await conn.copy_records_to_table("incoming", records=[(i,) for i in ids])
    found = await conn.fetch(
        f"SELECT b.bill_id, {', '.join('b.' + c for c in bills.EXISTING_COLUMNS)}"
        " FROM bills b JOIN incoming i ON i.bill_id = b.bill_id ORDER BY b.bill_id"
        " FOR UPDATE OF b"
    )
    plan = bills.plan_upsert(governorate, rows, {r[0]: tuple(r)[1:] for r in found}, now)
    base = await next_seqs(conn, plan.changes)
    if plan.inserts:
        await conn.copy_records_to_table(
            "bills", records=[(*row, base + k) for k, row in plan.inserts],
            columns=bills.INSERT_COLUMNS,
        )  # fmt: skip
    if plan.updates:
        await conn.execute(
            "CREATE TEMPORARY TABLE changed (name text, address text, meter text, kwh bigint,"
            " amount bigint, paid bigint, due_date text, version bigint, credit bigint,"
            " updated_at text, change_seq bigint, bill_id text) ON COMMIT DROP"
        )
        await conn.copy_records_to_table(
            "changed", records=[(*row, base + k, bill_id) for k, bill_id, row in plan.updates]
        )
        await conn.execute(
            "UPDATE bills b SET name = c.name, address = c.address, meter = c.meter,"
            " kwh = c.kwh, amount = c.amount, paid = c.paid, due_date = c.due_date,"
            " version = c.version, credit = c.credit, updated_at = c.updated_at,"
            " change_seq = c.change_seq FROM changed c WHERE b.bill_id = c.bill_id"
        )
    if plan.credits:
        await conn.executemany(_insert("credits", verdicts.CREDIT_COLUMNS), plan.credits)
    return plan.result()


async def pay_online(conn: Conn, bill_id: str, amount: int, now: float) -> OnlinePayment:
    if type(amount) is not int or amount <= 0:
        raise ImportFailed("the amount must be a positive whole number of piastres")
    row = await conn.fetchrow(
        f"SELECT {bills.ONLINE_COLUMNS} FROM bills WHERE bill_id = $1 FOR UPDATE", bill_id
    )
    if row is None:
        raise ImportFailed(f"no bill {bill_id} at the centre")
    rules = await rules_of(conn, row[0])
    done, governorate, account = bills.decide_online(tuple(row), rules, bill_id, amount, now)
    seq = await next_seqs(conn, 1) + 1
    await conn.execute(
        "UPDATE bills SET paid = $1, version = $2, credit = credit + $3,"
        " fine_paid = fine_paid + $4, change_seq = $5, updated_at = $6 WHERE bill_id = $7",
        done.paid, done.version, done.credit, done.fine, seq, iso(now), bill_id,
    )  # fmt: skip
    number = await conn.fetchval(
        "INSERT INTO online_payments (bill_id, amount, credit, version, paid_at)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        bill_id, amount, done.credit, done.version, now,
    )  # fmt: skip
    if done.credit:
        await conn.execute(
            _insert("credits", verdicts.CREDIT_COLUMNS),
            f"online-{number}", governorate, account, bill_id, done.credit, now,
        )  # fmt: skip
    return done


async def accounts_without_cycle(
    conn: Conn, governorate: str, cycle: str
) -> list[tuple[str, str, str, str]]:
    if not CYCLE.match(cycle):
        raise ImportFailed(f"bad cycle {cycle!r}: use YYYY-MM")
    rows = await conn.fetch(
        "SELECT DISTINCT ON (b.account) b.account, b.name, b.address, b.meter FROM bills b"
        " WHERE b.governorate = $1 AND NOT EXISTS (SELECT 1 FROM bills d"
        "   WHERE d.governorate = $1 AND d.account = b.account AND d.cycle = $2)"
        " ORDER BY b.account, b.cycle DESC",
        governorate, cycle,
    )  # fmt: skip
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def publish_rule(
    conn: Conn, governorate: str, effective: date, grace_days: int, fixed: int,
    percent_bp: int, cap: int | None, now: float,
) -> Rule:  # fmt: skip
    # Two operators publishing at once: the second waits and takes the next version.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('fine_rules:' || $1))", governorate)
    last = await conn.fetchval(
        "SELECT COALESCE(MAX(version), 0) FROM fine_rules WHERE governorate = $1", governorate
    )
    rule = fines.next_rule(last, governorate, effective, grace_days, fixed, percent_bp, cap)
    await conn.execute(
        "INSERT INTO fine_rules (governorate, version, effective, grace_days, fixed,"
        " percent_bp, cap, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        governorate, rule.version, effective.isoformat(), grace_days, fixed, percent_bp, cap,
        now,
    )  # fmt: skip
    return rule


async def set_status(
    conn: Conn, request_id: str, status: str, note: str | None, now: float
) -> dict[str, Any]:
    requests.check_status(status)
    row = await conn.fetchrow(
        f"SELECT {requests.REQUEST_COLUMNS} FROM requests WHERE id = $1 OR number = $1"
        " LIMIT 1 FOR UPDATE",
        request_id,
    )
    if row is None:
        raise requests.RequestRefused(f"no request {request_id}")
    found_id, number, kind, bill_id, amount, current, version, governorate = tuple(row)
    requests.check_transition(request_id, current, status)
    stamp = iso(now)
    deferred = None
    bill_seq = None
    if status == "accepted" and kind in ("installment", "correction"):
        held = await conn.fetchrow(
            "SELECT amount, paid, version FROM bills WHERE bill_id = $1 FOR UPDATE", bill_id
        )
        if held is None:
            raise requests.RequestRefused(f"the request's bill {bill_id} is not at the centre")
        new, deferred = requests.bill_change(kind, amount, held[0], held[1])
        bill_seq = await next_seqs(conn, 2) + 1
        await conn.execute(
            "UPDATE bills SET amount = $1, version = $2, change_seq = $3, updated_at = $4"
            " WHERE bill_id = $5",
            new, held[2] + 1, bill_seq, stamp, bill_id,
        )  # fmt: skip
    seq = bill_seq + 1 if bill_seq is not None else await next_seqs(conn, 1) + 1
    await conn.execute(
        "UPDATE requests SET status = $1, note = $2, deferred = COALESCE($3, deferred),"
        " version = $4, updated_at = $5 WHERE id = $6",
        status, note, deferred, version + 1, stamp, found_id,
    )  # fmt: skip
    await conn.execute(
        _insert("request_history", requests.HISTORY_COLUMNS),
        found_id, version + 1, status, note, stamp, governorate, seq,
    )  # fmt: skip
    return {"request_id": found_id, "number": number, "status": status,
            "version": version + 1, "deferred": deferred}  # fmt: skip


# --- reports --------------------------------------------------------------------------


async def _attached(conn: Conn, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """clearing.attach over the rows of `sql` (clearing.ENTRY_COLUMNS)."""
    out: list[tuple[Any, ...]] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        cursor = await conn.cursor(sql, *args)
        while rows := _tuples(await cursor.fetch(PAGE)):
            wanted = sorted(clearing.targets(rows))
            originals = await conn.fetch(
                "SELECT id, payload FROM entries WHERE id = ANY($1::text[])", wanted
            )
            out += clearing.attach(rows, {r[0]: r[1] for r in originals})
    return out


async def ledger_rows(conn: Conn, node: str | None) -> list[tuple[Any, ...]]:
    if node is None:
        rows = await _attached(conn, _ENTRY + " ORDER BY node, seq")
    else:
        rows = await _attached(conn, _ENTRY + " WHERE node = $1 ORDER BY seq", node)
    return [clearing.ledger_line(r) for r in rows]


async def node_day(conn: Conn, node: str, day: date) -> list[Any]:
    rows = await _attached(
        conn, _ENTRY + " WHERE node = $1 AND received_at >= $2 ORDER BY seq", node,
        clearing.node_day_since(day),
    )  # fmt: skip
    return clearing.day_entries(rows, day)


async def clearing_report(
    conn: Conn, day: date, tz: tzinfo, governorate: str | None
) -> list[dict[str, Any]]:
    start, end = clearing.bounds(day, tz)
    groups = clearing.Groups(day, tz)
    # Meter readings and requests carry no money: they are not in the clearing.
    sql = (
        _ENTRY + " WHERE received_at >= $1 AND received_at < $2 AND kind NOT IN ($3, $4) ORDER BY n"
    )
    groups.entries(await _attached(conn, sql, start, end, readings.KIND, requests.KIND))
    online = await conn.fetch(
        "SELECT bill_id, amount, credit, paid_at FROM online_payments"
        " WHERE paid_at >= $1 AND paid_at < $2 ORDER BY id",
        start, end,
    )  # fmt: skip
    groups.online([(r[0], r[1], r[2], r[3]) for r in online])
    return groups.rows(governorate)


async def credit_accounts(conn: Conn, governorate: str | None) -> list[AccountCredit]:
    """Every account with credit, with the entries that made it (credits.accounts)."""
    rows = await conn.fetch(
        "SELECT governorate, account, SUM(credit) FROM bills WHERE credit > 0"
        " AND ($1::text IS NULL OR governorate = $1) GROUP BY governorate, account"
        " ORDER BY governorate, account",
        governorate,
    )
    found = []
    for gov, account, credit in rows:
        sources = await conn.fetch(
            "SELECT source, bill_id, amount, created_at FROM credits"
            " WHERE governorate = $1 AND account = $2 ORDER BY id",
            gov, account,
        )  # fmt: skip
        made = [Source(r[0], r[1], r[2], iso(r[3])) for r in sources]
        found.append(AccountCredit(gov, account, int(credit), made))
    return found


async def verify_receipt(
    conn: Conn, text: str, nodes: Mapping[str, NodeSettings]
) -> receipts.Check:
    try:
        code = receiptcode.parse(text)
    except receiptcode.BadReceiptText as exc:
        return receipts.Check(receipts.FORGED, f"not a receipt code: {exc}")
    key = receipts.live_key(nodes, code.node, code.key_id)
    if key is None:
        stored = await conn.fetchval(
            "SELECT key FROM receipt_keys WHERE node = $1 AND key_id = $2", code.node, code.key_id
        )
        key = None if stored is None else bytes(stored)
    row = await conn.fetchrow(
        "SELECT bill_id, amount, verdict, payload FROM entries WHERE id = $1 AND node = $2",
        code.payment_id, code.node,
    )  # fmt: skip
    return receipts.judge(code, key, None if row is None else tuple(row))
