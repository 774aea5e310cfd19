"""A read-only string -> position table that loads without building a dict.

A tokenizer's vocabulary and merge ranks are 50k-entry dicts; rebuilding them
from a marshal copy costs 40-60 ms of every cold query (one Python object per
key and value, one insert each), while a query looks up a few dozen keys. Here
the keys are one UTF-8 blob with an offsets array, plus an open-addressing
hash table of positions (CRC-32, linear probing): three ``bytes`` that marshal
loads as plain copies, and a lookup that hashes the key, probes and compares
bytes. Values are the keys' positions in the list it was built from.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

FORMAT = "string-table-1"


def pack(keys: Sequence[str]) -> tuple[Any, ...]:
    """The marshal-able form of ``keys`` (unique): (FORMAT, byte order, blob, offsets, slots)."""
    import numpy as np

    encoded = [k.encode("utf-8") for k in keys]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(kb) for kb in encoded], out=offsets[1:])
    size = 1 << max(4, (2 * len(encoded)).bit_length())  # load factor <= 1/2: short probes
    slot = np.array([zlib.crc32(kb) for kb in encoded], np.int64) & (size - 1)
    slots = np.full(size, -1, np.int32)
    # linear probing, all keys a round: each key takes its slot when that is free and no earlier
    # key wants it, else tries the next one; a key never passes an empty slot, as find() expects
    pending = np.arange(len(encoded))
    while len(pending):
        free = pending[slots[slot[pending]] < 0]
        taken, first = np.unique(slot[free], return_index=True)
        slots[taken] = free[first]
        placed = np.zeros(len(encoded), bool)
        placed[free[first]] = True
        pending = pending[~placed[pending]]
        slot[pending] = (slot[pending] + 1) & (size - 1)
    return (FORMAT, sys.byteorder, b"".join(encoded), offsets.astype("=i4").tobytes(), slots.astype("=i4").tobytes())


def valid(packed: Any) -> bool:
    return (
        isinstance(packed, tuple)
        and len(packed) == 5
        and packed[0] == FORMAT
        and packed[1] == sys.byteorder
        and all(isinstance(x, bytes) for x in packed[2:])
        and len(packed[3]) % 4 == 0
        and len(packed[4]) >= 64
        and len(packed[4]) & (len(packed[4]) - 1) == 0
    )


class StringTable(Mapping[str, int]):
    """``{key: position}`` over a ``pack``-ed table, read in place."""

    def __init__(self, packed: tuple[Any, ...]) -> None:
        if not valid(packed):
            raise ValueError("not a packed string table")
        self._blob: bytes = packed[2]
        self._offsets = memoryview(packed[3]).cast("i")
        self._slots = memoryview(packed[4]).cast("i")
        self._mask = len(self._slots) - 1

    def find(self, key: str) -> int:
        """The position of ``key``, or -1."""
        kb = key.encode("utf-8")
        slots, offsets, blob, mask = self._slots, self._offsets, self._blob, self._mask
        slot = zlib.crc32(kb) & mask
        while True:
            i = slots[slot]
            if i < 0:
                return -1
            if blob[offsets[i] : offsets[i + 1]] == kb:
                return i
            slot = (slot + 1) & mask

    def __getitem__(self, key: str) -> int:
        i = self.find(key) if isinstance(key, str) else -1
        if i < 0:
            raise KeyError(key)
        return i

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.find(key) >= 0

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        i = self.find(key) if isinstance(key, str) else -1
        return default if i < 0 else i

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __iter__(self) -> Iterator[str]:
        blob, offsets = self._blob, self._offsets
        for i in range(len(self)):
            yield blob[offsets[i] : offsets[i + 1]].decode("utf-8")


class PairTable(Mapping[tuple[str, str], int]):
    """``{(first, second): rank}`` over a ``StringTable`` of ``"first second"`` keys (BPE merges:
    neither part holds a space)."""

    def __init__(self, table: StringTable) -> None:
        self.table = table

    def __getitem__(self, pair: tuple[str, str]) -> int:
        i = self.get(pair, -1)
        if i < 0:
            raise KeyError(pair)
        return i

    def __contains__(self, pair: object) -> bool:
        return self.get(pair, -1) >= 0  # type: ignore[arg-type]

    def get(self, pair: tuple[str, str], default: Any = None) -> Any:  # type: ignore[override]
        if not (isinstance(pair, tuple) and len(pair) == 2) or " " in pair[0] or " " in pair[1]:
            return default
        i = self.table.find(f"{pair[0]} {pair[1]}")
        return default if i < 0 else i

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for key in self.table:
            first, second = key.split(" ")
            yield first, second
