"""xmr.encoders.string_table: the packed str -> position table the CLIP tokenizer reads in place."""

from __future__ import annotations

import marshal
import random

import pytest

from xmr.encoders import string_table
from xmr.encoders.string_table import PairTable, StringTable


def _keys(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzĠé日本</w>"
    keys: dict[str, None] = {}
    while len(keys) < n:
        keys["".join(rng.choices(alphabet, k=rng.randint(1, 8)))] = None
    return list(keys)


def test_every_key_maps_to_its_position_and_others_miss() -> None:
    keys = _keys(5000)
    table = StringTable(marshal.loads(marshal.dumps(string_table.pack(keys))))
    want = {k: i for i, k in enumerate(keys)}
    assert all(table[k] == i and table.get(k) == i and k in table for k, i in want.items())
    assert len(table) == len(keys) and list(table) == keys and dict(table.items()) == want
    misses = [k + "\u0101" for k in keys[:500]] + ["", "zzzzzzzzzz"]
    assert all(table.find(k) == -1 and k not in table and table.get(k, "none") == "none" for k in misses)
    with pytest.raises(KeyError):
        table["zzzzzzzzzz"]
    assert table.get(3) is None and 3 not in table  # not a string: absent, as in a dict of str keys


def test_colliding_slots_are_probed() -> None:
    import zlib

    keys = _keys(40, seed=1)
    packed = string_table.pack(keys)
    assert len(packed[4]) == 4 * 128
    assert len({zlib.crc32(k.encode()) & 127 for k in keys}) < len(keys)  # some keys share a home slot
    table = StringTable(packed)
    assert [table[k] for k in keys] == list(range(40))


def test_an_empty_table_and_damaged_packs() -> None:
    table = StringTable(string_table.pack([]))
    assert len(table) == 0 and table.find("a") == -1
    good = string_table.pack(["a", "b"])
    for bad in [good[:4], ("other", *good[1:]), (*good[:4], good[4][:-4]), [*good]]:
        assert not string_table.valid(bad)
        with pytest.raises(ValueError):
            StringTable(bad)  # type: ignore[arg-type]


def test_pairs_are_looked_up_as_tuples() -> None:
    merges = [("a", "b"), ("ab", "c</w>"), ("Ġ", "t")]
    pairs = PairTable(StringTable(string_table.pack([f"{a} {b}" for a, b in merges])))
    assert [pairs[m] for m in merges] == [0, 1, 2] and list(pairs) == merges
    assert pairs.get(("b", "a"), 99) == 99 and ("b", "a") not in pairs
    assert pairs.get(("a b", ""), 99) == 99  # a part holding the separator never matches
    assert pairs.get(("a",), 99) == 99
    with pytest.raises(KeyError):
        pairs[("x", "y")]
