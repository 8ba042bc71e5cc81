"""The node's own tables (mirror, payments, receipts, offline totals, audit, credits), after the
outbox's migrations."""

from __future__ import annotations

from edge import readings, requests
from outbox import Migration

EDGE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "edge.0001_mirror",
        """
        CREATE TABLE bills (
            bill_id     TEXT PRIMARY KEY,
            account     TEXT NOT NULL,
            governorate TEXT NOT NULL,
            cycle       TEXT NOT NULL,
            name        TEXT NOT NULL,
            address     TEXT NOT NULL,
            meter       TEXT NOT NULL,
            kwh         INTEGER NOT NULL,
            amount      INTEGER NOT NULL,
            paid        INTEGER NOT NULL,
            due_date    TEXT NOT NULL,
            version     INTEGER NOT NULL,
            updated_at  TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX bills_account ON bills (account, cycle);
        CREATE TABLE mirror_state (
            id      INTEGER PRIMARY KEY CHECK (id = 1),
            cursor  INTEGER,
            as_of   REAL,
            bills   INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO mirror_state (id, cursor, as_of, bills) VALUES (1, NULL, NULL, 0);
        """,
    ),
    Migration(
        "edge.0002_payments",
        """
        CREATE TABLE payments (
            -- The payment id is the outbox entry's id (unique there): not repeated here.
            seq         INTEGER PRIMARY KEY REFERENCES outbox_entries (seq),
            bill_id     TEXT NOT NULL,
            account     TEXT NOT NULL,
            amount      INTEGER NOT NULL CHECK (amount > 0),
            method      TEXT NOT NULL,
            cashier     TEXT NOT NULL,
            channel     TEXT NOT NULL,
            receipt     TEXT NOT NULL UNIQUE,
            accepted_at REAL NOT NULL
        );
        CREATE INDEX payments_bill ON payments (bill_id);
        CREATE TABLE receipt_counters (
            day  TEXT PRIMARY KEY,
            last INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    Migration(
        "edge.0003_power_events",
        """
        CREATE TABLE power_events (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            at          REAL NOT NULL,
            from_state  TEXT NOT NULL,
            to_state    TEXT NOT NULL,
            flags       TEXT,
            charge      REAL,
            runtime_s   REAL,
            reason      TEXT NOT NULL
        );
        CREATE INDEX power_events_at ON power_events (at);
        """,
    ),
    Migration(
        "edge.0004_power_readings",
        """
        -- One UPS reading a minute for the dashboard's chart (NULL figures: no data then).
        CREATE TABLE power_readings (
            id            INTEGER PRIMARY KEY,
            at            REAL NOT NULL,
            flags         TEXT,
            charge        REAL,
            runtime_s     REAL,
            load_pct      REAL,
            input_voltage REAL
        );
        CREATE INDEX power_readings_at ON power_readings (at);
        -- "Delivered today" on the dashboard: a range over today's deliveries, not a scan.
        CREATE INDEX outbox_entries_delivered_at ON outbox_entries (settled_at)
            WHERE state = 'delivered';
        """,
    ),
    Migration(
        "edge.0005_bills_by_account",
        """
        -- Inquiries ask by account: keeping an account's bills side by side in the table's
        -- own b-tree turns four row lookups into one short range scan. bill_id stays unique
        -- (its index serves payments and GET /v1/bills/{id}). Rebuilds the mirror only;
        -- a 1,000,000-bill mirror takes a few seconds. The outbox is not touched.
        CREATE TABLE bills_by_account (
            bill_id     TEXT NOT NULL,
            account     TEXT NOT NULL,
            governorate TEXT NOT NULL,
            cycle       TEXT NOT NULL,
            name        TEXT NOT NULL,
            address     TEXT NOT NULL,
            meter       TEXT NOT NULL,
            kwh         INTEGER NOT NULL,
            amount      INTEGER NOT NULL,
            paid        INTEGER NOT NULL,
            due_date    TEXT NOT NULL,
            version     INTEGER NOT NULL,
            updated_at  TEXT NOT NULL,
            PRIMARY KEY (account, cycle, bill_id)
        ) WITHOUT ROWID;
        INSERT INTO bills_by_account
            SELECT bill_id, account, governorate, cycle, name, address, meter, kwh, amount,
                   paid, due_date, version, updated_at
            FROM bills ORDER BY account, cycle, bill_id;
        DROP TABLE bills;
        ALTER TABLE bills_by_account RENAME TO bills;
        CREATE UNIQUE INDEX bills_bill_id ON bills (bill_id);
        -- The overlay looks up local payments by account first (one probe per inquiry).
        DROP INDEX payments_bill;
        CREATE INDEX payments_account ON payments (account, bill_id);
        """,
    ),
    Migration(
        "edge.0006_token_last_used",
        """
        -- When each client token was last used (edge/lastused.py); written at most once a
        -- minute per token, read by `edge token list`. Keyed by the token's name.
        CREATE TABLE token_last_used (
            name TEXT PRIMARY KEY,
            at   REAL NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    Migration(
        "edge.0007_payment_search",
        """
        -- GET /v1/payments and `edge payments list` (edge/paymentquery.py): every filter is
        -- an index range walked newest first (an index ends with the rowid, here the seq).
        -- bill_id uses payments_account: the account is the bill id's last part.
        CREATE INDEX payments_cashier ON payments (cashier);
        CREATE INDEX payments_channel ON payments (channel);
        -- The local day a payment was taken is in its receipt, {GOV}[-{NODE}]-{YYYYMMDD}-{n:06}:
        -- the 8 characters that start 15 from the end, in either form.
        CREATE INDEX payments_day ON payments (substr(receipt, -15, 8));
        -- The states GET /v1/payments/{id} shows (edge/payments.py state_sql): pending and
        -- rejected have their partial indexes (outbox.0001); these give the other two.
        CREATE INDEX outbox_entries_delivered ON outbox_entries (seq) WHERE state = 'delivered';
        CREATE INDEX outbox_entries_credited ON outbox_entries (seq)
            WHERE state = 'delivered'
              AND (verdict = 'credited' OR (verdict = 'duplicate' AND reason = 'credited'));
        """,
    ),
    Migration(
        "edge.0008_offline_totals",
        """
        -- Undelivered payments and their sum for the offline limits (edge/offline.py), kept by
        -- triggers in the very transaction that takes or settles a payment: one row to read
        -- per group commit instead of a sum over a 72-hour queue.
        CREATE TABLE offline_totals (
            id    INTEGER PRIMARY KEY CHECK (id = 1),
            count INTEGER NOT NULL,
            total INTEGER NOT NULL
        );
        INSERT INTO offline_totals (id, count, total)
            SELECT 1, COUNT(*), COALESCE(SUM(p.amount), 0)
            FROM payments p JOIN outbox_entries o ON o.seq = p.seq WHERE o.state = 'pending';
        CREATE TRIGGER offline_totals_taken AFTER INSERT ON payments
            WHEN (SELECT state FROM outbox_entries WHERE seq = NEW.seq) = 'pending'
        BEGIN
            UPDATE offline_totals SET count = count + 1, total = total + NEW.amount WHERE id = 1;
        END;
        CREATE TRIGGER offline_totals_settled AFTER UPDATE OF state ON outbox_entries
            WHEN OLD.state = 'pending' AND NEW.state != 'pending'
        BEGIN
            UPDATE offline_totals
            SET count = count - 1,
                total = total - (SELECT amount FROM payments WHERE seq = NEW.seq)
            WHERE id = 1 AND EXISTS (SELECT 1 FROM payments WHERE seq = NEW.seq);
        END;
        CREATE TRIGGER offline_totals_reopened AFTER UPDATE OF state ON outbox_entries
            WHEN OLD.state != 'pending' AND NEW.state = 'pending'
        BEGIN
            UPDATE offline_totals
            SET count = count + 1,
                total = total + (SELECT amount FROM payments WHERE seq = NEW.seq)
            WHERE id = 1 AND EXISTS (SELECT 1 FROM payments WHERE seq = NEW.seq);
        END;
        """,
    ),
    Migration(
        "edge.0009_audit_log",
        """
        -- Who read which subscriber, and every admin action (DESIGN 5.10). seq orders the
        -- trail (AUTOINCREMENT: never reused, even once pruning has emptied the table);
        -- at is wall time, recorded for people and for pruning, never for order.
        CREATE TABLE audit_log (
            seq     INTEGER PRIMARY KEY AUTOINCREMENT,
            at      REAL NOT NULL,
            token   TEXT NOT NULL,
            address TEXT NOT NULL,
            action  TEXT NOT NULL,
            object  TEXT,
            account TEXT,
            status  INTEGER NOT NULL
        );
        -- Appended in time order, so cheap to keep; it bounds a time window to a seq range
        -- and finds what to prune. No index by account: its inserts land on random pages
        -- (22 µs of CPU and a WAL page each at 1M rows, against 3 µs): account filters
        -- scan the window's seq range instead.
        CREATE INDEX audit_log_at ON audit_log (at);
        """,
    ),
    Migration(
        "edge.0010_credit",
        """
        -- Protocol 3: each bill carries the credit the centre holds on it (money paid beyond
        -- its amount), and a payment whose verdict made credit keeps how much (edge/credits.py).
        -- A mirror filled before holds 0 until the centre's next version of the bill.
        ALTER TABLE bills ADD COLUMN credit INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE payment_credits (
            seq    INTEGER PRIMARY KEY REFERENCES outbox_entries (seq),
            amount INTEGER NOT NULL CHECK (amount > 0)
        );
        """,
    ),
    Migration(
        "edge.0011_payment_actions",
        """
        -- What was done to a payment after it was taken (edge/actions.py, DESIGN 5.12): a
        -- void (a supervisor's), a refund or a retarget (an admin resolving a rejection).
        -- `seq` is the action's own outbox entry; `target` the payment acted on. At most one
        -- action of a kind per payment (a double void cannot be written even by a race): a
        -- void the centre refused can still be followed by the rejection's resolution.
        -- A retarget's entry is also a payment (its row in `payments` has the same seq).
        CREATE TABLE payment_actions (
            seq     INTEGER PRIMARY KEY REFERENCES outbox_entries (seq),
            kind    TEXT NOT NULL CHECK (kind IN ('void', 'refund', 'retarget')),
            target  INTEGER NOT NULL REFERENCES payments (seq),
            reason  TEXT NOT NULL,
            by      TEXT NOT NULL,
            at      REAL NOT NULL,
            UNIQUE (target, kind)
        );
        """,
    ),
    Migration(
        "edge.0012_transfers",
        """
        -- Transfer files (DESIGN 5.14, PROTOCOL.md 11): each export and each import that
        -- changed something, for the dashboard and `edge status`. Never pruned: a few rows a day.
        CREATE TABLE transfers (
            seq       INTEGER PRIMARY KEY AUTOINCREMENT,
            at        REAL NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('export', 'import')),
            kind      TEXT NOT NULL,
            entries   INTEGER NOT NULL,
            changed   INTEGER NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq  INTEGER NOT NULL,
            cursor    INTEGER,
            digest    TEXT NOT NULL
        );
        """,
    ),
    Migration("edge.0013_meter_readings", readings.TABLE_SQL),
    Migration("edge.0014_requests", requests.TABLE_SQL),
    Migration(
        "edge.0015_fines",
        """
        -- Late fines (sync/fines.py, DESIGN 5.17). The governorate's published rules, every
        -- version (a day is judged by the rule of that day); what the centre counted towards
        -- fines on each bill (protocol 4: 0 until the centre's next version of the bill);
        -- the part of each local payment that went to the fine (taken first); and the
        -- centre's figure of it from the verdict (edge/fines.py), which may differ.
        CREATE TABLE fine_rules (
            version     INTEGER PRIMARY KEY CHECK (version >= 1),
            governorate TEXT NOT NULL,
            effective   TEXT NOT NULL,
            grace_days  INTEGER NOT NULL,
            fixed       INTEGER NOT NULL,
            percent_bp  INTEGER NOT NULL,
            cap         INTEGER
        );
        ALTER TABLE bills ADD COLUMN fine_paid INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE payments ADD COLUMN fine INTEGER NOT NULL DEFAULT 0 CHECK (fine >= 0);
        CREATE TABLE payment_fines (
            seq    INTEGER PRIMARY KEY REFERENCES outbox_entries (seq),
            amount INTEGER NOT NULL CHECK (amount >= 0)
        );
        """,
    ),
)
