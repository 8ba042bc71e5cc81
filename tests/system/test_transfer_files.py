"""Transfer files from the CLI alone (issue 18, PROTOCOL.md 11): an islanded node's round trip,
a node moving between files and the live link, and every damaged or misdirected file refused
with nothing changed on either side."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from helpers import wait_until
from loophost import db_digest
from procs import NODE
from transfersite import Islanded

import outbox
from sync import protocol, signing
from sync.transfer import Header, TransferFile, write_file

pytestmark = pytest.mark.slow


def _status(site: Islanded) -> dict:
    """What `edge status` prints (the running node's /v1/status)."""
    return json.loads(site.node_cli("status").stdout)


def test_islanded_node_round_trip_of_5000_payments(tmp_path: Path) -> None:
    """centre.url = "": bootstrap from a bills file, 5,000 payments, export, the centre
    imports, the node imports the verdicts: each payment at the centre once, all settled."""
    site = Islanded(tmp_path)
    site.seed(2_000)
    bills = site.export_bills(tmp_path / "bills.xfer")
    out = site.node_cli("import", "bills", str(bills)).stdout
    assert "2000 bills, 2000 stored" in out
    site.start_node()
    try:
        cashiers = site.pay(5_000)
        paid = set(cashiers.acked.values())
        assert len(paid) >= 5_000
        outbox = site.export_outbox(tmp_path / "outbox.xfer")
        verdicts = site.import_outbox(outbox, tmp_path / "verdicts.xfer")
        # While the node serves: the import goes through its database beside the server.
        assert "settled" in site.node_cli("import", "verdicts", str(verdicts)).stdout
        status = _status(site)
    finally:
        site.shutdown()
    ledger = site.ledger()
    assert Counter(r["id"] for r in ledger) == Counter(paid)  # every payment, each once
    assert {r["verdict"] for r in ledger} <= {"applied", "credited"}
    assert site.node_states() == {"delivered": len(paid)}
    moved = status["transfers"]
    assert moved["last_export"]["entries"] == len(paid)
    assert moved["last_import"]["kind"] == "verdicts"
    assert moved["last_import"]["changed"] == len(paid)
    assert moved["unacknowledged"] == 0
    again = site.node_cli("export", "outbox", "--to", str(tmp_path / "again.xfer")).stdout
    assert "nothing to export" in again and not (tmp_path / "again.xfer").exists()


def test_mixed_file_and_live_link_count_each_entry_once(tmp_path: Path) -> None:
    """Half the entries go by file while the link is down; the link returns and the replayer
    sends the rest, re-sending the imported half: each counted once, no chain refusal; the
    mirror bootstrapped from a file is followed live from its cursor."""
    site = Islanded(tmp_path)
    text = site.node_config.read_text()
    site.node_config.write_text(
        text.replace('url = ""', f'url = "http://127.0.0.1:{site.centre_port}"')
    )
    site.seed(300)
    site.node_cli("import", "bills", str(site.export_bills(tmp_path / "bills.xfer")))
    site.start_node()  # the centre is not running: the link is down
    try:
        first = set(site.pay(100, seed=1).acked.values())
        outbox = site.export_outbox(tmp_path / "outbox.xfer")
        verdicts = site.import_outbox(outbox, tmp_path / "verdicts.xfer")
        second = set(site.pay(100, seed=2).acked.values())
        with TransferFile(outbox) as f:
            assert f.header.count == len(first)
        site.start_centre()
        wait_until(lambda: site.node_states() == {"delivered": len(first | second)}, timeout=60)
        bill = site.bills(1)[0]
        site.centre_cli("pay", bill, "100")
        with closing(site.centre_db()) as conn:
            (version,) = conn.execute(
                "SELECT version FROM bills WHERE bill_id = ?", (bill,)
            ).fetchone()
        # The online payment at the centre reaches the mirror by the live feed.
        wait_until(lambda: _mirror_version(site, bill) == version, timeout=30)
        log = site.node.tail()
        late = site.node_cli("import", "verdicts", str(verdicts)).stdout
    finally:
        site.shutdown()
    ledger = site.ledger()
    assert Counter(r["id"] for r in ledger) == Counter(first | second)
    assert [int(r["seq"]) for r in ledger] == list(range(1, len(first | second) + 1))
    assert "chain_" not in log  # no chain_gap / chain_broken refusal
    assert "bootstrapping" not in log  # the file's cursor was followed, not a new snapshot
    assert "already settled: nothing changed" in late


def _mirror_version(site: Islanded, bill: str) -> int:
    with closing(site.node_db()) as conn:
        return int(
            conn.execute("SELECT version FROM bills WHERE bill_id = ?", (bill,)).fetchone()[0]
        )


# --- refusals: one islanded site, files made once; each case checks both databases -------


class Files:
    def __init__(self, site: Islanded, base: Path) -> None:
        self.site, self.base = site, base

    def digests(self) -> tuple[str, str]:
        with closing(self.site.node_db()) as node, closing(self.site.centre_db()) as centre:
            return db_digest(node), db_digest(centre)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    base = tmp_path_factory.mktemp("refusals")
    site = Islanded(base / "site")
    site.seed(200)
    site.export_bills(base / "bills.xfer")
    site.node_cli("import", "bills", str(base / "bills.xfer"))
    site.start_node()
    try:
        site.pay(30, clients=4)
    finally:
        site.node.stop()
    site.export_outbox(base / "outbox.xfer")
    site.import_outbox(base / "outbox.xfer", base / "verdicts.xfer")
    site.export_bills(base / "other-node.xfer", node="dam-2")
    yield Files(site, base)
    site.shutdown()


def _damaged(files: Files, name: str, how: str) -> Path:
    raw = (files.base / name).read_bytes()
    path = files.base / f"{how}-{name}"
    if how == "tampered":
        middle = len(raw) // 2
        path.write_bytes(raw[:middle] + bytes([raw[middle] ^ 0x20]) + raw[middle + 1 :])
    else:
        path.write_bytes(raw[: len(raw) * 2 // 3])
    return path


def _forged(files: Files, kind: str, **fields: object) -> Path:
    """A file signed with the node's real key whose header names another governorate."""
    secret = signing.read_secret(files.site.secret)
    path = files.base / f"forged-{kind}.xfer"
    header = Header(kind, str(fields.get("node", NODE)), str(fields.get("gov", "ALE")), "", 0.0)
    write_file(path, secret, header, [])
    return path


def _refused(files: Files, args: list[str], centre: bool, message: str) -> None:
    before = files.digests()
    run = files.site.centre_cli if centre else files.site.node_cli
    done = run(*args, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr and "nothing was changed" in done.stderr
    assert files.digests() == before


@pytest.mark.parametrize("how", ["tampered", "truncated"])
@pytest.mark.parametrize(("name", "centre"), [("outbox.xfer", True), ("verdicts.xfer", False),
                                               ("bills.xfer", False)])  # fmt: skip
def test_damaged_files_are_refused_and_change_nothing(
    files: Files, name: str, centre: bool, how: str
) -> None:
    path = _damaged(files, name, how)
    kind = name.split(".")[0]
    args = (["import", "outbox", str(path), "--verdicts-out", str(files.base / "v2.xfer")]
            if centre else ["import", kind, str(path)])  # fmt: skip
    _refused(files, args, centre, "")
    assert not (files.base / "v2.xfer").exists()


def test_a_bills_file_for_another_node_is_refused(files: Files) -> None:
    _refused(files, ["import", "bills", str(files.base / "other-node.xfer")], False,
             "is for node dam-2, and this is node dam-1")  # fmt: skip


def test_files_of_another_governorate_are_refused_on_both_sides(files: Files) -> None:
    _refused(files, ["import", "bills", str(_forged(files, "bills"))], False,
             "is for governorate ALE, and this node serves DAM")  # fmt: skip
    path = _forged(files, "outbox")
    _refused(files, ["import", "outbox", str(path), "--verdicts-out", str(files.base / "v3.xfer")],
             True, "says governorate ALE and node dam-1 serves DAM")  # fmt: skip


def test_an_outbox_file_of_another_or_unknown_node_is_refused_at_the_centre(files: Files) -> None:
    out = str(files.base / "v4.xfer")
    path = _forged(files, "outbox", node="dam-2", gov="DAM")
    _refused(files, ["import", "outbox", str(path), "--verdicts-out", out], True,
             "which is not a live key of node dam-2")  # fmt: skip
    path = _forged(files, "outbox", node="zzz-9", gov="DAM")
    _refused(files, ["import", "outbox", str(path), "--verdicts-out", out], True,
             "which this centre does not know")  # fmt: skip


def test_a_file_of_the_wrong_kind_is_refused(files: Files) -> None:
    _refused(files, ["import", "bills", str(files.base / "verdicts.xfer")], False,
             "is a verdicts file, not a bills file")  # fmt: skip


def test_replayed_old_files_change_nothing(files: Files) -> None:
    """The bills file already applied is refused as old; the outbox file already recorded
    is answered with the same verdicts (duplicates) and records nothing."""
    _refused(files, ["import", "bills", str(files.base / "bills.xfer")], False, "an old file")
    before = files.digests()
    again = files.base / "verdicts-again.xfer"
    out = files.site.import_outbox(files.base / "outbox.xfer", again)
    assert files.digests() == before
    with TransferFile(out) as f:
        f.verify(signing.read_secret(files.site.secret))
        verdicts = [v for frame in f.frames() for v in protocol.decode_reply(frame).results]
    assert len(verdicts) == f.header.count >= 30
    assert {v.verdict for v in verdicts} == {"duplicate"}


def test_a_verdicts_file_settles_once(files: Files) -> None:
    first = files.site.node_cli("import", "verdicts", str(files.base / "verdicts.xfer")).stdout
    assert "settled" in first
    before = files.digests()
    again = files.site.node_cli("import", "verdicts", str(files.base / "verdicts.xfer")).stdout
    assert "already settled: nothing changed" in again
    assert files.digests() == before


def test_a_changes_file_continues_from_the_cursor_and_a_gap_is_refused(files: Files) -> None:
    """`--since` the mirror's cursor brings what changed (payments recorded from the outbox
    file, an online payment); a file that starts after the cursor is refused as a gap."""
    site = files.site
    with closing(site.node_db()) as conn:
        (cursor,) = conn.execute("SELECT cursor FROM mirror_state").fetchone()
    bill = site.bills(1)[0]
    site.centre_cli("pay", bill, "100")
    changes = site.export_bills(files.base / "changes.xfer", "--since", str(cursor))
    gap = site.export_bills(files.base / "gap.xfer", "--since", str(cursor + 10_000))
    _refused(files, ["import", "bills", str(gap)], False,
             f"holds the changes since cursor {cursor + 10_000}, and the mirror is at {cursor}")  # fmt: skip
    assert "stored" in site.node_cli("import", "bills", str(changes)).stdout
    with closing(site.centre_db()) as conn:
        (last,) = conn.execute("SELECT last FROM change_counter").fetchone()
        want = conn.execute("SELECT version, paid FROM bills WHERE bill_id = ?", (bill,)).fetchone()
    with closing(site.node_db()) as conn:
        assert conn.execute("SELECT cursor FROM mirror_state").fetchone() == (last,)
        got = conn.execute("SELECT version, paid FROM bills WHERE bill_id = ?", (bill,)).fetchone()
    assert got == want and last > cursor
    _refused(files, ["import", "bills", str(changes)], False, "an old file")


def test_a_signed_outbox_file_with_a_forged_entry_fails_the_chain_check(files: Files) -> None:
    """Signed with the node's real key, but its new entry's hash is not of its content: the
    centre's chain check (the online endpoint's) refuses the whole file, nothing recorded."""
    secret = signing.read_secret(files.site.secret)
    with TransferFile(files.base / "outbox.xfer") as f:
        f.verify(secret)
        header, batches = f.header, [protocol.decode_batch(frame) for frame in f.frames()]
    last = batches[-1].entries[-1]
    forged = dataclasses.replace(last, seq=last.seq + 1, id=outbox.new_entry_id(NODE),
                                 prev_hash=last.hash, hash="0" * 64)  # fmt: skip
    header = dataclasses.replace(header, count=1, first_seq=forged.seq, last_seq=forged.seq,
                                 chain_head=forged.hash)  # fmt: skip
    path = files.base / "forged-entry.xfer"
    write_file(path, secret, header, [protocol.encode_batch(NODE, [forged])])
    _refused(files, ["import", "outbox", str(path), "--verdicts-out", str(files.base / "v5.xfer")],
             True, "hash does not match the entry's content")  # fmt: skip
