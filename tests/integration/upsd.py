"""A real NUT `upsd` with the `dummy-ups` driver on 127.0.0.1 (free port), run without systemd.

Both daemons run in the foreground from Debian's /lib/nut (the /sbin wrappers do nothing
without nut.conf), against a private config dir, and are stopped by the PID we started.

Starting a pair takes ~3 s of NUT's own timers (the driver makes its socket after its first
1 s poll; upsd answers WAIT until the driver's dump is in), so tests share one:

* `upsd`: the session's pair, `reset()` before each test (daemons running, no FSD, no
  frozen process, the UPS `OL` at its initial figures). For tests that change the UPS with
  SET VAR, freeze a daemon, or kill the driver and start it again themselves.
* `fresh_upsd`: a pair of the test's own, stopped after it. For tests that leave state
  `reset()` does not undo cheaply or at all: upsd stopped (the dummy-ups 2.8.0 that outlived
  it must be restarted before the next SET VAR), FSD latched (only a restart clears it), a
  driver left dead, the device file rewritten, or MAXAGE changed (`set_maxage`). `UpsdPool`
  starts the pairs the collected tests will take as the session starts, in the background,
  so taking one costs nothing once it is up.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import free_port, unavailable, wait_until

from edge.power import nut

# tests/conftest.py imports the *_fixture functions; pytest knows them by their `name`.

UPS = "dummy"
ADMIN_PASSWORD = "test-admin-pw"
_DIRS = (Path("/lib/nut"), Path("/usr/lib/nut"), Path("/usr/libexec/nut"))
START_S = 10.0


def nut_binaries() -> tuple[Path, Path] | None:
    """(dummy-ups, upsd), or None when the NUT packages are not installed."""
    for d in _DIRS:
        if (d / "dummy-ups").exists() and (d / "upsd").exists():
            return d / "dummy-ups", d / "upsd"
    return None


class Upsd:
    """One upsd + dummy-ups pair in `root`; `status` is the initial `ups.status`."""

    def __init__(self, root: Path, *, status: str = "OL", maxage_s: int = 15) -> None:
        found = nut_binaries()
        assert found is not None
        self.driver_bin, self.upsd_bin = found
        self.root, self.etc, self.state = root, root / "etc", root / "state"
        self.etc.mkdir(parents=True)
        self.state.mkdir(mode=0o700)
        self.port = free_port()
        self.maxage_s = maxage_s
        self.driver: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.driver_outlived_upsd = False
        self.fsd_latched = False
        self.frozen: set[str] = set()
        self.closed = False  # stop() was called: nothing starts any more
        self._spawning = threading.Lock()
        self.env = os.environ | {
            "NUT_CONFPATH": str(self.etc),
            "NUT_STATEPATH": str(self.state),
            "NUT_ALTPIDPATH": str(self.state),
        }
        self._write_config(status)

    def _write_config(self, status: str) -> None:
        files = {
            "ups.conf": f"pollinterval = 1\n[{UPS}]\n  driver = dummy-ups\n  port = {self.etc / 'dummy.dev'}\n",
            "upsd.conf": self._upsd_conf(),
            "upsd.users": f"[admin]\n  password = {ADMIN_PASSWORD}\n  actions = SET FSD\n  instcmds = ALL\n",
            "nut.conf": "MODE=standalone\n",
            "dummy.dev": f"ups.status: {status}\nbattery.charge: 100\nbattery.runtime: 3600\n"
            "input.voltage: 230.0\nups.load: 23\n",
        }
        for name, text in files.items():
            path = self.etc / name
            path.write_text(text)
            path.chmod(0o600)

    def _upsd_conf(self) -> str:
        return f"LISTEN 127.0.0.1 {self.port}\nMAXAGE {self.maxage_s}\n"

    # --- processes ----------------------------------------------------------------------

    def _spawn(self, which: str, *args: str) -> None:
        """Start the "driver" or the "server" (unless stop() was called: a pool's spare)."""
        binary = self.driver_bin if which == "driver" else self.upsd_bin
        with self._spawning, (self.root / f"{binary.name}.log").open("ab") as log:
            if self.closed:
                raise AssertionError("this upsd was stopped while it started")
            proc = subprocess.Popen(
                [str(binary), *args, "-u", getpass.getuser(), "-F", "-D"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            setattr(self, which, proc)

    def _running(self, which: str) -> bool:
        """True, or raises if stop() was called or the process exited (no waiting for nothing)."""
        proc = self.driver if which == "driver" else self.server
        if self.closed:
            raise AssertionError("this upsd was stopped while it started")
        if proc is None or proc.poll() is not None:
            raise AssertionError(f"the {which} exited; see the logs in {self.root}")
        return True

    def start_driver(self) -> None:
        self.driver_outlived_upsd = False
        sock = self.state / f"dummy-ups-{UPS}"
        sock.unlink(missing_ok=True)  # dummy-ups leaves it behind on SIGTERM
        self._spawn("driver", "-a", UPS)
        wait_until(lambda: self._running("driver") and sock.exists(), START_S,
                   "the dummy-ups socket")  # fmt: skip

    def start_server(self) -> None:
        self._spawn("server")
        wait_until(lambda: self._running("server") and self._serving(), START_S,
                   "upsd to serve real data")  # fmt: skip

    def start(self) -> Upsd:
        self.start_driver()
        self.start_server()
        return self

    def kill_driver(self) -> None:
        self.driver = _stop(self.driver)

    def stop_server(self) -> None:
        self.server = _stop(self.server)
        # dummy-ups 2.8.0 aborts ("bit out of range ... fd_set") at its next broadcast after
        # the upsd it served went away, e.g. on a SET VAR: set() restarts it first.
        self.driver_outlived_upsd = self.driver is not None
        self.fsd_latched = False

    def freeze(self, which: str) -> None:
        """SIGSTOP the "driver" (upsd then says DATA-STALE) or the "server" (no answers)."""
        proc = self.driver if which == "driver" else self.server
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        self.frozen.add(which)

    def thaw(self, which: str) -> None:
        proc = self.driver if which == "driver" else self.server
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        self.frozen.discard(which)

    def set_maxage(self, seconds: int) -> None:
        """Change MAXAGE (after which upsd calls a silent driver's data stale) and reload upsd."""
        assert self.server is not None
        log = self.root / "upsd.log"
        reloads = log.read_text(errors="replace").count("reloading configuration")
        self.maxage_s = seconds
        (self.etc / "upsd.conf").write_text(self._upsd_conf())
        self.server.send_signal(signal.SIGHUP)
        wait_until(lambda: log.read_text(errors="replace").count("reloading configuration") > reloads,
                   START_S, "upsd to reload its configuration")  # fmt: skip
        wait_until(self._serving, START_S, "upsd to serve after the reload")

    def reset(self) -> None:
        """Both daemons running, no FSD, and the UPS back to its initial figures."""
        for which in list(self.frozen):
            self.thaw(which)
        if self.fsd_latched:
            self.stop_server()
        if self.driver is None or self.driver.poll() is not None:
            self.start_driver()
        if self.server is None or self.server.poll() is not None:
            self.start_server()
        wait_until(self._serving, START_S, "upsd to serve real data")
        for var, value in (("battery.charge", "100"), ("battery.runtime", "3600")):
            if self.get(var) != value:
                self.set(var, value)
        if self.get("ups.status") != "OL":
            self.set_status("OL")
        wait_until(lambda: self.get("battery.runtime") == "3600", START_S, "the initial figures")

    def stop(self) -> None:
        with self._spawning:
            self.closed = True
        for which in list(self.frozen):
            self.thaw(which)
        self.stop_server()
        self.kill_driver()

    # --- talking to it ------------------------------------------------------------------

    def request(self, *lines: str, login: bool = False) -> str:
        """Send commands on one connection; return the last reply line (ERR raises)."""
        if login:
            lines = ("USERNAME admin", f"PASSWORD {ADMIN_PASSWORD}", *lines)
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=3) as s,
            s.makefile("rwb") as f,
        ):
            reply = ""
            for line in lines:
                f.write(line.encode() + b"\n")
                f.flush()
                reply = f.readline().decode().rstrip("\n")
                nut.check_reply(nut.split_line(reply), reply)
            return reply

    def get(self, var: str) -> str:
        return nut.parse_var(self.request(f"GET VAR {UPS} {var}"), UPS, var)

    def set(self, var: str, value: str) -> None:
        if self.driver_outlived_upsd:
            self.kill_driver()
            self.start_driver()
            wait_until(self._serving, START_S, "data from the new driver")
        self.request(f"SET VAR {UPS} {var} {nut.quote(value)}", login=True)

    def set_status(self, status: str) -> None:
        """Change `ups.status` and wait until upsd serves the new value."""
        self.set("ups.status", status)
        wait_until(lambda: self._try_status() == status, START_S, f"ups.status {status!r}")

    def fsd(self) -> None:
        """Set FSD; upsd latches it until restarted (reset() does that)."""
        self.request(f"FSD {UPS}", login=True)
        self.fsd_latched = True

    def _serving(self) -> bool:
        """upsd answers with real data (not WAIT, not an error)."""
        return "WAIT" not in (self._try_status() or "WAIT")

    def _try_status(self) -> str | None:
        try:
            return self.get("ups.status")
        except (OSError, nut.NutError):
            return None


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return None


def require_nut() -> None:
    if nut_binaries() is None:
        unavailable("NUT binaries absent (apt-get install nut-server nut-client)")


class UpsdPool:
    """Started upsd pairs, one per `take()`, each new (own directory, port and processes).

    `expect(n)` says how many the session will take: up to SPARES of those start in the
    background ahead of their `take()`, none beyond `n`. `close()` stops every pair, a spare
    still starting too (it gives up at once).
    """

    SPARES = 2

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self._starter = ThreadPoolExecutor(max_workers=self.SPARES, thread_name_prefix="upsd")
        self._started: list[tuple[Upsd, Future[Upsd]]] = []
        self._spares: list[Future[Upsd]] = []
        self._expected = 0

    def _start(self) -> Future[Upsd]:
        server = Upsd(self._tmp.mktemp("nut"))
        started = self._starter.submit(server.start)
        self._started.append((server, started))
        return started

    def _top_up(self) -> None:
        while len(self._spares) < self.SPARES and len(self._started) < self._expected:
            self._spares.append(self._start())

    def expect(self, takes: int) -> None:
        self._expected = takes
        self._top_up()

    def take(self) -> Upsd:
        started = self._spares.pop(0) if self._spares else self._start()
        self._top_up()
        return started.result()

    def close(self) -> None:
        for server, _ in self._started:
            server.stop()  # a spare still starting gives up at once
        for _, started in self._started:
            started.exception()
        self._starter.shutdown()


@pytest.fixture(scope="session", name="upsd_pool")
def upsd_pool_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpsdPool]:
    require_nut()
    pool = UpsdPool(tmp_path_factory)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session", autouse=True, name="upsd_warm_up")
def upsd_warm_up_fixture(request: pytest.FixtureRequest) -> None:
    """Start the pairs the collected tests will take as the session starts (one shared)."""
    names = [set(item.fixturenames) for item in request.session.items]
    takes = sum("fresh_upsd" in n for n in names) + any("shared_upsd" in n for n in names)
    if takes and nut_binaries():
        request.getfixturevalue("upsd_pool").expect(takes)


@pytest.fixture(scope="session", name="shared_upsd")
def shared_upsd_fixture(upsd_pool: UpsdPool) -> Upsd:
    """One upsd for the whole session (starting one takes ~3 s)."""
    return upsd_pool.take()


@pytest.fixture(name="upsd")
def upsd_fixture(shared_upsd: Upsd) -> Upsd:
    """The session's upsd, reset: running, no FSD, nothing frozen, its dummy UPS `OL`."""
    shared_upsd.reset()
    return shared_upsd


@pytest.fixture(name="fresh_upsd")
def fresh_upsd_fixture(upsd_pool: UpsdPool) -> Iterator[Upsd]:
    """A running upsd of the test's own, its dummy UPS `OL`; stopped after the test."""
    server = upsd_pool.take()
    try:
        yield server
    finally:
        server.stop()
