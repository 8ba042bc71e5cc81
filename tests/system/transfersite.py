"""An islanded site for the transfer-file tests: a centre (not served) and a node whose
`centre.url` is empty, both configured under one directory, driven by the `edge` CLI."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from loadgen import Cashiers
from procs import GOV, NODE, Site, edge, env


class Islanded(Site):
    """A Site whose node has no link (`centre.url = ""`): files are its only way."""

    def __post_init__(self) -> None:
        super().__post_init__()
        text = self.node_config.read_text()
        start = text.index("url = ")
        self.node_config.write_text(text[:start] + 'url = ""' + text[text.index("\n", start) :])
        self.secret = self.base / "dam-1.secret"
        # A second node of the same governorate, with its own key: files for it are not ours.
        other = self.base / "dam-2.secret"
        other.write_text("system-test-other-secret-0123456789-0123\n")
        other.chmod(0o600)
        with self.centre_config.open("a") as out:
            out.write(f'[nodes.dam-2]\ngovernorate = "{GOV}"\nsecret_file = "{other}"\n')

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(edge(*args), env=env(), capture_output=True, text=True, check=check,
                              timeout=300)  # fmt: skip

    def node_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli(*args, "--config", str(self.node_config), check=check)

    def centre_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli("centre", *args, "--config", str(self.centre_config), check=check)

    def export_bills(self, to: Path, *extra: str, node: str = NODE) -> Path:
        self.centre_cli("export", "bills", "--node", node, "--to", str(to), *extra)
        return to

    def export_outbox(self, to: Path) -> Path:
        self.node_cli("export", "outbox", "--to", str(to))
        return to

    def import_outbox(self, path: Path, verdicts: Path) -> Path:
        self.centre_cli("import", "outbox", str(path), "--verdicts-out", str(verdicts))
        return verdicts

    def centre_db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.base / 'centre' / 'centre.db'}?mode=ro", uri=True)

    def node_states(self) -> dict[str, int]:
        with closing(self.node_db()) as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM outbox_entries GROUP BY state")
            return {state: n for state, n in rows}

    def pay(self, count: int, clients: int = 16, seed: int = 5) -> Cashiers:
        """`count` payments (at least) through the running node's API, as cashiers make them."""
        cashiers = Cashiers(self.url, self.token, self.bills(200), random.Random(seed))

        async def run() -> None:
            task = asyncio.create_task(cashiers.run(clients))
            while len(cashiers.acked) < count and not task.done():
                await asyncio.sleep(0.05)
            cashiers.stop.set()
            await task

        asyncio.run(run())
        return cashiers
