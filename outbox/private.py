"""Private files: databases, backups and secrets are created 0600, whatever the umask.

A node's database holds subscribers' names; the umask of whoever runs the code (a test, a
shell, a cron job) must not decide who can read it. Looser existing files are tightened.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

MODE = 0o600
# SQLite creates these beside the database, giving them the database's own mode.
SIDECARS = ("-wal", "-shm", "-journal")
_tightened: set[str] = set()


def tighten(path: Path) -> bool:
    """chmod an existing `path` to 0600 if anyone but its owner may use it; True if it was."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return False
    if not mode & 0o077:
        return False
    key = str(path)
    try:
        path.chmod(MODE)
    except OSError as exc:  # not ours, or a read-only mount (systemd's ProtectSystem): say so
        if key not in _tightened:
            _tightened.add(key)
            log.warning("%s is mode %o, readable by others, and cannot be tightened: %s",
                        path, mode, exc.strerror)  # fmt: skip
        return False
    if key not in _tightened:  # once per file and process: a restart loop must not flood
        _tightened.add(key)
        log.warning("%s was mode %o, readable by others; now %o", path, mode, MODE)
    return True


def create(path: Path) -> None:
    """Make `path` an empty 0600 file if it is missing; tighten it if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    except FileExistsError:
        tighten(path)
        return
    try:
        # The umask can only narrow 0600; this is for filesystems that ignore the create
        # mode (some network and FUSE mounts) and so would leave their default.
        os.fchmod(fd, MODE)
    finally:
        os.close(fd)


def database(path: str | Path) -> None:
    """Before SQLite opens `path`: the file exists 0600, as do any -wal/-shm left beside it.

    SQLite gives the -wal and -shm files it creates the database file's mode, so creating
    the main file 0600 is what keeps them private too.
    """
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return
    main = Path(path)
    create(main)
    for suffix in SIDECARS:
        tighten(main.with_name(main.name + suffix))
