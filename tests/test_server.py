"""`xmr serve`'s API against a real server process on 127.0.0.1 (fake encoders, fixture media)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf
from cli_helpers import invoke
from PIL import Image
from server_helpers import Server, index_media, running_server

from xmr import paths
from xmr.preprocess.audio import SAMPLE_RATE, load_audio
from xmr.query import parse_query
from xmr.search import SearchOptions, search
from xmr.server.app import ServerConfig, create_app
from xmr.server.files import FileLookup
from xmr.server.openapi import openapi_document

SCHEMA = json.loads(resources.files("xmr").joinpath("data/search.schema.json").read_text())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    base = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XMR_BACKEND_CLIP", "fake_encoders:FakeClip")
        mp.setenv("XMR_BACKEND_CLAP", "fake_encoders:FakeClap")
        mp.setenv("XMR_OFFLINE", "1")
        media = index_media(base / "media", base / "index")
        with running_server(base / "index") as server:
            yield server, media


@pytest.fixture
def server(served: tuple[Server, Path], fake_encoders: None) -> Server:
    return served[0]


@pytest.fixture
def media(served: tuple[Server, Path]) -> Path:
    return served[1]


def _ids(server: Server, q: str = "anything", **opts: object) -> dict[str, int]:
    doc = server.search({"q": q, "k": 100, **opts}).json()
    return {r["path"]: r["file_id"] for r in doc["results"]}


def test_search_document_follows_the_schema_and_names_files_by_id(server: Server, media: Path) -> None:
    res = server.search({"q": "harbour lights", "k": 50, "explain": True, "all_segments": True})
    assert res.status == 200, res.body
    doc = res.json()
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == "xmr-search/1" and doc["routes"] and doc["searched"]
    assert {r["modality"] for r in doc["results"]} == {"image", "audio", "text"}
    for r in doc["results"]:
        original = server.request("GET", f"/api/files/{r['file_id']}")
        assert original.status == 200
        assert original.body == Path(r["path"]).read_bytes()
        assert original.headers["x-content-type-options"] == "nosniff"


def test_the_api_answers_what_the_library_answers(server: Server, media: Path) -> None:
    """Same query language and options as the CLI: the server's ranking is the in-process one."""
    cases = [
        {"q": '"sea" + 2:"waves" - "city"', "k": 7},
        {"q": "bread", "type": ["text", "audio"], "k": 5},
        {"q": "light", "under": [str(media / "images")], "k": 20},
        {"q": "stars", "min_score": 0.5, "k": 30},
        {"parts": [{"kind": "text", "value": "a dog", "weight": 2}, {"value": "rain", "weight": -1}], "k": 6},
    ]
    for case in cases:
        doc = server.search(case).json()
        if "q" in case:
            parts = parse_query(str(case["q"]))
        else:
            from xmr.query import QueryPart

            parts = [QueryPart("text", p["value"], float(p["weight"])) for p in case["parts"]]
        options = SearchOptions(
            k=int(case["k"]),
            types=list(case.get("type", [])),
            under=list(case.get("under", [])),
            min_score=case.get("min_score"),
        )
        expected = search(parts, index_dir=server.index_dir, options=options).as_dict()
        got = [(r["path"], r["score"]) for r in doc["results"]]
        assert got == [(r["path"], r["score"]) for r in expected["results"]], case
        assert got, case
    typed = server.search({"q": "bread", "type": "image", "k": 50}).json()["results"]
    assert typed and {r["modality"] for r in typed} == {"image"}
    under = server.search({"q": "x", "under": str(media / "audio"), "k": 50}).json()["results"]
    assert under and all(r["path"].startswith(str(media / "audio") + "/") for r in under)


@pytest.mark.parametrize(
    ("field", "rel"),
    [
        ("file", "images/cmyk.jpg"),
        ("image", "images/orientation6.jpg"),
        ("file", "audio/surf_noise.ogg"),
        ("audio", "audio/long_35s.ogg"),
        ("text_file", "text/gardening_utf16.txt"),
    ],
)
def test_an_uploaded_file_finds_itself_first(server: Server, media: Path, field: str, rel: str) -> None:
    path = media / rel
    res = server.upload(field, path.name, path.read_bytes(), {"k": 3, "explain": True})
    assert res.status == 200, res.body
    doc = res.json()
    jsonschema.validate(doc, SCHEMA)
    assert doc["results"][0]["path"] == str(path)
    assert doc["query"][0]["value"] == path.name  # the client's name, not the temporary file
    assert "xmr-upload-" not in res.body.decode()


def test_more_like_this_queries_with_an_indexed_file(server: Server, media: Path) -> None:
    ids = _ids(server)
    for rel in ("images/gradient.jpg", "audio/chord_c_major.wav", "text/bread.md"):
        doc = server.search({"like": ids[str(media / rel)], "k": 2}).json()
        assert doc["results"][0]["path"] == str(media / rel), rel


def test_result_ids_are_looked_up_by_path_not_by_walking_every_indexed_file(served: tuple[Server, Path]) -> None:
    """At 100k files, SQLite walking files_status for each search's ids cost ~30 ms a request."""
    index_dir = served[0].index_dir
    lookup = FileLookup(index_dir)
    sqls: list[str] = []
    lookup._conn().set_trace_callback(sqls.append)
    indexed = sorted(_ids(served[0]))
    assert lookup.ids_for_paths(indexed[:3]) == {p: _ids(served[0])[p] for p in indexed[:3]}
    selects = [s for s in sqls if " IN (" in s]
    assert selects
    db = paths.catalogue_path(index_dir)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for sql in selects:
            plan = " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "files_status" not in plan and "SCAN files" not in plan, (sql, plan)


def test_thumbnails_are_upright_cached_and_private(server: Server, media: Path) -> None:
    ids = _ids(server, type="image")
    photo = media / "images" / "orientation6.jpg"
    with Image.open(photo) as stored:
        assert stored.width > stored.height  # stored landscape, EXIF says rotate to portrait
    first = server.request("GET", f"/api/files/{ids[str(photo)]}?kind=thumb")
    assert first.status == 200 and first.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(first.body)) as thumb:
        assert thumb.height > thumb.width and max(thumb.size) <= 320
    cache = server.index_dir / "thumbnails"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    files = list(cache.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    again = server.request("GET", f"/api/files/{ids[str(photo)]}?kind=thumb")
    assert again.body == first.body and len(list(cache.iterdir())) == len(files)
    audio_id = _ids(server, type="audio")[str(media / "audio" / "sweep.aiff")]
    assert server.request("GET", f"/api/files/{audio_id}?kind=thumb").status == 422


def test_every_indexed_image_format_has_a_thumbnail(server: Server, media: Path) -> None:
    """Thumbnails are decoded from the verified file descriptor: formats told apart by their
    name (camera RAW) and those behind plugins (HEIC, AVIF) must work from it too."""
    ids = _ids(server, type="image")
    assert {"bayer.dng", "photo.heic", "small.avif", "drawing.eps"} <= {Path(p).name for p in ids}
    for path, file_id in ids.items():
        reply = server.request("GET", f"/api/files/{file_id}?kind=thumb")
        assert reply.status == 200 and reply.headers["content-type"] == "image/jpeg", (path, reply.body[:200])
        with Image.open(io.BytesIO(reply.body)) as thumb:
            assert 0 < max(thumb.size) <= 320, path


def test_audio_is_served_as_the_decoded_signal_with_ranges(server: Server, media: Path) -> None:
    ids = _ids(server, type="audio")
    path = media / "audio" / "long_35s.ogg"
    full = server.request("GET", f"/api/files/{ids[str(path)]}?kind=audio")
    assert full.status == 200 and full.headers["content-type"] == "audio/wav"
    assert full.headers["accept-ranges"] == "bytes"
    samples, rate = sf.read(io.BytesIO(full.body), dtype="float32")
    expected = load_audio(path)
    # the same samples the windows were cut from, so start_s is the same instant in a player
    assert rate == SAMPLE_RATE and len(samples) == len(expected)
    assert np.max(np.abs(samples - expected)) < 1e-4
    n = len(full.body)
    for header, (lo, hi) in {
        "bytes=100-199": (100, 199),
        "bytes=1000-": (1000, n - 1),
        "bytes=-500": (n - 500, n - 1),
        f"bytes={n - 10}-{n + 1000}": (n - 10, n - 1),
    }.items():
        part = server.request("GET", f"/api/files/{ids[str(path)]}?kind=audio", headers={"Range": header})
        assert part.status == 206, header
        assert part.headers["content-range"] == f"bytes {lo}-{hi}/{n}"
        assert part.body == full.body[lo : hi + 1]
    bad = server.request("GET", f"/api/files/{ids[str(path)]}?kind=audio", headers={"Range": f"bytes={n}-"})
    assert bad.status == 416 and bad.headers["content-range"] == f"bytes */{n}"
    # ignored, not refused: an invalid range-spec, and numbers too long to be an offset
    for header in ("bytes=500-300", "bytes=" + "9" * 5000 + "-"):
        whole = server.request("GET", f"/api/files/{ids[str(path)]}?kind=audio", headers={"Range": header})
        assert whole.status == 200 and whole.body == full.body, header[:20]
    original = server.request("GET", f"/api/files/{ids[str(path)]}", headers={"Range": "bytes=0-3"})
    assert original.status == 206 and original.body == path.read_bytes()[:4] == b"OggS"


def test_errors_are_json_with_the_cli_exit_codes(server: Server, media: Path) -> None:
    cases = [
        (server.search({"q": "x", "type": "hologram"}), 400, 2),
        (server.search({"q": "x", "k": 0}), 400, 2),
        (server.search({"q": "x", "k": "--5"}), 400, 2),
        (server.search({}), 400, 2),
        (server.search({"q": "x", "min_score": "high"}), 400, 2),
        (server.upload("file", "t.jpg", (media / "broken" / "truncated.jpg").read_bytes()), 422, 6),
        (server.upload("audio", "g.png", (media / "images" / "gray.png").read_bytes()), 422, 6),
        (server.request("POST", "/api/search", body=b"{not json", headers={"Content-Type": "text/plain"}), 400, 2),
    ]
    for reply, status, code in cases:
        assert reply.status == status, reply.body
        body = reply.json()
        assert body["exit_code"] == code and body["error"] and "Traceback" not in body["error"]
    assert "t.jpg" in cases[5][0].json()["error"]
    from server_helpers import multipart

    photo = (media / "images" / "cmyk.jpg").read_bytes()
    for fields, files in [
        ({}, [("query", "q.json", b"{}"), ("image", "a.jpg", photo)]),  # the options sent as a file
        ({"query": '{"file_weights": ["heavy"]}'}, [("image", "a.jpg", photo)]),
        ({"query": '{"k": 3}'}, [("hologram", "a.jpg", photo)]),  # unknown upload field
    ]:
        body, ctype = multipart(fields, files)
        reply = server.request("POST", "/api/search", body=body, headers={"Content-Type": ctype})
        assert reply.status == 400 and reply.json()["exit_code"] == 2, reply.body
    weighted, ctype = multipart({"query": '{"q": "night", "file_weights": [2.5], "k": 2}'}, [("image", "a.jpg", photo)])
    doc = server.request("POST", "/api/search", body=weighted, headers={"Content-Type": ctype}).json()
    assert [(p["kind"], p["weight"]) for p in doc["query"]] == [("text", 1.0), ("image", 2.5)]


def test_status_and_the_openapi_description(server: Server) -> None:
    assert server.search({"q": "harbour lights", "k": 3}).status == 200  # so that there is warm state to report
    status = server.request("GET", "/api/status").json()
    assert status["exists"] and status["files"] > 0
    assert status["server"]["queries"] > 0 and status["server"]["stores"]
    served = server.request("GET", "/api/openapi.json").json()
    assert served == json.loads(json.dumps(openapi_document()))
    assert served["openapi"].startswith("3.")
    app = create_app(ServerConfig(server.index_dir, "t"), warm=None)  # type: ignore[arg-type]
    routes = {r.path.replace(":int", "") for r in app.app.routes if r.path.startswith("/api/")}
    assert set(served["paths"]) == routes
    jsonschema.Draft202012Validator.check_schema(served["components"]["schemas"]["SearchRequest"])


def test_models_are_unloaded_when_idle_and_reload_on_demand(tmp_path: Path, fake_encoders: None) -> None:
    index_media(tmp_path / "media")
    from xmr import paths

    with running_server(paths.index_dir(), "--idle-unload", "0.01") as server:  # 0.6 s
        first = server.search({"q": "bread", "k": 1}).json()["results"]
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = server.request("GET", "/api/status").json()["server"]
            if s["model_unloads"] >= 1:
                break
            time.sleep(0.1)
        assert s["model_unloads"] >= 1 and s["loaded_models"] == []
        assert server.search({"q": "bread", "k": 1}).json()["results"] == first


def test_the_address_file_is_private_and_removed_on_exit(tmp_path: Path, fake_encoders: None) -> None:
    index_media(tmp_path / "media")
    from xmr import paths
    from xmr.server.address import address_path

    with running_server(paths.index_dir()) as server:
        f = address_path(paths.index_dir())
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert json.loads(f.read_text())["token"] == server.token
        assert server.url.startswith("http://127.0.0.1:")
        # one server per index: a second one is refused and leaves the first one's file alone
        second = invoke("serve", "--port", "0")
        assert second.exit_code == 2 and "already running" in second.stderr and str(server.proc.pid) in second.stderr
        assert json.loads(f.read_text())["token"] == server.token
    assert server.proc.returncode is not None
    assert not f.exists()
    assert os.path.exists(paths.catalogue_path(paths.index_dir()))


def test_serve_without_an_index_says_so(tmp_path: Path) -> None:
    res = invoke("serve", "--port", "0", "--index", str(tmp_path / "none"))
    assert res.exit_code == 4 and "no index" in res.stderr


def test_the_page_and_its_assets_ship_in_the_package(server: Server) -> None:
    import re

    page = server.request("GET", "/", token=False)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.body.decode())
    assert refs and all(r.startswith("/static/") for r in refs), refs  # no CDN, nothing off the machine
    for ref in refs:
        asset = server.request("GET", ref, token=False)
        assert asset.status == 200 and asset.body
        assert resources.files("xmr").joinpath("web", ref.removeprefix("/static/")).read_bytes() == asset.body
    script = server.request("GET", "/static/app.js", token=False).body
    assert b"http:" not in script and b"https:" not in script  # the script fetches only from its own origin
