"""A throwaway PostgreSQL cluster for tests: initdb in a temporary directory as an
unprivileged user, a free loopback port and a unix socket in that directory, stopped and
removed at the end. No test depends on a server the machine happens to run.

    cluster = Cluster.start()          # or the session fixture `pg_cluster` (conftest)
    url = cluster.create_database()    # a fresh, empty database per test
    cluster.restart("immediate")       # PostgreSQL itself killed and started again
    cluster.stop()
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from helpers import free_port

USER = "centre"  # the cluster's superuser role, which the tests connect as
# Test-only speed: nothing here must survive the machine crashing, only PostgreSQL being
# killed (its WAL in the OS's cache survives that), which the fault tests do.
SETTINGS = {
    "fsync": "off", "full_page_writes": "off", "shared_buffers": "32MB", "max_connections": "200",
    "listen_addresses": "'127.0.0.1'", "unix_socket_permissions": "0700",
    "log_min_messages": "warning", "logging_collector": "off",
}  # fmt: skip


def bindir() -> Path | None:
    """Debian's newest PostgreSQL (/usr/lib/postgresql/N/bin), else pg_config's, else None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    return None


def _version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


@dataclass
class Cluster:
    bin: Path
    base: Path  # owned by the cluster's system user: data/, the socket, the log
    port: int
    runas: list[str] = field(default_factory=list)  # e.g. ["runuser", "-u", "nobody", "--"]
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    @classmethod
    def start(cls, bin: Path) -> Cluster:
        base = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        runas: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses root: the cluster runs as nobody, in a directory it owns.
            owner = pwd.getpwnam("nobody")
            os.chown(base, owner.pw_uid, owner.pw_gid)
            runas = ["runuser", "-u", "nobody", "--"]
        cluster = cls(bin, base, free_port(), runas)
        cluster._run(
            "initdb", "-D", str(cluster.data), "-U", USER, "--auth=trust", "--no-sync",
            "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        with (cluster.data / "postgresql.conf").open("a") as conf:
            for key, value in {**SETTINGS, "port": str(cluster.port)}.items():
                conf.write(f"{key} = {value}\n")
            conf.write(f"unix_socket_directories = '{base}'\n")
        cluster.pg_ctl("start")
        return cluster

    def _run(self, tool: str, *args: str) -> str:
        out = subprocess.run(
            [*self.runas, str(self.bin / tool), *args],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if out.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {out.stderr}{out.stdout}{tail}")
        return out.stdout

    def pg_ctl(self, action: str, mode: str = "fast") -> None:
        """start, stop or restart (-m fast: clean; immediate: killed, recovers from its WAL)."""
        args = [action, "-D", str(self.data), "-w", "-t", "60", "-l", str(self.log)]
        if action != "start":
            args += ["-m", mode]
        self._run("pg_ctl", *args)

    def restart(self, mode: str = "fast") -> None:
        self.pg_ctl("restart", mode)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.base),
            "-p", str(self.port), "-U", USER, "-d", database, "-c", sql,
        )  # fmt: skip

    def create_database(self) -> str:
        """A fresh empty database (its URL): each test gets its own, the cluster is shared."""
        name = f"t{next(self._names)}_{os.getpid()}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(RuntimeError):  # a test that left a session open: kept
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.pg_ctl("stop", "immediate")
        shutil.rmtree(self.base, ignore_errors=True)
