"""sync.transfer: a file carries its frames only to the holder of the key, and any change,
cut or wrong key is refused before a frame is read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sync.errors import TransferRefused
from sync.signing import key_id
from sync.transfer import MAGIC, TAG, Header, TransferFile, write_file

SECRET = b"unit-test-secret-0123456789abcdef0123"
OTHER = b"unit-test-other--0123456789abcdef0123"
FRAMES = [b"first frame", b"", b"x" * 300_000, bytes(range(256)) * 10]


def _write(tmp_path: Path, frames: list[bytes] = FRAMES) -> Path:
    path = tmp_path / "f.xfer"
    header = Header("outbox", "dam-1", "DAM", "", 1_700_000_000.5, 1, 4, "a" * 64, 4)
    write_file(path, SECRET, header, frames)
    return path


def _read(path: Path, secret: bytes = SECRET) -> list[bytes]:
    with TransferFile(path) as f:
        f.verify(secret)
        return list(f.frames())


def test_round_trip_gives_back_the_frames_and_the_header(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert _read(path) == FRAMES
    with TransferFile(path) as f:
        assert (f.header.kind, f.header.node, f.header.governorate) == ("outbox", "dam-1", "DAM")
        assert (f.header.first_seq, f.header.last_seq, f.header.count) == (1, 4, 4)
        assert f.header.key == key_id(SECRET) and f.header.chain_head == "a" * 64
        assert len(f.header.nonce) == 32


def test_the_file_is_private_and_its_content_is_not_readable(tmp_path: Path) -> None:
    path = _write(tmp_path, [b"Subscriber Name, 12 Baghdad Street" * 50])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    assert raw.startswith(MAGIC)
    assert b"Subscriber" not in raw and b"Baghdad" not in raw


def test_every_single_byte_changed_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, [b"abc" * 100])
    raw = path.read_bytes()
    for i in range(len(raw)):
        damaged = tmp_path / "d.xfer"
        damaged.write_bytes(raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :])
        with pytest.raises(TransferRefused, match="nothing was changed"):
            _read(damaged)


def test_a_truncated_file_is_refused_at_any_length(tmp_path: Path) -> None:
    raw = _write(tmp_path).read_bytes()
    for n in [0, 1, len(MAGIC), len(MAGIC) + 4, 60, len(raw) - TAG, len(raw) - 1]:
        cut = tmp_path / "cut.xfer"
        cut.write_bytes(raw[:n])
        with pytest.raises(TransferRefused):
            _read(cut)


def test_a_longer_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(TransferRefused, match="does not verify"):
        _read(path)


def test_another_key_is_refused_naming_both_key_ids(tmp_path: Path) -> None:
    with pytest.raises(TransferRefused, match=f"{key_id(SECRET)}.*{key_id(OTHER)}"):
        _read(_write(tmp_path), OTHER)


def test_frames_are_not_given_before_verification(tmp_path: Path) -> None:
    with TransferFile(_write(tmp_path)) as f, pytest.raises(RuntimeError):
        next(f.frames())


def test_a_file_of_another_kind_of_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text that someone put on the stick\n" * 10)
    with pytest.raises(TransferRefused, match="not an edge transfer file"):
        TransferFile(path)
