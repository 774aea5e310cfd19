"""The web page in a real browser: headless Chromium from the Debian packages, driven by Selenium.

The browser and its driver are the system's (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; ``.ci/run`` installs them); Selenium is pointed at
them, so it never tries to download one. Run as a script to remake the README
screenshot: ``python tests/test_browser.py docs/serve.png``.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_helpers import Server, index_media, running_server  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 30
ALL_THUMBS_LOADED = "return [...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)"


@contextmanager
def browser(width: int = 1280, height: int = 900) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, for get_log
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, script: str, *args: Any, timeout: float = WAIT_S) -> Any:
    """Poll a JavaScript expression (``return ...``) until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.05)


def open_page(driver: Any, server: Server) -> None:
    driver.get(f"{server.url}/#token={server.token}")
    wait_for(driver, "return document.body.dataset.ready === '1'")
    assert "token" not in driver.current_url  # dropped from the address bar once kept in sessionStorage


def type_query(driver: Any, text: str) -> list[dict[str, Any]]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text, Keys.ENTER)
    return results(driver, text)


def results(driver: Any, label: str) -> list[dict[str, Any]]:
    wait_for(driver, "return document.querySelector('#message').textContent.includes(arguments[0])", label)
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .card')].map(c => ({path: c.dataset.path,"
        " modality: c.dataset.modality, thumb: c.querySelector('img.thumb') && c.querySelector('img.thumb').src,"
        " loaded: !!(c.querySelector('img.thumb') && c.querySelector('img.thumb').complete"
        " && c.querySelector('img.thumb').naturalWidth > 0)}))"
    )


def drop_file(driver: Any, path: Path) -> None:
    """A real drop event carrying the file's bytes, as dragging it from a file manager does."""
    driver.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));"
        "const dt = new DataTransfer(); dt.items.add(new File([bytes], arguments[1]));"
        "window.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, bubbles: true}));"
        "window.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));",
        base64.b64encode(path.read_bytes()).decode(),
        path.name,
    )


def audio_query(server: Server) -> tuple[str, str, float]:
    """A text query whose results hold an audio file matched at a window after 0 s (found via the API)."""
    for word in ("waves", "harbour", "bread", "stars", "rain", "sea", "light", "garden", "dog", "music", "bells"):
        doc = server.search({"q": word, "k": 24}).json()
        for r in doc["results"]:
            if r["modality"] == "audio" and r.get("start_s", 0) > 0:
                return word, r["path"], float(r["start_s"])
    raise AssertionError("no query gave an audio match after the first window")


@pytest.fixture
def served(tmp_path: Path, fake_encoders: None) -> Iterator[tuple[Server, Path]]:
    from xmr import paths

    media = index_media(tmp_path / "media")
    with running_server(paths.index_dir()) as server:
        yield server, media


def test_the_page_in_headless_chromium(served: tuple[Server, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    server, media = served
    with browser() as driver:
        open_page(driver, server)
        # keyboard: "/" focuses the search box
        driver.find_element(By.TAG_NAME, "body").send_keys("/")
        assert driver.execute_script("return document.activeElement.id") == "q"

        # a typed query shows result cards, images with their thumbnails
        cards = type_query(driver, "harbour lights")
        assert len(cards) == 24
        images = [c for c in cards if c["modality"] == "image"]
        assert images and all("kind=thumb" in c["thumb"] and "&sig=" in c["thumb"] for c in images)
        wait_for(driver, ALL_THUMBS_LOADED)
        # signed URLs, no cookie: nothing a page on another local port could be sent
        assert driver.get_cookies() == []
        # no failed request (the favicon included) and no script error in the console
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        assert {c["modality"] for c in cards} == {"image", "audio", "text"}
        # every snippet that holds a query word shows it highlighted, and only query words are marked
        marks = driver.execute_script(
            "return [...document.querySelectorAll('.snippet')].filter(s => /harbour|lights/i.test(s.textContent))"
            ".map(s => [...s.querySelectorAll('mark')].map(m => m.textContent.toLowerCase()))"
        )
        assert marks and all(m and set(m) <= {"harbour", "lights"} for m in marks), marks
        driver.save_screenshot(str(tmp_path / "results.png"))

        # an image dropped on the page is the query, and finds itself first
        photo = media / "images" / "orientation6.jpg"
        drop_file(driver, photo)
        dropped = results(driver, photo.name)
        assert dropped[0]["path"] == str(photo)
        wait_for(driver, "return document.querySelector('#results .card img.thumb').naturalWidth > 0")
        # the EXIF-rotated thumbnail is portrait, like the photo as seen
        w, h = driver.execute_script(
            "const i = document.querySelector('#results .card img.thumb'); return [i.naturalWidth, i.naturalHeight]"
        )
        assert h > w

        # "more like this" on a result runs a query with that file
        driver.execute_script("document.querySelectorAll('#results .card .more')[1].click()")
        second = dropped[1]["path"]
        more = results(driver, "more like " + Path(second).name)
        assert more[0]["path"] == second

        # the file picker works too (audio query)
        picker = driver.find_element(By.ID, "file")
        sound = media / "audio" / "surf_noise.ogg"
        picker.send_keys(str(sound))
        assert results(driver, sound.name)[0]["path"] == str(sound)

        # an audio result plays from its matching window
        word, path, start_s = audio_query(server)
        cards = type_query(driver, word)
        index = [c["path"] for c in cards].index(path)
        wait_for(
            driver,
            "const a = document.querySelectorAll('#results .card')[arguments[0]].querySelector('audio');"
            "return a.readyState >= 1;",
            index,
        )
        driver.execute_script(
            "document.querySelectorAll('#results .card')[arguments[0]].querySelector('audio').play()", index
        )
        playing = wait_for(
            driver,
            "const a = document.querySelectorAll('#results .card')[arguments[0]].querySelector('audio');"
            "return !a.paused && a.currentTime > 0 ? [a.currentTime, +a.dataset.start] : null;",
            index,
        )
        current, shown_start = playing
        assert shown_start == pytest.approx(start_s)
        assert start_s - 0.05 <= current < start_s + 2.0, (current, start_s)

        # explain panels: route, model, raw cosine; the explain box opens them all
        driver.find_element(By.ID, "explain").click()
        assert driver.execute_script("return [...document.querySelectorAll('details.explain')].every(d => d.open)")
        text = driver.find_element(By.CSS_SELECTOR, "#results .card details.explain").text
        assert "route" in text and "fake-" in text and "raw cosine" in text
        driver.find_element(By.ID, "explain").click()

        # type filter
        driver.find_element(By.CSS_SELECTOR, 'input[name="type"][value="image"]').click()
        driver.find_element(By.CSS_SELECTOR, 'input[name="type"][value="text"]').click()
        filtered = results(driver, word)
        wait_for(
            driver, "return [...document.querySelectorAll('#results .card')].every(c => c.dataset.modality === 'audio')"
        )
        assert filtered

        # phone width: no sideways scrolling
        driver.set_window_size(390, 844)
        type_query(driver, "harbour lights")
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        driver.save_screenshot(str(tmp_path / "phone.png"))
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_the_page_needs_the_launch_token(served: tuple[Server, Path]) -> None:
    server, _ = served
    with browser() as driver:
        driver.get(f"{server.url}/")
        wait_for(driver, "return document.querySelector('#message').textContent.includes('token')")
        driver.get("about:blank")  # a fragment change alone would not reload the page
        driver.get(f"{server.url}/#token=wrong")
        wait_for(driver, "return document.querySelector('#message').textContent.includes('refused')")
        status = driver.execute_script(
            "return fetch('/api/status').then(r => r.status)"  # no header (and no cookie is accepted)
        )
        assert status == 401


def make_screenshot(out: Path) -> None:
    """The README screenshot: the fixture media, indexed with the test encoders, after a text query."""
    import tempfile

    from cli_helpers import invoke  # noqa: F401  (index_media uses it)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            XMR_HOME=os.path.join(tmp, "index"),
            XMR_BACKEND_CLIP="fake_encoders:FakeClip",
            XMR_BACKEND_CLAP="fake_encoders:FakeClap",
            XMR_OFFLINE="1",
        )
        here = Path(__file__).resolve().parent
        os.environ["PYTHONPATH"] = os.pathsep.join([str(here.parent), str(here)])
        media = index_media(Path(tmp) / "media")
        from xmr import paths

        with running_server(paths.index_dir()) as server, browser(1280, 860) as driver:
            open_page(driver, server)
            type_query(driver, "harbour lights at dusk")
            wait_for(driver, ALL_THUMBS_LOADED)
            wait_for(driver, "return [...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
            driver.execute_script("const d = document.querySelectorAll('#results details.explain')[2]; d.open = true;")
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(out))
        del media


if __name__ == "__main__":
    make_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/serve.png").resolve())


def test_a_video_result_shows_its_frame_and_plays_from_the_hit(tmp_path: Path, fake_encoders: None) -> None:
    """VP9 + Opus in WebM: what Debian's Chromium plays (its H.264 support is not a given)."""
    from urllib.parse import parse_qs, urlsplit

    import av
    from cli_helpers import invoke
    from PIL import Image
    from video_helpers import Spec, make_video

    from xmr import paths

    lib = tmp_path / "lib"
    lib.mkdir()
    spec = Spec(codec="libvpx-vp9", audio_codec="libopus", duration_s=20.0, scene=(6.0, 10.0), scene_rgb=(40, 190, 60))
    video = make_video(lib / "walk.webm", spec)
    make_video(lib / "other.webm", Spec(codec="libvpx-vp9", audio_codec="libopus", scene_rgb=(200, 60, 200)))
    assert invoke("index", str(lib), "--quiet", "--workers", "0").exit_code == 0
    # a still of the scene: a decoded frame (the colour after YUV rounding, not the one written)
    still = tmp_path / "still.png"
    with av.open(str(video)) as c:
        frame = next(f for f in c.decode(video=0) if f.time >= 8.0)
        Image.fromarray(frame.to_ndarray(format="rgb24")).save(still)
    with running_server(paths.index_dir()) as server, browser() as driver:
        open_page(driver, server)
        drop_file(driver, still)
        cards = results(driver, still.name)
        assert cards[0]["path"] == str(video) and cards[0]["modality"] == "video", cards
        wait_for(driver, "return document.querySelector('#results .card img.thumb').naturalWidth > 0")
        src, shown_start = driver.execute_script(
            "const c = document.querySelector('#results .card');"
            "return [c.querySelector('img.thumb').src, +c.querySelector('video').dataset.start];"
        )
        assert "kind=thumb" in src and float(parse_qs(urlsplit(src).query)["at"][0]) == shown_start
        assert spec.scene[0] <= shown_start < spec.scene[1]
        # the thumbnail is the matching frame: the scene's colour
        colour = driver.execute_script(
            "const i = document.querySelector('#results .card img.thumb'); const c = document.createElement('canvas');"
            "c.width = i.naturalWidth; c.height = i.naturalHeight; const g = c.getContext('2d'); g.drawImage(i, 0, 0);"
            "return [...g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data].slice(0, 3);"
        )
        assert max(abs(a - b) for a, b in zip(colour, spec.scene_rgb, strict=True)) < 16, colour
        # the player starts at the hit: currentTime is the hit's start once the metadata is in
        current = wait_for(
            driver,
            "const v = document.querySelector('#results .card video');"
            "return v.readyState >= 1 && v.currentTime > 0 ? v.currentTime : null;",
        )
        assert current == pytest.approx(shown_start, abs=0.05)
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        # "more like this" from the video: the video itself comes first
        driver.execute_script("document.querySelector('#results .card .more').click()")
        assert results(driver, "more like walk.webm")[0]["path"] == str(video)
