"""migrate-to-postgres' pure parts: the URL rules (never a password in argv or a log line) and
what the verification reports when the two sides differ."""

from __future__ import annotations

import pytest

from sync.centre.migrate import Figures, check_url, safe_url
from sync.errors import ImportFailed


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://centre:hunter2@db.example.sy/edge_centre",
        "postgresql://centre@db.example.sy/edge_centre?password=hunter2",
        "mysql://centre@db.example.sy/edge_centre",
        "/var/lib/edge-centre/centre.db",
    ],
)
def test_a_url_with_a_password_or_of_another_kind_is_refused(url: str) -> None:
    with pytest.raises(ImportFailed) as caught:
        check_url(url)
    assert "hunter2" not in caught.value.detail


def test_a_plain_url_passes_and_its_log_form_never_shows_a_password() -> None:
    check_url("postgresql://centre@db.example.sy:5433/edge_centre?sslmode=verify-full")
    shown = safe_url("postgresql://centre:hunter2@db.example.sy:5433/edge_centre?sslmode=require")
    assert shown == "postgresql://centre@db.example.sy:5433/edge_centre"


def test_the_verification_names_every_difference() -> None:
    here = Figures(counts={"entries": 5, "bills": 40}, digests={"entries": "a", "bills": "b"},
                   heads={"dam-1": (5, "h5")})  # fmt: skip
    assert here.differences(here) == []
    there = Figures(counts={"entries": 4, "bills": 40}, digests={"entries": "x", "bills": "c"},
                    heads={"dam-1": (4, "h4"), "rda-1": (1, "h1")})  # fmt: skip
    assert here.differences(there) == [
        "entries: 5 rows here, 4 there",
        "bills: digests differ",
        "chain head of dam-1: (5, 'h5') here, (4, 'h4') there",
        "chain head of rda-1 only there",
    ]
