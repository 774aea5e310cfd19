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
