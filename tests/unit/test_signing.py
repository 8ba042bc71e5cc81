"""Request signing and signed answers (protocol 2): the worked example of PROTOCOL.md, the
centre's header checks, the answer MAC, and the secret file rules."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import answers, protocol, signing
from sync.errors import BadAnswer, BadSignature, SyncError

NODE = "dam-1"
SECRET = ("0123456789abcdef" * 4).encode()
KEYS = {NODE: {signing.key_id(SECRET): SECRET}}
PATH = "/v1/nodes/dam-1/outbox"
EXAMPLE_PATH = "/v1/governorates/DAM/bills/changes?since=0&limit=1000"
NONCE = "00112233445566778899aabbccddeeff"


def test_protocol_md_worked_example() -> None:
    # The same strings and numbers as sync/PROTOCOL.md 3: if this fails, the document is wrong.
    headers = signing.sign(SECRET, NODE, "GET", EXAMPLE_PATH, b"", 1_780_000_000, nonce=NONCE)
    assert headers == {
        "X-Edge-Node": "dam-1",
        "X-Edge-Key": "a8ae6e6e",
        "X-Edge-Timestamp": "1780000000",
        "X-Edge-Nonce": NONCE,
        "X-Edge-Digest": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "X-Edge-Signature": "4d8a34fdd6a84473216f0daa7a58c26d24a57ca9203765a1b394ac5f3af5ca10",
    }
    assert signing.string_to_sign(
        "GET", EXAMPLE_PATH, 1_780_000_000, NODE, "a8ae6e6e", NONCE, signing.EMPTY_DIGEST
    ) == (
        b"edge-request/2\nGET\n/v1/governorates/DAM/bills/changes?since=0&limit=1000\n"
        b"1780000000\ndam-1\na8ae6e6e\n00112233445566778899aabbccddeeff\n"
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    body = protocol.encode_changes([], 0, False)
    assert body.hex() == "84a17604a76368616e67657390a6637572736f7200a46d6f7265c2"
    date = "Thu, 28 May 2026 20:26:41 GMT"
    mac = answers.answer_mac(SECRET, headers["X-Edge-Signature"], 200, date, body)
    assert mac == "67408abbc7822f7cd69da00a28c5590b0ea0aedcc288db3950051f83addc2c07"
    end = answers.page_mac(SECRET, headers["X-Edge-Signature"], 0, 0, signing.EMPTY_DIGEST, (0, 0))
    assert end == "d584354fae722096ba8af2b5c062b8f771fee1affad61741d668efaa2bf2bd29"


def test_a_fresh_nonce_each_time() -> None:
    one = signing.sign(SECRET, NODE, "POST", PATH, b"", 1000)
    two = signing.sign(SECRET, NODE, "POST", PATH, b"", 1000)
    assert one["X-Edge-Nonce"] != two["X-Edge-Nonce"]
    assert one["X-Edge-Signature"] != two["X-Edge-Signature"]
    assert len(one["X-Edge-Nonce"]) == 32


def test_headers_verify_in_any_case_without_the_body() -> None:
    body = b"body"
    headers = signing.sign(SECRET, NODE, "POST", PATH, body, 1000)
    signed = signing.check_headers(KEYS, "POST", PATH, headers, now=1100.0)
    assert (signed.node, signed.key, signed.secret) == (NODE, signing.key_id(SECRET), SECRET)
    assert signed.body_matches(body) and not signed.body_matches(b"bodz")
    lowered = {k.lower(): v for k, v in headers.items()}
    assert signing.check_headers(KEYS, "post", PATH, lowered, now=900.0).node == NODE


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.pop("X-Edge-Signature"),
        lambda h: h.pop("X-Edge-Node"),
        lambda h: h.pop("X-Edge-Key"),
        lambda h: h.pop("X-Edge-Nonce"),
        lambda h: h.pop("X-Edge-Digest"),
        lambda h: h.pop("X-Edge-Timestamp"),
        lambda h: h.update({"X-Edge-Node": "ale-1"}),
        lambda h: h.update({"X-Edge-Key": "0badc0de"}),
        lambda h: h.update({"X-Edge-Nonce": "f" * 32}),
        lambda h: h.update({"X-Edge-Digest": "0" * 64}),
        lambda h: h.update({"X-Edge-Signature": "0" * 64}),
        lambda h: h.update({"X-Edge-Signature": "é" * 64}),
        lambda h: h.update({"X-Edge-Timestamp": "1e3"}),
        lambda h: h.update({"X-Edge-Timestamp": "1001"}),
    ],
)
def test_every_refusal_is_the_same_unauthorized(change: Callable[[dict[str, str]], object]) -> None:
    headers = signing.sign(SECRET, NODE, "POST", PATH, b"body", 1000)
    change(headers)
    with pytest.raises(BadSignature) as info:
        signing.check_headers(KEYS, "POST", PATH, headers, now=1000.0)
    assert info.value.code == "unauthorized"


@pytest.mark.parametrize(("method", "path"), [("GET", PATH), ("POST", PATH + "?x=1")])
def test_tampering_is_unauthorized(method: str, path: str) -> None:
    headers = signing.sign(SECRET, NODE, "POST", PATH, b"body", 1000)
    with pytest.raises(BadSignature) as info:
        signing.check_headers(KEYS, method, path, headers, now=1000.0)
    assert info.value.code == "unauthorized"


@pytest.mark.parametrize("offset", [-301, 301, -10_000_000, 10_000_000])
def test_stale_only_for_a_genuine_request(offset: int) -> None:
    headers = signing.sign(SECRET, NODE, "POST", PATH, b"", 1_780_000_000 + offset)
    with pytest.raises(signing.StaleTimestamp) as info:
        signing.check_headers(KEYS, "POST", PATH, headers, now=1_780_000_000.0)
    assert info.value.code == "stale_timestamp" and info.value.signed.node == NODE
    assert signing.check_headers(KEYS, "POST", PATH, headers, 1_780_000_000.0 + offset, 1).node
    forged = signing.sign(b"x" * 32, NODE, "POST", PATH, b"", 1_780_000_000 + offset)
    forged["X-Edge-Key"] = signing.key_id(SECRET)
    with pytest.raises(BadSignature) as refused:
        signing.check_headers(KEYS, "POST", PATH, forged, now=1_780_000_000.0)
    assert refused.value.code == "unauthorized"  # no clock oracle for a stranger


def test_two_live_keys_each_verify_by_id() -> None:
    upcoming = b"n" * 64
    keys = {NODE: {signing.key_id(SECRET): SECRET, signing.key_id(upcoming): upcoming}}
    for secret in (SECRET, upcoming):
        headers = signing.sign(secret, NODE, "GET", PATH, b"", 1000)
        assert signing.check_headers(keys, "GET", PATH, headers, now=1000.0).secret == secret


def test_answers_are_bound_to_their_request() -> None:
    first = signing.sign(SECRET, NODE, "POST", PATH, b"a", 1000)["X-Edge-Signature"]
    second = signing.sign(SECRET, NODE, "POST", PATH, b"a", 1000)["X-Edge-Signature"]
    date, body = "Thu, 28 May 2026 20:26:41 GMT", b"reply"
    good = {"Date": date, answers.ANSWER_HEADER: answers.answer_mac(SECRET, first, 200, date, body)}
    answers.check_answer(SECRET, first, 200, good, body)
    for sig, status, headers, raw in (
        (second, 200, good, body),  # moved to another request
        (first, 409, good, body),  # another status
        (first, 200, {**good, "Date": "Thu, 28 May 2026 20:30:00 GMT"}, body),
        (first, 200, good, b"replz"),
        (first, 200, {"Date": date}, body),  # unsigned
        (first, 200, {**good, answers.ANSWER_HEADER: "é"}, body),
    ):
        with pytest.raises(BadAnswer):
            answers.check_answer(SECRET, sig, status, headers, raw)


def test_secret_file_rules(tmp_path: Path) -> None:
    path = tmp_path / "node.secret"
    path.write_text("  " + "k" * 32 + "\n", encoding="utf-8")
    path.chmod(0o600)
    assert signing.read_secret(path) == b"k" * 32
    path.chmod(0o640)
    with pytest.raises(SyncError, match=r"mode 640.*0600 or stricter"):
        signing.read_secret(path)
    path.chmod(0o400)
    assert signing.read_secret(path) == b"k" * 32
    path.chmod(0o600)
    path.write_text("short\n", encoding="utf-8")
    with pytest.raises(SyncError, match=r"5 bytes of key: at least 32"):
        signing.read_secret(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(SyncError):
        signing.read_secret(path)
    with pytest.raises(SyncError):
        signing.read_secret(tmp_path / "missing")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_secret_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.secret"
    signing.write_secret(path)
    os.chown(path, 54321, 54321)
    with pytest.raises(SyncError, match="owned by uid 54321"):
        signing.read_secret(path)


def test_write_secret_makes_a_valid_one_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "new.secret"
    key = signing.write_secret(path)
    assert path.stat().st_mode & 0o777 == 0o600
    secret = signing.read_secret(path)
    assert len(secret) == 64 and bytes.fromhex(secret.decode())
    assert key == hashlib.sha256(secret).hexdigest()[:8]
    with pytest.raises(FileExistsError):
        signing.write_secret(path)
    assert signing.write_secret(path, force=True) != key


def test_edge_secret_new_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    path = tmp_path / "dam-1.secret"
    assert main(["secret", "new", str(path)]) == 0
    first = signing.read_secret(path)
    assert signing.key_id(first) in capsys.readouterr().out
    assert main(["secret", "new", str(path)]) == 1  # never overwritten by accident
    assert "--force" in capsys.readouterr().err and signing.read_secret(path) == first
    assert main(["secret", "new", "--force", str(path)]) == 0
    assert signing.read_secret(path) != first


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from([answers.ANSWER_HEADER, "Date", "x-edge-answer", "X-EDGE-ANSWER"]),
        st.text(max_size=80),
        max_size=3,
    ),
    st.integers(100, 599),
    st.binary(max_size=64) | st.none(),
)
def test_arbitrary_answer_headers_raise_only_bad_answer(
    headers: dict[str, str], status: int, body: bytes | None
) -> None:
    try:
        answers.check_answer(SECRET, "ab" * 32, status, headers, body)
    except BadAnswer:
        return
    raise AssertionError("a made-up answer verified")
