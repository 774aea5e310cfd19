"""The media-kind seam (xmr.media): a kind defined here, in the test only, is indexed, found and
served without any change to the indexer, the search or the server.

The "sketch" kind reads a tiny made-up format (``.xyz``: a ``XYZSKETCH`` line, then a colour
and a size) and decodes it into an image for the clip space.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from cli_helpers import invoke
from server_helpers import multipart

from xmr import media, paths
from xmr.catalogue import Catalogue
from xmr.errors import UsageError
from xmr.query import QueryPart
from xmr.search import SearchOptions, search

pytestmark = pytest.mark.usefixtures("fake_encoders")
MAGIC = b"XYZSKETCH\n"
SCHEMA = json.loads(resources.files("xmr").joinpath("data/search.schema.json").read_text())


def _sketch_image(src: Any) -> Any:
    from PIL import Image

    data = src.read() if hasattr(src, "read") else Path(src).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError("not a sketch")
    r, g, b, size = (int(x) for x in data[len(MAGIC) :].split())
    img = Image.new("RGB", (size, size), (r, g, b))
    img.putpixel((0, 0), (255 - r, 255 - g, 255 - b))  # not flat: a thumbnail shows it is this image
    return img


# module-level functions: the indexer's decode workers receive the kind by pickling
def sniff_sketch(name: str, head: bytes, size: int) -> bool:
    return head.startswith(MAGIC)


def decode_sketch(path: str, ctx: media.DecodeContext) -> media.Decoded:
    if ctx.image_preprocessor is None:
        return media.Decoded(error="sketches need the clip image preprocessor")
    try:
        img = _sketch_image(path)
    except ValueError as exc:
        return media.Decoded(error=f"broken sketch: {exc}")
    with tempfile.TemporaryDirectory() as tmp:
        png = os.path.join(tmp, "sketch.png")
        img.save(png)
        return media.Decoded(pixels=np.asarray(ctx.image_preprocessor(png), dtype=np.float32))


def sketch_thumbnail(src: Any, size: int, name: str) -> Any:
    img = _sketch_image(src)
    img.thumbnail((size, size))
    return img


def sketch_mime(name: str) -> str:
    return "application/x-sketch"


SKETCH = media.MediaKind(
    name="sketch",
    segments={"clip": media.IMAGE_SEGMENT},
    decode=decode_sketch,
    extensions=frozenset({".xyz"}),
    sniff=sniff_sketch,
    query_kind="sketch",
    mime=sketch_mime,
    previews=("thumb",),
    thumbnail=sketch_thumbnail,
)


@pytest.fixture
def sketch_kind() -> Iterator[media.MediaKind]:
    undo = media.register(SKETCH)
    try:
        yield SKETCH
    finally:
        undo()
    assert "sketch" not in media.names()


def _write_sketch(path: Path, rgb: tuple[int, int, int], size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(MAGIC + f"{rgb[0]} {rgb[1]} {rgb[2]} {size}\n".encode())
    return path


def _collection(root: Path) -> dict[str, Path]:
    files = {
        "red": _write_sketch(root / "sketches" / "red.xyz", (220, 20, 20)),
        "green": _write_sketch(root / "sketches" / "green.xyz", (20, 200, 40)),
        "blue": _write_sketch(root / "sketches" / "deep" / "blue.dat", (10, 10, 230)),  # content decides
    }
    (root / "notes").mkdir(parents=True)
    files["note"] = root / "notes" / "walk.txt"
    files["note"].write_text("We walked along the harbour at dusk and watched the boats come in.\n")
    return files


def _modalities(index_dir: Path) -> dict[str, tuple[str | None, str]]:
    with Catalogue.open(index_dir, readonly=True) as cat:
        rows = cat.conn.execute("SELECT path, modality, status FROM files").fetchall()
    return {Path(p).name: (m, s) for p, m, s in rows}


def test_builtin_kinds_are_registered_and_describe_what_the_code_did_before() -> None:
    assert media.names() == ("image", "audio", "text", "video")
    assert media.spaces_for() == {
        "image": ("clip",),
        "audio": ("clap",),
        "text": ("clip", "clap"),
        "video": ("clip", "clap"),
    }
    assert media.query_kinds() == {
        "text": ("clip", "clap"),
        "image": ("clip",),
        "audio": ("clap",),
        "text_file": ("clip", "clap"),
        "video": ("clip", "clap"),
    }
    # an image's recognised text (OCR) is searched with the text passages of both spaces
    assert media.groups() == {
        ("clip", "image"): ("image", "video"),
        ("clap", "audio_window"): ("audio", "video"),
        ("clip", "text_passage"): ("image", "text"),
        ("clap", "text_passage"): ("image", "text"),
    }
    assert media.optional_spaces_for() == {"image": ("clap",), "audio": (), "text": (), "video": ()}
    # the published JSON contract lists the built-in kinds
    assert SCHEMA["$defs"]["result"]["properties"]["modality"]["enum"] == list(media.names())
    with pytest.raises(UsageError, match="already registered"):
        media.register(media.get("image"))
    with pytest.raises(UsageError, match="built in"):
        media.unregister("image")
    with pytest.raises(UsageError, match="unknown media kind 'sketch'"):
        media.get("sketch")


def test_registration_adds_the_kind_everywhere_and_is_undone(sketch_kind: media.MediaKind) -> None:
    assert media.names() == ("image", "audio", "text", "video", "sketch")
    assert media.groups()[("clip", "image")] == ("image", "video", "sketch")
    assert media.query_kinds()["sketch"] == ("clip",)
    assert media.snapshot() == (sketch_kind,)
    head = MAGIC + b"1 2 3 4\n"
    assert media.classify("x.bin", head, len(head)).modality == "sketch"
    assert media.classify("x.xyz", b"", 0).reason == "empty file"
    assert media.classify("x.xyz", b"\x00\x01\x02", 3).reason == "not sketch: unrecognised content"
    prose = b"A note that merely has an odd name.\n"
    assert media.classify("x.xyz", prose, len(prose)).modality == "text"  # content wins, as in xmr.sniff
    # without it in the list of added kinds (a worker's view), the same bytes are xmr.sniff's
    assert media.classify("x.bin", head, len(head), added=()).modality != "sketch"
    with pytest.raises(UsageError, match="already registered"):
        media.register(sketch_kind)


def test_without_the_kind_sketches_are_not_indexed_as_sketches(tmp_path: Path) -> None:
    files = _collection(tmp_path / "media")
    assert invoke("index", str(tmp_path / "media"), "--quiet", "--workers", "0").exit_code == 0
    rows = _modalities(paths.index_dir())
    assert all(rows[p.name][0] != "sketch" for p in files.values())
    res = invoke("search", "boats", "--type", "sketch")
    assert res.exit_code == 2 and "unknown type 'sketch'" in res.stderr


def test_an_added_kind_is_indexed_searched_and_served(tmp_path: Path, sketch_kind: media.MediaKind) -> None:
    files = _collection(tmp_path / "media")
    res = invoke("index", str(tmp_path / "media"), "--workers", "0", "--json")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["failed"] == 0 and report["embedded_files"] == 4, report
    index_dir = paths.index_dir()
    rows = _modalities(index_dir)
    for name in ("red", "green", "blue"):
        assert rows[files[name].name] == ("sketch", "indexed"), rows
    assert rows["walk.txt"] == ("text", "indexed")
    with Catalogue.open(index_dir, readonly=True) as cat:
        kinds = cat.conn.execute(
            "SELECT s.space, s.kind, COUNT(*) FROM files f JOIN segments s ON s.hash = f.hash"
            " WHERE f.modality = 'sketch' GROUP BY s.space, s.kind"
        ).fetchall()
    assert kinds == [("clip", "image", 3)]

    # a sketch used as a query finds itself first (its own kind decodes it for the query too)
    found = search([QueryPart("sketch", str(files["blue"]))], index_dir=index_dir)
    assert found.results[0].path == str(files["blue"]) and found.results[0].modality == "sketch"
    assert {r.modality for r in found.results} >= {"sketch", "text"}
    only = search([QueryPart("text", "boats")], index_dir=index_dir, options=SearchOptions(k=10, types=["sketch"]))
    assert sorted(Path(r.path).name for r in only.results) == ["blue.dat", "green.xyz", "red.xyz"]

    # the CLI: --type takes the added kind, and a file query is recognised by its content
    res = invoke("search", "--image", str(files["red"]), "--json")
    assert res.exit_code != 0 and "not an image (content is sketch)" in res.stderr, res.stderr
    res = invoke("search", str(files["red"]), "--json", "-k", "2")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["query"][0]["kind"] == "sketch" and doc["results"][0]["path"] == str(files["red"])
    schema = json.loads(json.dumps(SCHEMA))  # the published enum lists the built-in kinds only
    schema["$defs"]["result"]["properties"]["modality"]["enum"] = list(media.names())
    schema["properties"]["query"]["items"]["properties"]["kind"]["enum"] = [*media.query_kinds()]
    jsonschema.validate(doc, schema)
    typed = invoke("search", "boats", "--type", "sketch", "--paths")
    assert typed.exit_code == 0 and len(typed.stdout.splitlines()) == 3

    _serve_sketches(index_dir, files)


def _serve_sketches(index_dir: Path, files: dict[str, Path]) -> None:
    from PIL import Image
    from starlette.testclient import TestClient

    from xmr.server.app import ServerConfig, create_app
    from xmr.server.state import WarmIndex
    from xmr.server.uploads import Sandbox
    from xmr.settings import Settings

    warm = WarmIndex(index_dir, Settings.from_env())
    sandbox = Sandbox()
    app = create_app(ServerConfig(index_dir, "tok"), warm, sandbox)
    headers = {"Authorization": "Bearer tok"}
    try:
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            reply = client.post("/api/search", json={"q": "boats", "type": "sketch", "k": 5}, headers=headers)
            assert reply.status_code == 200, reply.text
            results = reply.json()["results"]
            assert {r["modality"] for r in results} == {"sketch"} and len(results) == 3
            red = next(r for r in results if r["path"] == str(files["red"]))
            assert red["previews"] == ["thumb"]

            original = client.get(f"/api/files/{red['file_id']}", headers=headers)
            assert original.status_code == 200
            assert original.content == files["red"].read_bytes()
            assert original.headers["content-type"] == "application/x-sketch"
            thumb = client.get(f"/api/files/{red['file_id']}?kind=thumb", headers=headers)
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
            with Image.open(io.BytesIO(thumb.content)) as img:
                assert img.size == (12, 12)
                r, g, b = img.convert("RGB").getpixel((6, 6))
                assert r > 180 and g < 70 and b < 70  # red, as the sketch says
            no_audio = client.get(f"/api/files/{red['file_id']}?kind=audio", headers=headers)
            assert no_audio.status_code >= 400

            # the page offers the added type, the API description lists it
            page = client.get("/", headers=headers)
            assert page.status_code == 200 and 'name="type" value="sketch"' in page.text
            api = client.get("/api/openapi.json", headers=headers).json()
            assert api["components"]["schemas"]["result"]["properties"]["modality"]["enum"][-1] == "sketch"
            form = api["paths"]["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
            assert "sketch" in form["properties"]

            # "more like this" with an indexed sketch: its kind's query kind
            like = client.post("/api/search", json={"like": red["file_id"], "k": 1}, headers=headers)
            assert like.status_code == 200, like.text
            assert like.json()["results"][0]["path"] == str(files["red"])

            # an uploaded sketch, its kind found from its content by the upload sandbox (a spawned process)
            body, ctype = multipart({"query": json.dumps({"k": 1})}, [("file", "mine", files["green"].read_bytes())])
            up = client.post("/api/search", content=body, headers={**headers, "Content-Type": ctype})
            assert up.status_code == 200, up.text
            assert up.json()["query"][0]["kind"] == "sketch"
            assert up.json()["results"][0]["path"] == str(files["green"])
    finally:
        sandbox.close()
        warm.close()


def test_decode_workers_receive_the_added_kind(tmp_path: Path, sketch_kind: media.MediaKind) -> None:
    """Eight sketches or more go to spawned decode workers, which start with the built-in kinds only."""
    root = tmp_path / "many"
    for i in range(9):
        _write_sketch(root / f"s{i}.xyz", (20 * i, 100, 255 - 20 * i), size=8 + i)
    res = invoke("index", str(root), "--quiet", "--workers", "1")
    assert res.exit_code == 0, res.stderr
    rows = _modalities(paths.index_dir())
    assert len(rows) == 9 and set(rows.values()) == {("sketch", "indexed")}, rows


def test_the_registry_imports_no_decoder() -> None:
    """Kinds are described without their decoders' libraries: `xmr --help` stays fast."""
    code = (
        "import sys, xmr.media as m; m.names(); m.groups(); m.query_kinds(); "
        "print(sorted(x for x in ('PIL', 'numpy', 'soundfile', 'torch', 'pypdfium2') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
