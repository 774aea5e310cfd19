"""The web page's filter fields and its near-duplicates list, in headless Chromium."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_helpers import invoke  # noqa: E402
from meta_fixtures import photo  # noqa: E402
from server_helpers import Server, running_server  # noqa: E402
from test_browser import browser, open_page, type_query, wait_for  # noqa: E402
from test_cli_dupes import burst  # noqa: E402


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, list[Path]]]:
    from xmr import paths

    monkeypatch.setenv("XMR_BACKEND_CLIP", "fake_encoders:ThumbClip")
    monkeypatch.setenv("XMR_BACKEND_CLAP", "fake_encoders:ThumbClap")
    root = tmp_path / "pics"
    photo(root / "canon1.jpg", 1, size=120, make="Canon", model="EOS R5", taken="2024:05:01 10:00:00")
    photo(root / "canon2.jpg", 2, size=120, make="Canon", model="EOS 5D", taken="2024:06:01 10:00:00")
    photo(root / "fuji.jpg", 3, size=120, make="FUJIFILM", model="X100V")
    for i in range(6):
        photo(root / "other" / f"p{i}.jpg", 10 + i, size=120)
    shots = burst(root / "burst")
    assert invoke("index", str(root), "--quiet", "--workers", "0").exit_code == 0
    with running_server(paths.index_dir()) as server:
        yield server, shots


def test_filter_fields_and_the_duplicates_list(served: tuple[Server, list[Path]]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, shots = served
    with browser() as driver:
        open_page(driver, server)
        assert len(type_query(driver, "anything")) > 3
        driver.find_element(By.ID, "camera").send_keys("canon")
        Select(driver.find_element(By.ID, "sort")).select_by_value("date")  # the change runs the search again
        wait_for(driver, "return document.querySelectorAll('#results .card').length === 2")
        names = driver.execute_script(
            "return [...document.querySelectorAll('#results .card')].map(c => c.dataset.path.split('/').pop())"
        )
        assert names == ["canon2.jpg", "canon1.jpg"]  # newest first
        driver.find_element(By.ID, "dupes-button").click()
        wait_for(driver, "return document.querySelector('#message').textContent.includes('groups of near duplicates')")
        groups = driver.execute_script(
            "return [...document.querySelectorAll('#results li.dupes')].map(g =>"
            " [...g.querySelectorAll('a')].map(a => a.title).sort())"
        )
        assert groups == [sorted(str(p) for p in shots)]
