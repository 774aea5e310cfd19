"""xmr eval through the library, with test encoders whose vectors encode each file's label
(read from the file's content, see tests/eval_encoders.py) plus controlled noise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from eval_encoders import LABELS, make_labelled_collection, write_labels_csv

from xmr.errors import MediaError, PathNotFound, UsageError
from xmr.evaluate import EvalOptions, evaluate
from xmr.evaluate.compare import compare_reports, flatten
from xmr.evaluate.labels import read_labels_csv

ALL_TASKS = {
    "label->image", "label->audio", "label->text", "label->all",
    "image->image", "audio->audio", "text->text", "image->text", "text->image", "image->audio", "audio->image",
}  # fmt: skip


@pytest.fixture
def label_encoders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XMR_BACKEND_CLIP", "eval_encoders:LabelClip")
    monkeypatch.setenv("XMR_BACKEND_CLAP", "eval_encoders:LabelClap")
    concepts = tmp_path / "concepts.txt"  # the bridge's vocabulary: the label words
    concepts.write_text("\n".join(LABELS) + "\n")
    monkeypatch.setenv("XMR_CONCEPTS", str(concepts))
    monkeypatch.setenv("XMR_CONCEPTS_ONLY", "1")


@pytest.fixture
def collection(tmp_path: Path, label_encoders: None) -> tuple[Path, dict[Path, str]]:
    root = tmp_path / "collection"
    return root, make_labelled_collection(root)


def _eval(root: Path, **opts: object) -> dict:
    return evaluate(root, options=EvalOptions(workers=0, **opts)).as_dict()


def test_perfect_encoder_scores_exactly_one_on_every_task(collection: tuple[Path, dict[Path, str]]) -> None:
    root, _ = collection
    report = _eval(root)
    tasks = {t["task"]: t for t in report["tasks"]}
    assert set(tasks) == ALL_TASKS and report["skipped"] == []
    for name, t in tasks.items():
        assert t["metrics"]["recall@1"] == 1.0, name
        assert t["metrics"]["map"] == 1.0, name
        assert t["metrics"]["mrr"] == 1.0 and t["metrics"]["ndcg@10"] == 1.0, name
        assert t["chance"]["map"] < 0.35, name  # far from what the encoder achieves
    # 6 labels x 4 files per modality: one query per label, one per labelled file
    assert tasks["label->image"]["queries"] == 6 and tasks["image->audio"]["queries"] == 24
    assert tasks["image->audio"]["kind"] == "bridged" and tasks["label->all"]["kind"] == "merged"
    c = report["collection"]
    assert c["files"] == 72 and c["labels"] == 6 and c["label_source"] == "folders"
    cal = report["calibration"]
    assert cal["pairs"] > 0 and 0 <= cal["ece"] <= 1
    assert cal["threshold"]["precision"] >= 0.9 and cal["threshold"]["min_score"] is not None
    assert report["resources"]["indexing"]["files_embedded"] == 72
    assert report["resources"]["index_bytes"] > 0 and report["resources"]["peak_rss_bytes"] > 0
    for t in tasks.values():
        assert t["latency_ms"]["embed"]["p50"] >= 0 and t["latency_ms"]["search"]["p95"] > 0


def test_shuffled_labels_fall_to_chance(collection: tuple[Path, dict[Path, str]], tmp_path: Path) -> None:
    """Labels permuted across the files: the (perfect) encoder's ranking no longer says anything
    about relevance, so every metric falls to what a random ranking of the same candidates gets.
    Tolerance: pooled over the 11 tasks (282 queries), |observed - chance| <= 0.08 for mAP, MRR
    and recall@1, and no single task's mAP more than 0.2 above its chance level."""
    root, labels = collection
    rng = np.random.default_rng(5)
    files = sorted(labels)
    shuffled = dict(zip(files, rng.permutation([labels[f] for f in files]).tolist(), strict=True))
    csv_file = write_labels_csv(tmp_path / "shuffled.csv", shuffled)
    tasks = _eval(root, labels_csv=str(csv_file))["tasks"]
    assert {t["task"] for t in tasks} == ALL_TASKS
    weights = np.array([t["queries"] for t in tasks], dtype=float)
    for metric in ("map", "mrr", "recall@1"):
        observed = np.average([t["metrics"][metric] for t in tasks], weights=weights)
        chance = np.average([t["chance"][metric] for t in tasks], weights=weights)
        assert abs(observed - chance) <= 0.08, (metric, observed, chance)
    for t in tasks:
        assert t["metrics"]["map"] <= t["chance"]["map"] + 0.2, t["task"]


def test_noise_degrades_quality_between_perfect_and_chance(
    collection: tuple[Path, dict[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = collection
    monkeypatch.setenv("EVAL_ENCODER_NOISE", "2.0")
    tasks = {t["task"]: t for t in _eval(root)["tasks"]}
    for name in ("image->image", "audio->audio", "label->all"):
        t = tasks[name]
        assert t["chance"]["map"] + 0.1 < t["metrics"]["map"] < 1.0, (name, t["metrics"], t["chance"])


def test_csv_labels_with_several_labels_and_captions(collection: tuple[Path, dict[Path, str]], tmp_path: Path) -> None:
    root, labels = collection
    csv_file = tmp_path / "labels.csv"
    rows = ["path,label,caption"]
    for p, lab in sorted(labels.items()):
        rows.append(f"{os.path.relpath(p, tmp_path)},{lab},")
    img = root / "amber" / "img0.png"
    rows.append(f"{os.path.relpath(img, tmp_path)},warm,a picture of something amber")  # a second label
    rows.append(f"{os.path.relpath(root / 'basalt' / 'img0.png', tmp_path)},basalt,a basalt picture")
    csv_file.write_text("\n".join(rows) + "\n")
    parsed = read_labels_csv(csv_file)
    assert parsed.of(str(img)) == {"amber", "warm"}
    assert parsed.captions == {"warm": ["a picture of something amber"], "basalt": ["a basalt picture"]}
    report = _eval(root, labels_csv=str(csv_file))
    tasks = {t["task"]: t for t in report["tasks"]}
    # "warm" is queried by its caption, "basalt" by its caption, the other labels by their names
    assert tasks["label->image"]["queries"] == 7
    assert tasks["label->image"]["metrics"]["map"] == 1.0
    assert report["collection"]["label_source"] == "csv" and report["collection"]["captions"] == 2


def test_unlabelled_files_are_distractors_only(collection: tuple[Path, dict[Path, str]]) -> None:
    root, _ = collection
    # an unlabelled amber text, named to sort before amber/ among equal scores
    (root / "a.txt").write_text("An amber note that nobody labelled.\n")
    report = _eval(root)
    assert report["collection"]["files"] == 73 and report["collection"]["labelled"] == 72
    tasks = {t["task"]: t for t in report["tasks"]}
    assert tasks["text->text"]["queries"] == 24
    # the stray amber text ranks with the amber texts but is not relevant: precision drops below 1
    assert tasks["text->text"]["metrics"]["map"] < 1.0


def test_bad_labels_and_options_are_one_line_errors(collection: tuple[Path, dict[Path, str]], tmp_path: Path) -> None:
    root, _ = collection
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\ncollection/amber/img0.png\n")
    with pytest.raises(MediaError, match="line 2: expected path,label") as e:
        read_labels_csv(bad)
    assert e.value.path == str(bad)
    bad.write_text("collection/amber/nope.png,amber\n")
    with pytest.raises(MediaError, match="line 1: no such file 'collection/amber/nope.png'"):
        evaluate(root, options=EvalOptions(labels_csv=str(bad)))
    assert not (tmp_path / "xmr-home").exists()  # failed before anything was indexed
    with pytest.raises(PathNotFound):
        read_labels_csv(tmp_path / "missing.csv")
    with pytest.raises(PathNotFound):
        evaluate(tmp_path / "nope")
    with pytest.raises(UsageError, match="--depth"):
        evaluate(root, options=EvalOptions(depth=5))


def test_given_index_is_updated_incrementally(collection: tuple[Path, dict[Path, str]], tmp_path: Path) -> None:
    root, _ = collection
    idx = tmp_path / "idx"
    first = evaluate(root, index_dir=idx, options=EvalOptions(workers=0)).as_dict()
    second = evaluate(root, index_dir=idx, options=EvalOptions(workers=0)).as_dict()
    assert first["resources"]["indexing"]["files_embedded"] == 72
    assert second["resources"]["indexing"]["files_embedded"] == 0
    assert second["resources"]["indexing"]["unchanged"] == 72 and second["resources"]["indexing"]["files_per_s"] is None
    assert first["collection"]["hash"] == second["collection"]["hash"]
    assert [t["metrics"] for t in first["tasks"]] == [t["metrics"] for t in second["tasks"]]


def test_compare_flags_a_planted_regression_and_passes_an_identical_pair(
    collection: tuple[Path, dict[Path, str]], tmp_path: Path
) -> None:
    root, _ = collection
    report = _eval(root)
    a = tmp_path / "a.json"
    a.write_text(json.dumps(report))
    same = compare_reports(a, a)
    assert same["worse"] == 0 and same["better"] == 0 and all(r["flag"] == "" for r in same["rows"])
    worse = json.loads(a.read_text())
    task = next(t for t in worse["tasks"] if t["task"] == "image->audio")
    task["metrics"]["map"] -= 0.1  # planted
    task["metrics"]["recall@5"] -= 0.01  # within the tolerance
    worse["resources"]["peak_rss_bytes"] *= 1.1  # within the 25 % speed/size tolerance
    b = tmp_path / "b.json"
    b.write_text(json.dumps(worse))
    diff = compare_reports(a, b, tolerance=0.02)
    flagged = {r["metric"]: r["flag"] for r in diff["rows"] if r["flag"]}
    assert flagged == {"image->audio map": "worse"}
    assert diff["worse"] == 1
    back = compare_reports(b, a)
    assert {r["metric"]: r["flag"] for r in back["rows"] if r["flag"]} == {"image->audio map": "better"}
    assert back["worse"] == 0
    (tmp_path / "x.json").write_text('{"schema": "xmr-search/1"}')
    with pytest.raises(MediaError, match="not an xmr eval report"):
        compare_reports(a, tmp_path / "x.json")


def test_fusion_report_compares_the_rankings_on_text_queries(
    collection: tuple[Path, dict[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--fusion on a collection whose folder names are the labels: the keyword index alone finds
    exactly the relevant files for every label query (each is in the folder named by the query's
    word, no other file is), while a noisy encoder leaves the semantic ranking imperfect; so
    keyword-only is perfect, and the fusion in use beats semantic-only."""
    root, _ = collection
    monkeypatch.setenv("EVAL_ENCODER_NOISE", "3.0")
    report = _eval(root, fusion=True)
    assert report["settings"]["fusion"] is True
    tasks = {t["task"]: t for t in report["tasks"]}
    fused = {name: t["fusion"] for name, t in tasks.items() if "fusion" in t}
    assert set(fused) == {"label->image", "label->audio", "label->text", "label->all"}  # text queries only
    for name, f in fused.items():
        assert list(f) == ["semantic", "keyword", "calibrated_sum", "rrf"], name
        # the semantic ranking is the task's own: the same numbers, measured twice
        for metric in ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"):
            assert f["semantic"][metric] == tasks[name]["metrics"][metric], (name, metric)
        assert f["keyword"]["recall@1"] == 1.0 and f["keyword"]["mrr"] == 1.0, name
    merged = fused["label->all"]
    assert merged["semantic"]["ndcg@10"] < 0.9  # the noise leaves room to improve
    assert merged["calibrated_sum"]["ndcg@10"] > merged["semantic"]["ndcg@10"]
    assert merged["calibrated_sum"]["mrr"] >= merged["semantic"]["mrr"]


def test_compare_reads_the_fusion_rankings() -> None:
    ranking = {"recall@1": 0.5, "recall@5": 1.0, "recall@10": 1.0, "mrr": 0.75, "ndcg@10": 0.6}
    fusion = {"semantic": {**ranking, "mrr": 0.4}, "keyword": ranking, "calibrated_sum": {**ranking, "mrr": 0.9}}
    task = {"task": "label->all", "metrics": {"mrr": 0.4}, "fusion": {**fusion, "rrf": ranking}}
    flat = flatten({"tasks": [task, {"task": "image->image", "metrics": {"mrr": 1.0}}]})
    assert flat["label->all calibrated_sum mrr"] == 0.9 and flat["label->all rrf ndcg@10"] == 0.6
    assert flat["label->all mrr"] == 0.4 and not any("semantic" in k for k in flat)  # not counted twice
    assert not any(k.startswith("image->image ") and k != "image->image mrr" for k in flat)
