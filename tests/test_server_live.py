"""`xmr serve` while the index changes, and under concurrent load (127.0.0.1 only, bounded)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_helpers import committed_files, invoke
from server_helpers import FIXTURES, Server, index_media, running_server
from test_crash import make_big_tree

from xmr import paths

pytestmark = pytest.mark.usefixtures("fake_encoders")


def _paths(server: Server, q: str, **opts: object) -> list[str]:
    reply = server.search({"q": q, "k": 1000, **opts})
    assert reply.status == 200, reply.body
    return [r["path"] for r in reply.json()["results"]]


def test_the_next_search_sees_files_indexed_while_the_server_runs(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    shutil.copytree(FIXTURES / "images", root / "images")
    assert invoke("index", str(root), "--quiet", "--workers", "0").exit_code == 0
    with running_server(paths.index_dir()) as server:
        before = _paths(server, "bread")
        assert before and all("/images/" in p for p in before)
        status = server.request("GET", "/api/status").json()["server"]
        # more files arrive and another process indexes them; the server is not restarted
        shutil.copytree(FIXTURES / "text", root / "text")
        shutil.copytree(FIXTURES / "audio", root / "audio")
        assert invoke("index", str(root), "--quiet", "--workers", "0").exit_code == 0
        after = _paths(server, "bread")
        new = {str(p) for p in (root / "text").iterdir()} | {str(p) for p in (root / "audio").iterdir()}
        assert new & set(after), "the new files are found"
        assert set(before) <= set(after)
        doc = server.upload("file", "bread.md", (root / "text" / "bread.md").read_bytes(), {"k": 1}).json()
        assert doc["results"][0]["path"] == str(root / "text" / "bread.md")
        assert server.request("GET", f"/api/files/{doc['results'][0]['file_id']}").status == 200
        later = server.request("GET", "/api/status").json()["server"]
        assert later["refreshes"] > status["refreshes"]
        # removal is seen too
        assert invoke("remove", str(root / "audio"), "--quiet").exit_code == 0
        assert not any("/audio/" in p for p in _paths(server, "bread"))


def test_an_edited_and_a_new_file_are_both_seen_by_the_next_search(tmp_path: Path) -> None:
    """Vectors added and deleted in one run: the server's stores must re-derive from the new generation."""
    root = tmp_path / "notes"
    shutil.copytree(FIXTURES / "text", root)
    assert invoke("index", str(root), "--quiet", "--workers", "0").exit_code == 0
    with running_server(paths.index_dir()) as server:
        before = set(_paths(server, "bread", type="text"))
        assert before == {str(p) for p in root.iterdir() if str(p) in before} and len(before) >= 2
        edited = sorted(before)[0]
        Path(edited).write_text("Quartz zebras graze beside the lighthouse at dawn.\n", encoding="utf-8")
        (root / "new-note.md").write_text("A brand new note about copper kettles.\n", encoding="utf-8")
        assert invoke("index", str(root), "--quiet", "--workers", "0").exit_code == 0
        after = set(_paths(server, "bread", type="text"))
        assert after == before | {str(root / "new-note.md")}
        doc = server.upload("file", "n.md", (root / "new-note.md").read_bytes(), {"k": 1}).json()
        assert doc["results"][0]["path"] == str(root / "new-note.md")
        doc = server.upload("file", "e.md", Path(edited).read_bytes(), {"k": 1}).json()
        assert doc["results"][0]["path"] == edited


def test_searches_during_an_index_run_see_only_committed_batches(tmp_path: Path, xmr_cmd: list[str]) -> None:
    root = tmp_path / "growing"
    expected = make_big_tree(root / "tree", 900)
    shutil.copytree(FIXTURES / "images", root / "images")
    assert invoke("index", str(root / "images"), "--quiet", "--workers", "0").exit_code == 0
    db = paths.catalogue_path(paths.index_dir())
    with running_server(paths.index_dir()) as server:
        env = dict(os.environ, FAKE_ENCODER_DELAY="0.004")
        indexer = subprocess.Popen(
            xmr_cmd + ["index", str(root / "tree"), "--quiet", "--workers", "0"], env=env, stderr=subprocess.PIPE
        )
        rounds = 0
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and indexer.poll() is None and not committed_files(db) & expected:
                time.sleep(0.02)  # until the first text batch is committed (before it: "nothing of type text")
            while indexer.poll() is None and time.monotonic() < deadline:
                committed = committed_files(db)
                found = set(_paths(server, "alpha bravo", type="text"))
                # everything committed before the search is there; nothing that was not committed after it
                assert committed & expected <= found <= committed_files(db)
                rounds += 1
        finally:
            indexer.wait(timeout=300)
        assert indexer.returncode == 0, indexer.stderr.read().decode()
        assert rounds >= 2, "the searches overlapped the index run"
        assert set(_paths(server, "alpha bravo", type="text")) == expected


def test_a_thousand_mixed_requests_from_eight_clients(tmp_path: Path) -> None:
    media = index_media(tmp_path / "media")
    with running_server(paths.index_dir()) as server:
        doc = server.search({"q": "x", "k": 100}).json()
        images = [r["file_id"] for r in doc["results"] if r["modality"] == "image"]
        audio = [r["file_id"] for r in doc["results"] if r["modality"] == "audio"]
        everything = [r["file_id"] for r in doc["results"]]
        sizes = {r["file_id"]: Path(r["path"]).stat().st_size for r in doc["results"]}
        assert images and audio
        upload = (media / "images" / "cmyk.jpg").read_bytes()
        words = ["sea", "bread", "stars", "harbour", "dog", "rain", "garden", "light"]
        errors: list[str] = []
        counts = {"search": 0, "thumb": 0, "range": 0, "audio": 0, "upload": 0, "status": 0}
        lock = threading.Lock()

        def one(i: int) -> None:
            rng = random.Random(i)
            kind = rng.choice(["search"] * 4 + ["thumb"] * 2 + ["range"] * 2 + ["audio", "upload", "status"])
            try:
                if kind == "search":
                    q = " + ".join(rng.sample(words, rng.randint(1, 3)))
                    r = server.search({"q": q, "k": rng.randint(1, 30), "explain": rng.random() < 0.3})
                    ok = r.status == 200 and r.json()["results"]
                elif kind == "thumb":
                    r = server.request("GET", f"/api/files/{rng.choice(images)}?kind=thumb")
                    ok = r.status == 200 and r.body[:2] == b"\xff\xd8"
                elif kind == "range":
                    fid = rng.choice(everything)
                    lo = rng.randrange(sizes[fid])
                    r = server.request("GET", f"/api/files/{fid}", headers={"Range": f"bytes={lo}-{lo + 99}"})
                    ok = r.status == 206 and len(r.body) == min(100, sizes[fid] - lo)
                elif kind == "audio":
                    head = {"Range": "bytes=0-43"}
                    r = server.request("GET", f"/api/files/{rng.choice(audio)}?kind=audio", headers=head)
                    ok = r.status == 206 and r.body[:4] == b"RIFF"
                elif kind == "upload":
                    r = server.upload("image", "q.jpg", upload, {"k": 1})
                    ok = r.status == 200 and r.json()["results"][0]["path"].endswith("cmyk.jpg")
                else:
                    r = server.request("GET", "/api/status")
                    ok = r.status == 200
                if not ok:
                    with lock:
                        errors.append(f"{kind}: {r.status} {r.body[:200]!r}")
            except Exception as exc:  # any failure counts as an error
                with lock:
                    errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            with lock:
                counts[kind] += 1

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(1000), timeout=600))
        assert sum(counts.values()) == 1000 and all(counts.values()), counts
        assert errors == []
        assert server.proc.poll() is None
        assert server.request("GET", "/api/status").json()["server"]["queries"] >= counts["search"]
