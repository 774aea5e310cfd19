"""``xmr eval`` on the command line: JSON against its schema, the PNG, every section, --compare;
and a run on the fixtures with the real (random-weight) models."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from cli_helpers import invoke
from PIL import Image
from test_eval import collection, label_encoders  # noqa: F401  (fixtures)

from xmr.errors import ExitCode

SCHEMA = json.loads(resources.files("xmr").joinpath("data/eval.schema.json").read_text())
SECTIONS = ("quality", "latency (ms per query)", "calibration", "resources")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"


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
    _check_png(png)


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


@pytest.mark.slow
def test_real_models_on_the_fixtures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixtures, labelled by their folders (images, audio, text, broken), with the real
    architectures (random weights) given through --clip-model / --clap-model."""
    import open_clip
    import torch
    from clap_helpers import build_roberta_tokenizer, make_checkpoint
    from test_search_real import CONCEPTS

    torch.manual_seed(0)
    clip_ckpt = tmp_path / "clip-vit-b-32.pt"
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), clip_ckpt)
    clap_ckpt = tmp_path / "clap-htsat-tiny.pt"
    make_checkpoint(clap_ckpt, seed=1)
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("\n".join(CONCEPTS) + "\n")
    monkeypatch.setenv("XMR_CLAP_TOKENIZER", str(build_roberta_tokenizer(tmp_path / "roberta")))
    monkeypatch.setenv("XMR_CONCEPTS", str(concepts))
    monkeypatch.setenv("XMR_CONCEPTS_ONLY", "1")
    monkeypatch.setenv("XMR_DEVICE", "cpu")
    # queries through the backends indexing already loaded: exporting the ONNX query towers of
    # random-weight models would triple this test's time and is tested with search
    monkeypatch.setenv("XMR_QUERY_ENGINE", "torch")
    media = tmp_path / "media"
    shutil.copytree(FIXTURES, media)
    png = tmp_path / "plot.png"
    models = ["--clip-model", f"ViT-B-32:{clip_ckpt}", "--clap-model", str(clap_ckpt)]
    index = ["--index", str(tmp_path / "index"), "--workers", "1"]
    res = invoke("eval", str(media), *models, *index, "--max-queries", "2", "--json", "--plot", str(png))
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    _check_png(png)
    assert {m["name"] for m in data["models"]} == {"ViT-B-32", "HTSAT-tiny"}
    assert all(m["checkpoint_sha256"] for m in data["models"])
    tasks = {t["task"] for t in data["tasks"]}
    # folder labels: each modality has its own folder, so only tasks within one modality have relevant files
    assert {"label->image", "label->audio", "label->text", "label->all"} <= tasks
    assert {"image->image", "audio->audio", "text->text"} <= tasks
    assert {s["task"] for s in data["skipped"]} == {"image->text", "text->image", "image->audio", "audio->image"}
    assert data["resources"]["indexing"]["failed"] == 6  # fixtures/media/broken
    assert all(t["queries"] == min(2, t["candidate_queries"]) for t in data["tasks"])
    # the same index again (nothing to embed), as a table: every section prints
    res = invoke("eval", str(media), *models, *index, "--max-queries", "1")
    assert res.exit_code == 0, res.stderr
    for section in SECTIONS:
        assert section in res.stdout
    assert "skipped image->audio" in res.stdout
