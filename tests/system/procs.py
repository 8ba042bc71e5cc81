"""Run the `edge` CLI as real processes for system tests: a centre, a node, kills and restarts."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from helpers import free_port, wait_until

from edge import tokens
from sync.centre.config import load_settings
from sync.centre.connect import open_store

ROOT = Path(__file__).resolve().parents[2]
NODE, GOV = "dam-1", "DAM"
# Rate limits off (DESIGN 5.7): these nodes take crowds of cashiers from one address and token.
NO_LIMITS = (
    "[limits]\ninquiries_per_s = 0\npayments_per_s = 0\nper_address_per_s = 0\nauth_failures = 0\n"
)


def edge(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", *args]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


@dataclass
class Proc:
    """One `edge` process; its output goes to a log file so a failure can show it."""

    args: list[str]
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> Proc:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env(**(self.extra_env | extra_env)),
            )
        return self

    def kill9(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def wait_http(
    url: str, proc: Proc, timeout: float = 30, context: ssl.SSLContext | None = None
) -> None:
    def answers() -> bool:
        if not proc.alive():
            raise AssertionError(f"process died before {url} answered:\n{proc.tail()}")
        with urllib.request.urlopen(url, timeout=2, context=context):
            return True

    wait_until(answers, timeout, lambda: f"{url} to answer:\n{proc.tail()}", every=0.1,
               ignore=(urllib.error.URLError, OSError))  # fmt: skip


@dataclass
class Site:
    """A centre and a node configured against each other under one directory."""

    base: Path
    centre_port: int = field(default_factory=free_port)
    node_port: int = field(default_factory=free_port)
    token: str = ""
    database: str = ""  # the centre's [centre] database: "" SQLite, else a postgresql:// URL

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        secret = self.base / "dam-1.secret"
        secret.write_text("system-test-secret-0123456789-0123456789\n")
        secret.chmod(0o600)
        self.centre_config = self.base / "centre.toml"
        self.centre_config.write_text(
            f'[centre]\ndata_dir = "{self.base / "centre"}"\nhost = "127.0.0.1"\nport = {self.centre_port}\n'
            f'governorate = "{GOV}"\ndatabase = "{self.database}"\n'
            f'[nodes.{NODE}]\ngovernorate = "{GOV}"\nsecret_file = "{secret}"\n'
        )
        tokens_path = self.base / "tokens.toml"
        self.token = tokens.add_token(tokens_path, "counter-1", ["inquire", "pay"])
        self.node_config = self.base / "edge.toml"
        self.node_config.write_text(
            f'[node]\nid = "{NODE}"\ngovernorate = "{GOV}"\ndata_dir = "{self.base / "node"}"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {self.node_port}\nshutdown_timeout_s = 5.0\n'
            f'[auth]\ntokens_file = "{tokens_path}"\n'
            f'[centre]\nurl = "http://127.0.0.1:{self.centre_port}"\nsecret_file = "{secret}"\n'
            "retry_base_s = 0.1\nretry_cap_s = 1.0\npull_interval_s = 0.5\nconfig_fault_retry_s = 1.0\n"
            '[storage]\nmin_free_mb = 0\n[ups]\nsource = "none"\n[power]\nfinal_replay_s = 3.0\n'
            + NO_LIMITS
        )
        self.centre = Proc(
            edge("centre", "serve", "--config", str(self.centre_config)), self.base / "centre.log"
        )
        self.node = Proc(edge("serve", "--config", str(self.node_config)), self.base / "node.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.node_port}"

    def seed(self, bills: int) -> None:
        subprocess.run(edge("centre", "seed", "--config", str(self.centre_config), "--bills", str(bills),
                            "--seed", "7"), check=True, env=env(), capture_output=True)  # fmt: skip

    def start_centre(self) -> None:
        self.centre.start()
        wait_http(f"http://127.0.0.1:{self.centre_port}/healthz", self.centre)

    def start_node(self, **extra_env: str) -> None:
        self.node.start(**extra_env)
        wait_http(f"{self.url}/healthz", self.node)

    def ledger(self) -> list[dict[str, str]]:
        out = subprocess.run(edge("centre", "ledger", "--config", str(self.centre_config), "--node", NODE),
                             check=True, env=env(), capture_output=True, text=True).stdout  # fmt: skip
        return list(csv.DictReader(io.StringIO(out)))

    def node_db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.base / 'node' / 'edge.db'}?mode=ro", uri=True)

    def centre_query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        """Rows of one statement on the centre's store (SQLite or PostgreSQL), from any thread
        but the event loop's (its own loop in a thread of its own)."""

        async def run() -> list[tuple[object, ...]]:
            db = open_store(load_settings(self.centre_config))
            await db.open()
            try:
                return await db.query(sql, *args)
            finally:
                await db.close()

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run()).result()

    def bills(self, n: int) -> list[str]:
        """Bill ids with something due, from the centre's database."""
        if self.database:
            rows = self.centre_query(
                "SELECT bill_id FROM bills WHERE amount - paid > 100000 ORDER BY bill_id LIMIT ?", n
            )
            return [str(r[0]) for r in rows]
        with closing(
            sqlite3.connect(f"file:{self.base / 'centre' / 'centre.db'}?mode=ro", uri=True)
        ) as conn:
            rows = conn.execute(
                "SELECT bill_id FROM bills WHERE amount - paid > 100000 ORDER BY bill_id LIMIT ?",
                (n,),
            ).fetchall()
        return [r[0] for r in rows]

    def shutdown(self) -> None:
        for proc in (self.node, self.centre):
            proc.kill9()
