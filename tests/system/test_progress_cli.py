"""Progress of long commands: on a terminal (a real pty) a bar with rate and ETA on stderr;
without one no bar, and plain log lines instead. `edge centre seed`, `edge centre import`,
`edge backup` and the bootstrap (`edge demo`, the same puller as `edge serve`)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

from helpers import bills_csv
from procs import Site, edge, env

BAR = re.compile(r"\|[█▏▎▍▌▋▊▉ ]*\|")  # tqdm's bar between pipes
RATE_ETA = re.compile(r"\[\d\d:\d\d<\d\d:\d\d, +[0-9.]+[kM]? ?(\w+)/s\]")  # [elapsed<left, rate]


def in_pty(args: list[str], until: str | None = None, timeout: float = 120) -> tuple[int, str]:
    """Run with stdin, stdout and stderr on a new pty; (exit code, everything it printed).
    With `until`, SIGINT once that text has appeared."""
    master, slave = pty.openpty()
    # A terminal's size, as a real one has (a new pty's is 0x0, where a bar has no room).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env(),
                            start_new_session=True)  # fmt: skip
    os.close(slave)
    out, deadline, interrupted = b"", time.monotonic() + timeout, False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every end of the slave is closed, the child is gone
                    break
                if not chunk:
                    break
                out += chunk
            if until and not interrupted and until.encode() in out:
                proc.send_signal(signal.SIGINT)
                interrupted = True
            if proc.poll() is not None and not ready:
                break
        else:
            proc.kill()
            raise AssertionError("timed out:\n" + out.decode(errors="replace"))
        return proc.wait(30), out.decode(errors="replace")
    finally:
        os.close(master)


def piped(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env(), timeout=120)


def test_seed_import_and_backup_draw_a_bar_on_a_terminal_and_log_lines_otherwise(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site")
    config = str(site.centre_config)
    code, shown = in_pty(
        edge("centre", "seed", "--config", config, "--bills", "20000", "--seed", "3")
    )
    assert code == 0, shown
    assert "seed DAM" in shown and BAR.search(shown) and "100%" in shown, shown
    assert any(unit == "bills" for unit in RATE_ETA.findall(shown)), shown
    assert "\r" in shown  # redrawn in place

    data = tmp_path / "bills.csv"
    data.write_text(bills_csv(f"03{i:08d}" for i in range(12_000)), encoding="utf-8")
    code, shown = in_pty(edge("centre", "import", "--config", config, str(data)))
    assert code == 0 and "12000 rows: 12000 new" in shown, shown
    units = RATE_ETA.findall(shown)
    assert "check bills.csv" in shown and "import bills.csv" in shown, shown
    assert "B" in units and "rows" in units, shown  # bytes checked, rows applied

    # No terminal: no bar, no carriage returns; a plain line says what was done, and how fast.
    done = piped(edge("centre", "seed", "--config", config, "--bills", "5000", "--seed", "4"))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and not BAR.search(done.stderr), done.stderr
    assert re.search(
        r"INFO sync.progress: seed DAM: 5,000/5,000 bills \(100%, [0-9,]+/s", done.stderr
    ), done.stderr
    data.write_text(bills_csv(f"04{i:08d}" for i in range(6_000)), encoding="utf-8")
    done = piped(edge("centre", "import", "--config", config, str(data)))
    assert done.returncode == 0 and "6000 rows: 6000 new" in done.stdout, done.stderr
    assert "\r" not in done.stderr and "import bills.csv: 6,000/6,000 rows (100%" in done.stderr

    try:
        site.start_centre()
        site.start_node()
        backups = tmp_path / "backups"
        code, shown = in_pty(edge("backup", "--config", str(site.node_config), f"{backups}/"))
        assert code == 0 and "integrity ok" in shown, shown
        assert "backup" in shown and BAR.search(shown) and "pages" in RATE_ETA.findall(shown), shown
        done = piped(edge("backup", "--config", str(site.node_config), f"{backups}/"))
        assert done.returncode == 0 and "\r" not in done.stderr and not BAR.search(done.stderr)
        assert re.search(r"backup edge\.db: [0-9,]+/[0-9,]+ pages \(100%", done.stderr), done.stderr
    finally:
        site.shutdown()


def test_the_bootstrap_draws_a_bar_in_a_terminal(tmp_path: Path) -> None:
    """`edge demo` seeds its centre and bootstraps its node in this process, through the same
    puller as `edge serve`: both show a bar when run in a terminal."""
    args = edge("demo", "--port", "0", "--data", str(tmp_path / "demo"), "--bills", "12000")
    code, shown = in_pty(args, until="Press Ctrl-C")
    assert code == 0 and "edge demo stopped cleanly" in shown, shown
    assert "seed DAM" in shown and "mirror bootstrap" in shown, shown
    line = next(x for x in re.split(r"[\r\n]", shown) if "mirror bootstrap" in x and "100%" in x)
    assert BAR.search(line) and RATE_ETA.search(line) and "12.0k/12.0k" in line, line
