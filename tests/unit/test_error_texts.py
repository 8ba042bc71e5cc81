"""Every code an operator can be shown has an English and an Arabic text (and the link keeps
the code of its last error, until the centre answers again).

The node's problem codes are edge.errors' classes; the centre's verdict reasons, refusal codes
and the link's failure codes are found in the sync package's source (the literals it returns
and raises), so a new reason without a text in sync.reasons fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import sync
from edge.web.dashboard import CODES_JS, problem_texts
from sync import fines
from sync.errors import CentreRefused
from sync.link import Link
from sync.reasons import REASONS

ARABIC = re.compile(r"[\u0621-\u064A]")
SYNC = Path(sync.__file__).parent
# The places a code is written in the sync package: a verdict's reason, a centre refusal, an
# error class's code (attribute or keyword), the centre's error frames and its HTTP codes.
EMITTED = (
    re.compile(r'(?:return\s+|\()"rejected",\s*"([a-z_]+)"'),
    re.compile(r'Refused\(\s*\d+,\s*"([a-z_]+)"'),
    re.compile(r'\bcode(?::\s*str)?\s*=\s*"([a-z_]+)"'),
    re.compile(r'error_response\(\s*\d+,\s*"([a-z_]+)"'),
    re.compile(r'\b\d{3}:\s*"([a-z_]+)"'),
    re.compile(r'_list\([^)]*,\s*"([a-z_]+)"\)'),
    re.compile(r'return\s+"([a-z_]+)",\s*text'),  # decode_error's code for a foreign answer
)


def emitted_by_sync() -> dict[str, str]:
    """code -> the file that emits it, for every code literal in sync/**/*.py."""
    found: dict[str, str] = {}
    for path in sorted(SYNC.rglob("*.py")):
        if path.name == "reasons.py":
            continue
        source = path.read_text(encoding="utf-8")
        for pattern in EMITTED:
            for code in pattern.findall(source):
                found.setdefault(code, str(path.relative_to(SYNC)))
    return found


def test_every_problem_code_has_english_and_arabic_titles() -> None:
    texts = problem_texts()
    assert len(texts) > 40  # the walk found edge.errors' classes, not just the root
    assert "http_error" not in texts  # aiohttp's reason per instance; its code is in REASONS
    for code, (en, ar) in texts.items():
        assert en.strip() and en.isascii(), f"{code}: English title {en!r}"
        assert ARABIC.search(ar), f"{code}: no Arabic title ({ar!r})"


def test_the_page_gets_the_whole_catalogue() -> None:
    served = json.loads(CODES_JS.decode().removeprefix("window.EDGE_CODES = ").rstrip(";\n"))
    assert set(served["problem"]) == set(problem_texts())
    assert set(served["centre"]) == set(REASONS)
    assert served["centre"]["chain_broken"]["ar"] == REASONS["chain_broken"][1]


def test_every_code_the_sync_package_emits_has_both_texts() -> None:
    emitted = emitted_by_sync()
    # The scan sees the kinds of code there are, not only a few.
    for known in ("unknown_bill", "credit_over_cap", "chain_broken", "chain_gap",
                  "receipt_code_taken", "busy", "tls_untrusted", "centre_unavailable",
                  "stale_timestamp", "batch_too_large", "unknown", "internal_error"):  # fmt: skip
        assert known in emitted, known
    missing = {code: where for code, where in emitted.items() if code not in REASONS}
    assert missing == {}, f"codes without a text in sync/reasons.py: {missing}"


def documented_reasons() -> set[str]:
    """The reasons sync/PROTOCOL.md's "Rejection reasons" table names (its first column)."""
    text = (SYNC / "PROTOCOL.md").read_text(encoding="utf-8")
    after = text.split("\nRejection reasons", 1)[1]
    table = re.search(r"^\| Reason \|.*?(?=\n\n)", after, re.S | re.M)
    assert table is not None, "PROTOCOL.md has no rejection reasons table"
    rows = [line.split("|")[1] for line in table.group(0).splitlines() if line.startswith("| `")]
    return {code for row in rows for code in re.findall(r"`([a-z_]+)`", row)}


def test_every_documented_reason_and_the_fine_mismatch_have_both_texts() -> None:
    documented = documented_reasons()
    assert {"unknown_bill", "credit_over_cap", "reversal_failed"} <= documented
    missing = sorted((documented | {fines.MISMATCH}) - set(REASONS))
    assert missing == [], f"reasons without a text in sync/reasons.py: {missing}"


def test_every_catalogue_entry_has_english_and_arabic() -> None:
    for code, (en, ar) in REASONS.items():
        assert re.fullmatch(r"[a-z_]+", code), code
        assert en.strip() and en.isascii() and not ARABIC.search(en), f"{code}: {en!r}"
        assert ARABIC.search(ar), f"{code}: no Arabic ({ar!r})"
        # Bidi: no explicit direction marks stored; the page isolates Latin runs itself.
        assert not re.search("[\u200e\u200f\u202a-\u202e\u2066-\u2069]", ar + en), code


def test_the_scan_fails_for_a_reason_without_text(tmp_path: Path) -> None:
    """The patterns do catch a reason written the way the centre writes them."""
    source = 'def check():\n    return "rejected", "brand_new_reason", None\n'
    found = {c for p in EMITTED for c in p.findall(source)}
    assert found == {"brand_new_reason"} and "brand_new_reason" not in REASONS


def test_the_links_last_error_keeps_its_code_and_clears_when_the_centre_answers() -> None:
    now = [1000.0]
    link = Link(clock=lambda: now[0])
    refused = CentreRefused(409, "chain_broken", "entry x has seq 1, which the centre holds")
    link.failed(str(refused), code=refused.code, config_fault=True)
    shown = link.as_dict()
    assert (shown["last_error_code"], shown["last_error"], shown["last_error_at"]) == (
        "chain_broken", "409 chain_broken: entry x has seq 1, which the centre holds", 1000.0,
    )  # fmt: skip
    assert shown["last_error_code"] in REASONS
    now[0] = 1060.0
    link.ok()
    shown = link.as_dict()
    assert (shown["state"], shown["last_ok_at"]) == ("up", 1060.0)
    assert (shown["last_error"], shown["last_error_code"], shown["last_error_at"]) == (None,) * 3
