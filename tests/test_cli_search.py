"""`xmr search` through the CLI: output formats, the JSON contract, exit codes, concurrency."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from cli_helpers import committed_files, invoke, start_slow_index
from test_crash import make_big_tree

from xmr import paths
from xmr.errors import ExitCode

pytestmark = pytest.mark.usefixtures("fake_encoders")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"
SCHEMA = json.loads(resources.files("xmr").joinpath("data/search.schema.json").read_text())


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    shutil.copytree(FIXTURES, root)
    assert invoke("index", str(root), "--quiet", "--workers", "0").exit_code == 0
    return root


def test_json_output_follows_the_documented_schema(media: Path) -> None:
    for args in (
        ["a dog barking", "-k", "50"],
        ["--audio", str(media / "audio" / "long_35s.ogg"), "--explain", "--all-segments"],
        ['"sea" + 2:"waves" - "city"', "--image", str(media / "images" / "rgba.png"), "--explain"],
        ["--text-file", str(media / "text" / "bread.md"), "--type", "text", "--type", "audio"],
    ):
        res = invoke("search", *args, "--json")
        assert res.exit_code == 0, res.stderr
        doc = json.loads(res.stdout)
        jsonschema.validate(doc, SCHEMA)
        assert doc["results"], args
        for r in doc["results"]:
            assert os.path.isabs(r["path"]) and Path(r["path"]).exists()
            if r["modality"] == "audio":
                assert 0 <= r["start_s"] < r["end_s"]
            if r["modality"] == "text":
                assert r["snippet"] and r["char_end"] > r["char_start"]
    explained = json.loads(invoke("search", "lighthouse", "--json", "--explain").stdout)
    assert explained["results"][0]["explain"]["contributions"][0]["part"] == "lighthouse"
    assert {g["space"] for g in explained["searched"]} == {"clip", "clap"}


def test_schema_rejects_a_broken_document(media: Path) -> None:
    doc = json.loads(invoke("search", "x", "--json").stdout)
    doc["results"][0]["score"] = "high"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)


def test_pipeline_formats_agree(media: Path) -> None:
    doc = json.loads(invoke("search", "harbour lights", "-k", "7", "--json").stdout)
    expected = [r["path"] for r in doc["results"]]
    assert len(expected) == 7
    lines = invoke("search", "harbour lights", "-k", "7", "--jsonl").stdout.splitlines()
    assert [json.loads(line)["path"] for line in lines] == expected
    for line in lines:
        jsonschema.validate(json.loads(line), SCHEMA["$defs"]["result"] | {"$defs": SCHEMA["$defs"]})
    assert invoke("search", "harbour lights", "-k", "7", "--paths").stdout.splitlines() == expected
    assert invoke("search", "harbour lights", "-k", "7", "-0").stdout.split("\0")[:-1] == expected
    tsv = invoke("search", "harbour lights", "-k", "7").stdout.splitlines()
    assert [line.split("\t")[1] for line in tsv] == expected
    tsv_scores = [float(line.split("\t")[0]) for line in tsv]
    assert tsv_scores == pytest.approx([r["score"] for r in doc["results"]], abs=6e-4)


def test_query_from_stdin(media: Path) -> None:
    a = invoke("search", "-", "--paths", input="bread and flour\n").stdout
    b = invoke("search", "bread and flour", "--paths").stdout
    assert a == b and a


def test_self_retrieval_through_the_cli(media: Path) -> None:
    for flag, path in (
        ("--image", media / "images" / "cmyk.jpg"),
        ("--audio", media / "audio" / "surf_noise.ogg"),
        ("--text-file", media / "text" / "gardening_utf16.txt"),
    ):
        out = invoke("search", flag, str(path), "-k", "1", "--paths").stdout
        assert out == f"{path}\n"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--image", "/no/such/file.jpg"], ExitCode.NOT_FOUND),
        (["--image", "{media}/broken/truncated.jpg"], ExitCode.BAD_INPUT),
        (["--audio", "{media}/images/gray.png"], ExitCode.BAD_INPUT),
        (["--audio", "{media}/broken/empty.wav"], ExitCode.BAD_INPUT),
        (["x", "--type", "hologram"], ExitCode.USAGE),
        (["x", "--json", "--paths"], ExitCode.USAGE),
        ([], ExitCode.USAGE),
    ],
)
def test_search_exit_codes(media: Path, args: list[str], code: int) -> None:
    res = invoke("search", *[a.format(media=media) for a in args])
    assert res.exit_code == code, res.stderr
    assert "Traceback" not in res.stderr
    if code != ExitCode.USAGE:
        assert res.stderr.startswith("xmr: error: ") and len(res.stderr.strip().splitlines()) == 1


def test_search_without_an_index(tmp_path: Path) -> None:
    res = invoke("search", "anything")
    assert res.exit_code == ExitCode.NO_INDEX
    assert "no index" in res.stderr


def test_search_while_indexing_sees_what_was_committed(tmp_path: Path, xmr_cmd: list[str]) -> None:
    root = tmp_path / "growing"
    expected = make_big_tree(root, 1200)
    db = paths.catalogue_path(paths.index_dir())
    indexer = start_slow_index([str(root), "--quiet", "--workers", "0"], delay=0.004)
    try:
        committed = committed_files(db)
        assert indexer.poll() is None, "the indexer finished before the search could overlap it"
        res = subprocess.run(
            xmr_cmd + ["search", "alpha bravo", "-k", "100000", "--paths", "--type", "text"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        overlapped = indexer.poll() is None
    finally:
        indexer.wait(timeout=300)
    assert res.returncode == 0, res.stderr
    found = set(res.stdout.splitlines())
    assert committed <= found <= expected
    assert overlapped, "the search ran while the indexer was still running"
    assert indexer.returncode == 0, indexer.stderr.read().decode()


def test_eight_concurrent_searches_during_an_index_run(tmp_path: Path, xmr_cmd: list[str]) -> None:
    """0 errors, and every path a search returns is in the catalogue when it returns."""
    root = tmp_path / "growing"
    expected = make_big_tree(root, 1500)
    db = paths.catalogue_path(paths.index_dir())
    queries = ["alpha bravo", "charlie", "delta echo", "foxtrot golf", "hotel", "india juliet", "kilo", "lima alpha"]
    outcomes = []
    indexer = start_slow_index([str(root), "--quiet", "--workers", "0"], delay=0.005)
    try:
        assert indexer.poll() is None, "the indexer finished before the searches could overlap it"
        searches = [
            subprocess.Popen(
                xmr_cmd + ["search", q, "-k", "50", "--paths"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for q in queries
        ]
        all_started_during_run = indexer.poll() is None
        for proc in searches:
            out, err = proc.communicate(timeout=300)
            # what the catalogue holds now (the run only adds files, so "now" covers "when it answered")
            outcomes.append((proc.returncode, err.decode(), out.decode().splitlines(), committed_files(db)))
            if len(outcomes) == 1:
                answered_during_run = indexer.poll() is None
    finally:
        indexer.wait(timeout=300)
    assert all_started_during_run and answered_during_run, "the searches ran while the indexer was working"
    assert indexer.returncode == 0, indexer.stderr.read().decode()
    errors = [(rc, err) for rc, err, _, _ in outcomes if rc != 0 or err.strip()]
    assert errors == []
    for _, _, found, committed in outcomes:
        assert found and set(found) <= committed <= expected


def test_names_that_are_not_utf8_come_out_exactly(tmp_path: Path, xmr_cmd: list[str]) -> None:
    from test_indexer import make_image

    root = tmp_path / "mu"
    root.mkdir()
    raw = os.fsencode(root) + b"/caf\xe9.png"
    make_image(Path(os.fsdecode(raw)), 1)
    assert invoke("index", str(root), "--quiet", "--workers", "0").exit_code == 0
    out = subprocess.run(xmr_cmd + ["search", "x", "--paths"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == raw + b"\n"
    out = subprocess.run(xmr_cmd + ["search", "x", "-0"], capture_output=True, timeout=120)
    assert out.stdout.split(b"\0")[0] == raw and os.path.exists(out.stdout.split(b"\0")[0])
    doc = json.loads(subprocess.run(xmr_cmd + ["search", "x", "--json"], capture_output=True, timeout=120).stdout)
    assert doc["results"][0]["path"].endswith("caf\\xe9.png")  # JSON carries the escaped form
    assert invoke("remove", os.fsdecode(raw)).exit_code == 0
