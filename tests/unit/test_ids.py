"""Entry ids: `{node}_{ULID}`, time-sortable, random, valid node ids only."""

from __future__ import annotations

import ast
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox import ids
from outbox.ids import ENTRY_ID, NODE_ID, new_entry_id, node_of

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
nodes = st.from_regex(NODE_ID, fullmatch=True)


def decode(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + CROCKFORD.index(char)
    return value


@given(
    node=nodes,
    now=st.floats(min_value=0, max_value=8_000_000_000, allow_nan=False),
    rand=st.binary(min_size=10, max_size=10),
)
def test_id_is_node_then_48_bit_millis_then_80_random_bits(node: str, now: float, rand: bytes):
    entry_id = new_entry_id(node, now=now, rand=rand)
    assert ENTRY_ID.match(entry_id)
    assert node_of(entry_id) == node
    ulid = entry_id.rsplit("_", 1)[1]
    assert decode(ulid[:10]) == int(now * 1000)
    assert decode(ulid[10:]) == int.from_bytes(rand, "big")


@given(
    node=nodes,
    times=st.lists(st.integers(min_value=0, max_value=2**48 - 1), min_size=2, max_size=20),
)
def test_ids_of_one_node_sort_by_time(node: str, times: list[int]):
    ids = [new_entry_id(node, now=millis / 1000) for millis in times]
    by_id = [times[ids.index(entry_id)] for entry_id in sorted(ids)]
    assert by_id == sorted(times)


def test_ids_made_in_the_same_millisecond_differ():
    ids = {new_entry_id("dam-1", now=1_780_000_000.0) for _ in range(10_000)}
    assert len(ids) == 10_000


@pytest.mark.parametrize("node", ["", "DAM-1", "dam_1", "-dam", "dam 1", "d" * 33, "دمشق"])
def test_bad_node_ids_are_refused(node: str):
    with pytest.raises(ValueError, match="bad node id"):
        new_entry_id(node)


def test_random_part_comes_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[bytes] = []
    real = os.urandom

    def urandom(n: int) -> bytes:
        drawn.append(real(n))
        return drawn[-1]

    monkeypatch.setattr(ids.os, "urandom", urandom)
    entry_id = new_entry_id("dam-1", now=1_780_000_000.0)
    assert len(drawn) == 1 and len(drawn[0]) == 10  # 80 bits, one draw per id
    assert decode(entry_id.rsplit("_", 1)[1][10:]) == int.from_bytes(drawn[0], "big")


def test_ids_module_does_not_use_the_random_module() -> None:
    # A seeded Mersenne Twister was predicted from 624 outputs' worth of one's own ids.
    tree = ast.parse(Path(ids.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert "random" not in imported, imported


def test_ids_of_one_millisecond_differ_in_their_random_bits_without_a_pattern() -> None:
    parts = [
        decode(new_entry_id("dam-1", now=1_780_000_000.0).rsplit("_", 1)[1][10:])
        for _ in range(2_000)
    ]
    assert len(set(parts)) == len(parts)
    # Not a counter or a fixed stride: consecutive differences are all different too.
    steps = {b - a for a, b in itertools.pairwise(parts)}
    assert len(steps) == len(parts) - 1
    # Every one of the 80 bits varies (a bit stuck at 0 or 1 would shrink the space).
    ones = [sum(p >> bit & 1 for p in parts) for bit in range(80)]
    assert all(800 < n < 1_200 for n in ones), ones
