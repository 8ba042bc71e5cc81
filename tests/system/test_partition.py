"""Fault matrix row 4: link cut and partition between a node and the centre (issue 8).

The reference centre runs in its own network namespace (`centre_b-<pid>`, 10.200.0.2:9090)
and the node in another (`edge_a-<pid>`, 10.200.0.1, API on 0.0.0.0:8080), joined by one
veth pair created directly inside the two namespaces: nothing is added to the root
namespace. The node's API is reached from inside its namespace: `netload.py` (three
cashiers paying 1 SYP each and two inquiry clients, without pause) runs there under
`ip netns exec` and logs every request with CLOCK_MONOTONIC times; the test itself reads
the node's SQLite file and the centre's ledger (`edge centre ledger`) from disk.

Faults, each for a few seconds while payments and inquiries go on: the veth link down;
a silent drop (nftables); TCP reset; 30% packet loss both ways; the reply lost after the
centre processed the request (the centre's outgoing data packets to the node dropped).
Then a 60 s silent partition (a shortened stand-in for the issue's 10 minutes) with
`centre.retry_base_s = 1`, `retry_cap_s = 8`, during which nftables counts the node's TCP
connection attempts to the centre. Must hold: inquiries answer 200 from the mirror during
every fault; every replayer attempt count stays within what the backoff policy allows (no
hot loop) and replay never gives up; after healing, the outbox is fully delivered and the
node's and the centre's ledgers match exactly (ids, seq, per-bill count and sum), with no
duplicate at the centre and nothing lost. Needs root (namespaces, veth, nftables).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import bills_csv, wait_until
from procs import NO_LIMITS

from edge import tokens

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("edge")
EDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "edge.cli"]
NETLOAD = Path(__file__).with_name("netload.py")
EDGE_IP, CENTRE_IP, CENTRE_PORT, NODE_PORT = "10.200.0.1", "10.200.0.2", 9090, 8080
CYCLE = "2026-05"
ACCOUNTS = [f"01000000{i:02d}" for i in range(1, 13)]
BILLS = [f"DAM-{CYCLE}-{a}" for a in ACCOUNTS]
RETRY_BASE_S, RETRY_CAP_S, TIMEOUT_S, PULL_S = 1.0, 8.0, 3.0, 5.0
FAULT_S, OUTAGE_S = 6.0, 60.0
RECOVERY_S = 40.0  # generous: one capped backoff (8 s) plus a timeout (3 s) is the expectation

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: network namespaces, veth pairs and nftables rules (CI runs as root)",
    ),
]


def sh(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr.strip()}"
    return done.stdout


def attempts_bound(seconds: float, base: float, cap: float) -> int:
    """Most attempts capped exponential backoff with a half-window floor fits in `seconds`.

    After the n-th consecutive failure the wait is at least min(cap, base * 2**(n-1)) / 2
    (outbox.RetryPolicy keeps half of each window as a floor); attempts themselves are
    counted as taking no time, so this over-counts when each attempt waits for a timeout.
    """
    attempts, spent = 1, 0.0
    while True:
        wait = min(cap, base * 2 ** (attempts - 1)) / 2
        if spent + wait > seconds:
            return attempts
        spent += wait
        attempts += 1


@dataclass
class Net:
    """Two namespaces joined by a veth pair, with an nftables `chaos` table in each."""

    edge: str
    centre: str

    def nft(self, ns: str, *args: str) -> str:
        return sh("ip", "netns", "exec", ns, "nft", *args)

    def create(self) -> None:
        sh("ip", "netns", "add", self.edge)
        sh("ip", "netns", "add", self.centre)
        # Made inside edge_a with its peer placed straight into centre_b: never in the root ns.
        sh("ip", "-n", self.edge, "link", "add", "veth-edge", "type", "veth",
           "peer", "name", "veth-centre", "netns", self.centre)  # fmt: skip
        for ns, dev, ip in (
            (self.edge, "veth-edge", EDGE_IP),
            (self.centre, "veth-centre", CENTRE_IP),
        ):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            self.nft(ns, "add", "table", "inet", "chaos")
            # `faults` holds the injected rules (flushed to heal); `count` is never flushed.
            self.nft(ns, "add", "chain", "inet", "chaos", "faults",
                     "{ type filter hook output priority 0; policy accept; }")  # fmt: skip
            self.nft(ns, "add", "chain", "inet", "chaos", "count",
                     "{ type filter hook output priority -10; policy accept; }")  # fmt: skip
        # Connection attempts from the node to the centre: every SYN, and distinct ones (a
        # SYN from a source port not seen in the last 20 s: kernel retransmissions of one
        # connect() reuse its port and are not counted again).
        self.nft(self.edge, "add", "counter", "inet", "chaos", "syn_packets")
        self.nft(self.edge, "add", "counter", "inet", "chaos", "connects")
        self.nft(self.edge, "add", "set", "inet", "chaos", "ports",
                 "{ type inet_service; flags dynamic,timeout; timeout 20s; }")  # fmt: skip
        to_centre = f"ip daddr {CENTRE_IP} tcp dport {CENTRE_PORT} tcp flags syn"
        self.nft(self.edge, "add", "rule", "inet", "chaos", "count", to_centre,
                 "counter", "name", "syn_packets")  # fmt: skip
        self.nft(self.edge, "add", "rule", "inet", "chaos", "count", to_centre,
                 "tcp", "sport", "!=", "@ports", "counter", "name", "connects",
                 "add", "@ports", "{ tcp sport }")  # fmt: skip

    def counter(self, name: str) -> int:
        doc = json.loads(self.nft(self.edge, "-j", "list", "counter", "inet", "chaos", name))
        return next(int(i["counter"]["packets"]) for i in doc["nftables"] if "counter" in i)

    def hits(self) -> int:
        """Packets matched so far by the injected fault rules in both namespaces."""
        total = 0
        for ns in (self.edge, self.centre):
            doc = json.loads(self.nft(ns, "-j", "list", "chain", "inet", "chaos", "faults"))
            for item in doc["nftables"]:
                for expr in item.get("rule", {}).get("expr", []):
                    if "counter" in expr:
                        total += int(expr["counter"]["packets"])
        return total

    def destroy(self) -> None:
        for ns in (self.edge, self.centre):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@dataclass(frozen=True)
class Fault:
    name: str
    rules: tuple[tuple[str, str], ...] = ()  # (side "edge" | "centre", nft rule)
    link_down: bool = False
    seconds: float = FAULT_S
    must_fail: bool = True  # the replayer must have seen the fault (the injection works)


FAULTS = (
    Fault("link down (veth down)", link_down=True),
    Fault("silent drop", (("edge", f"ip daddr {CENTRE_IP} counter drop"),)),
    Fault(
        "TCP reset",
        (("edge", f"ip daddr {CENTRE_IP} tcp dport {CENTRE_PORT} counter reject with tcp reset"),),
    ),
    Fault(
        "30% loss both ways",
        (
            ("edge", f"ip daddr {CENTRE_IP} numgen random mod 100 lt 30 counter drop"),
            ("centre", f"ip daddr {EDGE_IP} numgen random mod 100 lt 30 counter drop"),
        ),
        seconds=8.0,
        must_fail=False,  # TCP retransmits through most of it
    ),
    Fault(
        "reply lost after the centre processed the request",
        (("centre", f"ip daddr {EDGE_IP} tcp sport {CENTRE_PORT} ip length gt 100 counter drop"),),
    ),
)


@dataclass
class Figures:
    name: str
    start: float
    end: float
    replay_failures: int = 0
    pull_failures: int = 0
    recovered_s: float = 0.0
    packets_hit: int = 0
    duplicates: int = 0
    payments: int = 0
    inquiries: int = 0
    inquiries_ok: int = 0
    inquiry_errors: int = 0
    inquiry_p99_ms: float = 0.0
    inquiry_max_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Site:
    root: Path
    net: Net
    centre_config: Path
    node_config: Path
    token: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def node_db(self) -> Path:
        return self.root / "node" / "edge.db"

    @property
    def load_file(self) -> Path:
        return self.root / "load.jsonl"

    def start(self, name: str, ns: str, *cmd: str) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(  # stopped by PID in the fixture
                ["ip", "netns", "exec", ns, *cmd], cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def count_in_log(self, needle: str) -> int:
        return self.log("node").count(needle)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(f"file:{self.node_db}?mode=ro", uri=True, timeout=10)) as c:
            return c.execute(sql, params).fetchall()

    def alive(self) -> None:
        """The node and the centre are still running (the load may have been stopped)."""
        for name in ("node", "centre"):
            proc = self.procs[name]
            assert proc.poll() is None, (
                f"{name} exited ({proc.returncode}):\n{self.log(name)[-3000:]}"
            )

    def stop(self, name: str, seconds: float = 20.0) -> int | None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None


def until(what: str, check: Callable[[], bool], seconds: float, site: Site | None = None) -> float:
    """wait_until `check()`, failing at once if the node or the centre exits; the seconds taken."""
    start = time.monotonic()

    def met() -> bool:
        if site is not None:
            site.alive()
        return check()

    # OperationalError: e.g. the db file not there yet.
    wait_until(met, seconds, what, every=0.1, ignore=(sqlite3.OperationalError,))
    return time.monotonic() - start


def write_site(root: Path, net: Net) -> Site:
    secret = root / "dam-1.secret"
    secret.write_text("partition-test-secret-0123456789-0123456789\n")
    secret.chmod(0o600)
    (root / "bills.csv").write_text(bills_csv(ACCOUNTS, amount=100_000_000))
    centre_config = root / "centre.toml"
    centre_config.write_text(
        f'[centre]\ndata_dir = "{root / "centre"}"\nhost = "{CENTRE_IP}"\nport = {CENTRE_PORT}\n'
        f'governorate = "DAM"\n[nodes.dam-1]\ngovernorate = "DAM"\nsecret_file = "{secret}"\n'
    )
    node_config = root / "edge.toml"
    node_config.write_text(
        f'[node]\nid = "dam-1"\ngovernorate = "DAM"\ndata_dir = "{root / "node"}"\n'
        f'[http]\nhost = "0.0.0.0"\nport = {NODE_PORT}\nshutdown_timeout_s = 5.0\n'
        f'[auth]\ntokens_file = "{root / "tokens.toml"}"\n'
        f'[centre]\nurl = "http://{CENTRE_IP}:{CENTRE_PORT}"\nsecret_file = "{secret}"\n'
        f"timeout_s = {TIMEOUT_S}\nretry_base_s = {RETRY_BASE_S}\nretry_cap_s = {RETRY_CAP_S}\n"
        f"pull_interval_s = {PULL_S}\n"
        '[storage]\nmin_free_mb = 0\n[ups]\nsource = "none"\n[power]\nfinal_replay_s = 2.0\n'
        + NO_LIMITS
    )
    token = tokens.add_token(root / "tokens.toml", "counter-1", ["inquire", "pay"])
    return Site(root, net, centre_config, node_config, token)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    net = Net(f"edge_a-{os.getpid()}", f"centre_b-{os.getpid()}")
    s = write_site(tmp_path, net)
    try:
        net.create()
        sh(*EDGE, "centre", "import", "--config", str(s.centre_config), str(tmp_path / "bills.csv"))
        yield s
    finally:
        for name in ("load", "node", "centre"):
            s.stop(name)
        net.destroy()


def load_records(site: Site) -> list[dict[str, Any]]:
    with site.load_file.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def fill_from_load(fig: Figures, records: list[dict[str, Any]]) -> None:
    inside = [r for r in records if fig.start <= r["t0"] < fig.end]
    fig.payments = sum(1 for r in inside if r["kind"] == "pay" and r["status"] == 201)
    asks = [r for r in inside if r["kind"] == "inquire"]
    fig.inquiries = len(asks)
    fig.inquiries_ok = sum(1 for r in asks if r["status"] == 200 and r["ok"])
    fig.inquiry_errors = sum(1 for r in inside if r["kind"] == "inquire_error")
    ms = sorted((r["t1"] - r["t0"]) * 1000 for r in asks)
    if len(ms) >= 2:
        fig.inquiry_p99_ms = round(statistics.quantiles(ms, n=100)[98], 1)
    fig.inquiry_max_ms = round(ms[-1], 1) if ms else 0.0


def apply_fault(site: Site, fault: Fault) -> None:
    net = site.net
    if fault.link_down:
        sh("ip", "-n", net.edge, "link", "set", "veth-edge", "down")
    for side, rule in fault.rules:
        net.nft(net.edge if side == "edge" else net.centre, "add", "rule", "inet", "chaos",
                "faults", *rule.split())  # fmt: skip


def heal(site: Site) -> None:
    net = site.net
    sh("ip", "-n", net.edge, "link", "set", "veth-edge", "up")
    for ns in (net.edge, net.centre):
        net.nft(ns, "flush", "chain", "inet", "chaos", "faults")


def delivered_through(site: Site, seq: int) -> Callable[[], bool]:
    def check() -> bool:
        rows = site.query("SELECT MIN(seq) FROM outbox_entries WHERE state = 'pending'")
        return rows[0][0] is None or rows[0][0] > seq

    return check


def last_seq(site: Site) -> int:
    return int(site.query("SELECT COALESCE(MAX(seq), 0) FROM outbox_entries")[0][0])


def duplicates(site: Site) -> int:
    return int(site.query("SELECT COUNT(*) FROM outbox_entries WHERE verdict = 'duplicate'")[0][0])


def run_fault(site: Site, fault: Fault) -> Figures:
    replay_before = site.count_in_log("replay failed (attempt")
    pull_before = site.count_in_log("mirror pull failed (attempt")
    dup_before = duplicates(site)
    fig = Figures(fault.name, time.monotonic(), 0.0)
    apply_fault(site, fault)
    time.sleep(fault.seconds)
    fig.replay_failures = site.count_in_log("replay failed (attempt") - replay_before
    fig.pull_failures = site.count_in_log("mirror pull failed (attempt") - pull_before
    fig.packets_hit = site.net.hits()
    through = last_seq(site)
    heal(site)
    fig.end = time.monotonic()
    fig.recovered_s = round(
        until(f"replay to resume after {fault.name}", delivered_through(site, through), RECOVERY_S, site), 1
    )  # fmt: skip
    fig.duplicates = duplicates(site) - dup_before
    return fig


def run_outage(site: Site) -> Figures:
    net = site.net
    replay_before = site.count_in_log("replay failed (attempt")
    pull_before = site.count_in_log("mirror pull failed (attempt")
    connects_before, syns_before = net.counter("connects"), net.counter("syn_packets")
    fig = Figures(f"silent partition {OUTAGE_S:.0f} s", time.monotonic(), 0.0)
    net.nft(net.edge, "add", "rule", "inet", "chaos", "faults", "ip", "daddr", CENTRE_IP,
            "counter", "drop")  # fmt: skip
    time.sleep(OUTAGE_S)
    fig.replay_failures = site.count_in_log("replay failed (attempt") - replay_before
    fig.pull_failures = site.count_in_log("mirror pull failed (attempt") - pull_before
    fig.packets_hit = net.hits()
    fig.extra["connects"] = net.counter("connects") - connects_before
    fig.extra["syn_packets"] = net.counter("syn_packets") - syns_before
    fig.extra["pending_at_heal"] = int(
        site.query("SELECT COUNT(*) FROM outbox_entries WHERE state = 'pending'")[0][0]
    )
    through = last_seq(site)
    heal(site)
    fig.end = time.monotonic()
    fig.recovered_s = round(
        until("replay to resume after the partition", delivered_through(site, through), RECOVERY_S, site), 1
    )  # fmt: skip
    return fig


def centre_ledger(site: Site) -> list[dict[str, str]]:
    out = sh(*EDGE, "centre", "ledger", "--config", str(site.centre_config), "--node", "dam-1")
    return list(csv.DictReader(io.StringIO(out)))


def per_bill(rows: list[tuple[str, int]]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for bill, amount in rows:
        count, total = out.get(bill, (0, 0))
        out[bill] = (count + 1, total + amount)
    return out


def test_link_faults_and_partition_lose_nothing_and_count_once(site: Site) -> None:
    started = time.monotonic()
    site.start(
        "centre", site.net.centre, *EDGE, "centre", "serve", "--config", str(site.centre_config)
    )
    # -v: a failure repeated is logged at DEBUG (once per change above it), and the attempt
    # counts below read every "... failed (attempt n)" line.
    site.start("node", site.net.edge, *EDGE, "-v", "serve", "--config", str(site.node_config))

    def mirror_ready() -> bool:
        return site.query("SELECT bills FROM mirror_state")[0][0] == len(ACCOUNTS)

    until("the node's mirror to bootstrap from the centre", mirror_ready, 60, site)
    site.start("load", site.net.edge, sys.executable, str(NETLOAD),
               "--url", f"http://127.0.0.1:{NODE_PORT}", "--token", site.token,
               "--bills", ",".join(BILLS), "--out", str(site.load_file))  # fmt: skip

    def delivering() -> bool:
        return bool(
            site.query("SELECT COUNT(*) FROM outbox_entries WHERE state = 'delivered'")[0][0]
        )

    until("payments to reach the centre before any fault", delivering, 30, site)

    figures = [run_fault(site, fault) for fault in FAULTS]
    outage = run_outage(site)
    figures.append(outage)
    time.sleep(1.0)  # a moment of healthy traffic after the last heal

    assert site.stop("load") == 0, site.log("load")[-3000:]
    until(
        "the whole outbox to be delivered",
        delivered_through(site, last_seq(site)),
        RECOVERY_S,
        site,
    )
    site.alive()

    records = load_records(site)
    for fig in figures:
        fill_from_load(fig, records)
    paid = [r for r in records if r["kind"] == "pay"]
    acked = {r["id"] for r in paid if r["status"] == 201}
    node_rows = site.query(
        "SELECT e.id, e.seq, p.bill_id, p.amount, e.state FROM payments p"
        " JOIN outbox_entries e USING (seq) WHERE e.kind = 'payment'"
    )
    ledger = centre_ledger(site)
    centre_ids = [row["id"] for row in ledger]
    lost, duplicated = len(acked - set(centre_ids)), len(centre_ids) - len(set(centre_ids))
    print(f"\npartition: {len(acked)} payments acknowledged, {len(ledger)} rows at the centre,"
          f" lost {lost}, duplicated {duplicated}, {duplicates(site)} 'duplicate' verdicts"
          f" answered to retries, {time.monotonic() - started:.0f} s")  # fmt: skip
    for fig in figures:
        print(json.dumps({k: v for k, v in vars(fig).items() if k not in ("start", "end")}))

    # The cashiers were never disturbed: every payment got its 201 at once.
    assert all(r["status"] == 201 for r in paid), [r for r in paid if r["status"] != 201][:3]
    assert not [r for r in records if r["kind"] == "pay_error"], "a payment call failed locally"

    # Inquiries kept answering from the mirror during every fault (invariant 3).
    for fig in figures:
        assert fig.inquiries > 0, f"no inquiry was answered during {fig.name}"
        assert fig.inquiries_ok == fig.inquiries and fig.inquiry_errors == 0, fig
        assert fig.payments > 0, f"no payment was taken during {fig.name}"
        # An inquiry that waited on the link would take at least the centre timeout (3 s).
        assert fig.inquiry_max_ms < TIMEOUT_S * 1000 * 2 / 3, fig

    # Each fault really cut replay, and replay resumed by itself after it.
    for fault, fig in zip(FAULTS, figures, strict=False):
        assert fault.link_down or fig.packets_hit > 0, f"no packet matched {fault.name}"
        if fault.must_fail:
            assert fig.replay_failures > 0, f"the replayer never noticed {fault.name}"
    lost_reply = figures[len(FAULTS) - 1]  # the reply-lost fault
    assert lost_reply.duplicates > 0, "no retry of an already-recorded batch reached the centre"

    # The long partition: bounded attempts (no hot loop), and replay never gave up.
    bound = attempts_bound(OUTAGE_S, RETRY_BASE_S, RETRY_CAP_S)
    assert bound == 18  # 0.5 + 1 + 2 + 4 * 14 s of minimum waits fit in 60 s
    assert 3 <= outage.replay_failures <= bound, outage
    assert outage.pull_failures <= bound, outage
    # One TCP connection per attempt at most, for the replayer and the puller together.
    assert 0 < outage.extra["connects"] <= 2 * bound, outage
    assert outage.extra["pending_at_heal"] > 0

    # After healing: everything delivered, the two ledgers equal, nothing counted twice.
    node_ids = {row[0] for row in node_rows}
    assert acked == node_ids, "the node's payments differ from what the cashiers were given"
    assert len(node_rows) == site.query("SELECT COUNT(*) FROM outbox_entries")[0][0]
    assert {row[4] for row in node_rows} == {"delivered"}
    assert len(centre_ids) == len(set(centre_ids)), "the centre recorded an entry twice"
    assert set(centre_ids) == node_ids, "lost or extra entries at the centre"
    assert {row["verdict"] for row in ledger} == {"applied"}
    assert {r["id"]: int(r["seq"]) for r in ledger} == {row[0]: row[1] for row in node_rows}
    assert per_bill([(r["bill_id"], int(r["amount"])) for r in ledger]) == per_bill(
        [(row[2], row[3]) for row in node_rows]
    )

    assert site.stop("node") == 0, site.log("node")[-3000:]
    assert site.stop("centre") == 0, site.log("centre")[-3000:]
