from __future__ import annotations

import platform
import sys

import pytest

from xmr import heap


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_TRIM", None)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_trims_with_malloc_trim() -> None:
    heap.release_free_heap()
    assert callable(heap._TRIM)
    assert heap._TRIM.__name__ == "malloc_trim"


def test_other_systems_do_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    heap.release_free_heap()
    assert heap._TRIM is False
    heap.release_free_heap()  # resolved once, still nothing to call
    assert heap._TRIM is False


def _kernel() -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    except ValueError:
        return (0,)


@pytest.mark.skipif(not sys.platform.startswith("linux") or _kernel() < (5, 4), reason="MADV_PAGEOUT: Linux 5.4+")
def test_mapped_file_pages_are_released_and_read_back(tmp_path) -> None:
    import mmap

    data = bytes(range(256)) * 4096 * 4  # 4 MiB
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ) as m:
        assert m[:] == data  # every page read: resident
        assert heap.release_mapped_file(str(path.resolve())) == len(data)
        assert m[:] == data  # read back from the file, unchanged
    assert heap.release_mapped_file(str(tmp_path / "not-mapped.bin")) == 0
