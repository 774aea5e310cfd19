"""``xmr eval`` on the command line: JSON against its schema, the PNG, every section, --compare;
and a run on the fixtures with the real (random-weight) models."""

from __future__ import annotations

import json
import sqlite3
from importlib import resources
from pathlib import Path

import jsonschema
from cli_helpers import invoke
from PIL import Image
from rich.console import Console
from test_eval import collection, label_encoders  # noqa: F401  (fixtures)

from xmr.errors import ExitCode
from xmr.evaluate.report import render_report

SCHEMA = json.loads(resources.files("xmr").joinpath("data/eval.schema.json").read_text())
SECTIONS = ("quality", "latency (ms per query)", "calibration", "resources")


def _check_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (640, 560)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 3  # something was drawn


def test_json_validates_and_plot_is_a_png(collection: tuple[Path, dict], tmp_path: Path) -> None:  # noqa: F811
    root, _ = collection
    png = tmp_path / "reliability.png"
    res = invoke("eval", str(root), "--json", "--plot", str(png), "--workers", "0")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    assert data["schema"] == "xmr-eval/1" and data["plot"] == str(png)
    assert {m["space"] for m in data["models"]} == {"clip", "clap"}
    assert all(m["precision"] == "fp32" for m in data["models"])
    assert data["settings"]["fusion"] is False and not any("fusion" in t for t in data["tasks"])
    _check_png(png)


def test_fusion_report_validates_and_prints_its_table(collection: tuple[Path, dict]) -> None:  # noqa: F811
    root, _ = collection
    res = invoke("eval", str(root), "--fusion", "--json", "--max-queries", "3", "--workers", "0")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    assert sorted(t["task"] for t in data["tasks"] if "fusion" in t) == [
        "label->all", "label->audio", "label->image", "label->text",
    ]  # fmt: skip
    console = Console(width=160, record=True)
    console.print(render_report(data))
    text = console.export_text()
    assert "keyword + semantic fusion" in text
    for name in ("semantic only", "keyword only", "calibrated sum (in use)", "RRF (k=60)"):
        assert text.count(name) == 4, name  # one row per text-query task


def test_table_prints_every_section(collection: tuple[Path, dict]) -> None:  # noqa: F811
    root, _ = collection
    res = invoke("eval", str(root), "--workers", "0")
    assert res.exit_code == 0, res.stderr
    for section in SECTIONS:
        assert section in res.stdout
    for task in ("label->all", "image->audio", "text->image"):
        assert task in res.stdout
    assert "collection:" in res.stdout and "model clip:" in res.stdout and "peak RSS" in res.stdout


def test_compare_flags_a_planted_regression_and_passes_an_identical_pair(
    collection: tuple[Path, dict],  # noqa: F811
    tmp_path: Path,
) -> None:
    root, _ = collection
    res = invoke("eval", str(root), "--json", "--workers", "0")
    a = tmp_path / "a.json"
    a.write_text(res.stdout)
    same = invoke("eval", "--compare", str(a), str(a))
    assert same.exit_code == 0, same.stderr
    assert "0 worse, 0 better" in same.stdout
    data = json.loads(res.stdout)
    data["tasks"][0]["metrics"]["recall@1"] = 0.5  # planted
    b = tmp_path / "b.json"
    b.write_text(json.dumps(data))
    worse = invoke("eval", "--compare", str(a), str(b))
    assert worse.exit_code == ExitCode.REGRESSED
    assert "1 worse" in worse.stdout and f"{data['tasks'][0]['task']} recall@1" in worse.stdout
    assert worse.stderr.startswith("xmr: error: 1 metric(s) worse")
    as_json = invoke("eval", "--compare", str(a), str(b), "--json")
    rows = [r for r in json.loads(as_json.stdout)["rows"] if r["flag"]]
    assert [(r["metric"], r["flag"]) for r in rows] == [(f"{data['tasks'][0]['task']} recall@1", "worse")]
    loose = invoke("eval", "--compare", str(a), str(b), "--tolerance", "0.6")
    assert loose.exit_code == 0


def test_usage_errors(tmp_path: Path) -> None:
    res = invoke("eval")
    assert res.exit_code == ExitCode.USAGE and "COLLECTION" in res.stderr
    res = invoke("eval", str(tmp_path), "--compare", "a.json", "b.json")
    assert res.exit_code == ExitCode.USAGE
    res = invoke("eval", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert res.exit_code == ExitCode.NOT_FOUND and "a.json: report not found" in res.stderr


def check_eval_on_indexed_fixtures(env: dict[str, str], tmp_path: Path) -> None:
    """``xmr eval`` on the fixtures, labelled by their folders (images, audio, text, broken),
    with the real architectures (random weights) given through --clip-model / --clap-model.

    Called by tests/test_search_real.py, which has built the models and indexed the fixtures
    with them: this run finds the index up to date and only measures."""
    media, png = env["media"], tmp_path / "plot.png"
    models = ["--clip-model", env["XMR_CLIP_MODEL"], "--clap-model", env["XMR_CLAP_MODEL"]]
    index = ["--index", env["index"]]
    res = invoke("eval", media, *models, *index, "--max-queries", "2", "--json", "--plot", str(png))
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    _check_png(png)
    assert {m["name"] for m in data["models"]} == {"ViT-B-32", "HTSAT-tiny"}
    assert all(m["checkpoint_sha256"] for m in data["models"])
    # what the catalogue itself holds for the fixtures: the indexed files are the collection, and
    # the re-index before measuring finds every file it knows (failed and skipped ones too) unchanged
    with sqlite3.connect(Path(env["index"]) / "catalogue.db") as db:
        status = dict(db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
    assert data["collection"]["files"] == status["indexed"] > 20 and status["error"] == 6
    assert data["resources"]["indexing"]["unchanged"] == sum(status.values()), status
    tasks = {t["task"] for t in data["tasks"]}
    # folder labels: each modality has its own folder, so only tasks within one modality have relevant files
    assert tasks == {"label->image", "label->audio", "label->text", "label->all", "image->image", "audio->audio",
                     "text->text"}  # fmt: skip
    assert {s["task"] for s in data["skipped"]} == {"image->text", "text->image", "image->audio", "audio->image"}
    assert all(t["queries"] == min(2, t["candidate_queries"]) for t in data["tasks"])
    for t in data["tasks"]:
        lat = t["latency_ms"]
        assert lat["embed"]["p50"] > 0 and lat["search"]["p50"] > 0, (t["task"], lat)
    # as a table: every section prints
    res = invoke("eval", media, *models, *index, "--max-queries", "1")
    assert res.exit_code == 0, res.stderr
    for section in SECTIONS:
        assert section in res.stdout
    assert "skipped image->audio" in res.stdout and "model clap:" in res.stdout
