"""``xmr eval``: index a labelled collection, run every task its labels allow, measure.

The collection is indexed as usual (incrementally, into ``--index`` or a
temporary index), then queried through the library's own :func:`xmr.search.search`,
so what is measured is what users get. Tasks (each runs where the data allows):

- ``label->M``: the label text (or each of its captions) queries files of
  modality M; files with that label are relevant;
- ``label->all``: the same query over the merged, calibrated list of every modality;
- ``S->T``: each labelled file of modality S queries files of modality T,
  leaving itself out; files sharing a label are relevant (gain: the number of
  labels shared). image->audio and audio->image go through the text bridge.

Per task: recall@1/5/10, MRR, mAP (over the first ``depth`` results), nDCG@10,
query latency p50/p95 split into embedding and searching, and calibration:
how well the calibrated score predicts relevance. The score is a z-like number
(:mod:`xmr.calibrate`); its 0..1 form Phi(score) is taken as the confidence for
the expected calibration error and the reliability diagram, and the lowest
score at which precision reaches the target (0.9) is what ``--min-score``
should be set to.

With ``fusion`` (``xmr eval --fusion``) each text-query task (``label->M``, ``label->all``)
is also ranked by the keyword index alone, by the keyword + semantic fusion ``xmr search``
uses (the calibrated sum, :mod:`xmr.fusion`) and by reciprocal-rank fusion of the same two
lists, so the fusion in use is measured against the alternative on the user's own data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xmr import __version__, media
from xmr.catalogue import Catalogue
from xmr.errors import MediaError, PathNotFound, UsageError
from xmr.evaluate import metrics
from xmr.evaluate.labels import Labels, folder_labels, read_labels_csv
from xmr.indexer import IndexOptions, IndexReport, Progress, _NoProgress, index
from xmr.query import QueryPart
from xmr.settings import Settings

SCHEMA_ID = "xmr-eval/1"  # bump on any incompatible change of the JSON report (xmr/data/eval.schema.json)
RECALL_KS = (1, 5, 10)
NDCG_K = 10
# file -> file tasks, in report order; the last two cross the bridge between the spaces
LABEL_TARGETS = ("image", "audio", "text")
ITEM_PAIRS = (
    ("image", "image"),
    ("audio", "audio"),
    ("text", "text"),
    ("image", "text"),
    ("text", "image"),
    ("image", "audio"),
    ("audio", "image"),
)
BRIDGED = {("image", "audio"), ("audio", "image")}
QUALITY = ("recall@1", "recall@5", "recall@10", "mrr", "map", "ndcg@10")
CHANCE = ("recall@1", "recall@5", "recall@10", "mrr", "map")
# --fusion: the rankings compared, in report order (calibrated_sum is what xmr search uses),
# on the tasks whose queries are text (the keyword side reads a query's words)
FUSION_METHODS = ("semantic", "keyword", "calibrated_sum", "rrf")
FUSION_METRICS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")
FUSED_KINDS = ("label", "merged")


@dataclass
class EvalOptions:
    labels_csv: str | None = None  # default: parent folder names
    depth: int = 100  # results fetched per query; mAP is over these
    bins: int = 10  # calibration bins
    target_precision: float = 0.9
    max_queries: int | None = 200  # per task, a deterministic sample beyond this (None: all)
    workers: int | None = None  # indexing
    plot: str | None = None  # write the reliability diagram (PNG) here
    fusion: bool = False  # also measure keyword-only, the calibrated sum and RRF on text-query tasks


@dataclass
class _Query:
    parts: list[QueryPart]
    relevant: dict[str, float]  # path -> gain
    candidates: int  # files the query ranks (its own file left out)
    exclude: str | None = None  # the query's own file


@dataclass
class _Task:
    name: str
    kind: str  # label | merged | item | bridged
    source: str
    target: str
    types: list[str]
    queries: list[_Query]
    candidates: int  # queries before sampling


@dataclass
class TaskResult:
    name: str
    kind: str
    source: str
    target: str
    queries: int
    candidates: int
    failed: int
    metrics: dict[str, float]
    chance: dict[str, float]  # what a random ranking of the same candidates scores
    latency_ms: dict[str, dict[str, float | None]]
    calibration: dict[str, Any]
    fusion: dict[str, dict[str, float]] | None = None  # method -> metrics (--fusion, text queries)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "task": self.name,
            "kind": self.kind,
            "source": self.source,
            "target": self.target,
            "queries": self.queries,
            "candidate_queries": self.candidates,
            "failed_queries": self.failed,
            "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
            "chance": {k: round(v, 6) for k, v in self.chance.items()},
            "latency_ms": self.latency_ms,
            "calibration": self.calibration,
        }
        if self.fusion is not None:
            out["fusion"] = {m: {k: round(v, 6) for k, v in vals.items()} for m, vals in self.fusion.items()}
        return out


@dataclass
class EvalReport:
    collection: dict[str, Any]
    models: list[dict[str, Any]]
    settings: dict[str, Any]
    tasks: list[TaskResult]
    skipped: list[dict[str, str]]
    calibration: dict[str, Any]
    latency_ms: dict[str, dict[str, float | None]]
    resources: dict[str, Any]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    plot: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_ID,
            "xmr_version": __version__,
            "created": self.created,
            "collection": self.collection,
            "models": self.models,
            "settings": self.settings,
            "tasks": [t.as_dict() for t in self.tasks],
            "skipped": self.skipped,
            "calibration": self.calibration,
            "latency_ms": self.latency_ms,
            "resources": self.resources,
            "plot": self.plot,
        }


@dataclass
class _Item:
    path: str  # catalogue key
    fs_path: str
    modality: str
    hash: str


def evaluate(
    collection: str | os.PathLike[str],
    *,
    index_dir: Path | None = None,
    settings: Settings | None = None,
    options: EvalOptions | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Index ``collection`` (into ``index_dir``, or a temporary index) and measure retrieval on it."""
    settings = settings or Settings.from_env()
    options = options or EvalOptions()
    progress = progress or _NoProgress()
    _check(options)
    root = os.path.abspath(os.path.expanduser(os.fspath(collection)))
    if not os.path.exists(root):
        raise PathNotFound("no such folder", path=collection)
    if not os.path.isdir(root):
        raise UsageError("the collection must be a folder", path=collection)
    csv_labels = read_labels_csv(options.labels_csv) if options.labels_csv else None  # bad labels fail before indexing
    with _index_location(index_dir) as idx:
        index_options = IndexOptions(workers=options.workers)
        indexed = index([root], index_dir=idx, settings=settings, options=index_options, progress=progress)
        items, models = _read_collection(idx, root)
        labels = csv_labels or folder_labels(root, items)
        unindexed = sorted(set(labels.by_path) - set(items))
        for p in unindexed[:5]:
            progress.warn(f"{p}: labelled but not indexed (see 'xmr errors'); left out")
        tasks, skipped = _plan(items, labels, options)
        results = [_run_task(t, idx, root, settings, options, progress) for t in tasks]
        resources = _resources(idx, indexed)
    calibration = _calibration([r[1] for r in results], options)
    report = EvalReport(
        collection=_describe_collection(root, items, labels, len(unindexed)),
        models=[{**m, "precision": _precision(settings)} for m in models],
        settings={
            "device": settings.device,
            "query_engine": getattr(settings, "query_engine", None),
            "depth": options.depth,
            "bins": options.bins,
            "target_precision": options.target_precision,
            "max_queries": options.max_queries,
            "fusion": options.fusion,
        },
        tasks=[r[0] for r in results],
        skipped=skipped,
        calibration=calibration,
        latency_ms=_latency([ms for r in results for ms in r[2]]),
        resources=resources,
    )
    if options.plot:
        from xmr.evaluate.plot import reliability_diagram

        reliability_diagram(calibration, options.plot, title="xmr eval: all tasks")
        report.plot = str(Path(options.plot).expanduser().absolute())
    return report


def _check(options: EvalOptions) -> None:
    if options.depth < max(RECALL_KS):
        raise UsageError(f"--depth must be at least {max(RECALL_KS)} (recall@10 and nDCG@10 look that deep)")
    if options.bins < 1:
        raise UsageError("--bins must be at least 1")
    if not 0 < options.target_precision <= 1:
        raise UsageError("the target precision must lie in (0, 1]")
    if options.max_queries is not None and options.max_queries < 1:
        raise UsageError("--max-queries must be at least 1")


@contextlib.contextmanager
def _index_location(index_dir: Path | None) -> Iterator[Path]:
    if index_dir is not None:
        yield Path(index_dir)
        return
    tmp = tempfile.mkdtemp(prefix="xmr-eval-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_collection(idx: Path, root: str) -> tuple[dict[str, _Item], list[dict[str, Any]]]:
    with Catalogue.open(idx, readonly=True) as cat:
        items = {
            key: _Item(key, row.fs_path, row.modality or "", row.hash or "")
            for key, row in sorted(cat.files_under(root).items())
            if row.status == "indexed" and row.modality in media.names()
        }
        models = [
            {k: m.get(k) for k in ("space", "id", "spec", "name", "pretrained", "dim", "checkpoint_sha256")}
            for m in cat.models()
            if m.get("active")
        ]
    for m in models:
        m["model_id"] = m.pop("id")
    return items, models


def _label_text(label: str) -> str:
    """Folder names such as "chirping_birds" read as text queries "chirping birds"."""
    return " ".join(label.replace("_", " ").split()) or label


def _sample(queries: list[_Query], limit: int | None) -> list[_Query]:
    """A deterministic subset: the same queries in every run over the same files."""
    if limit is None or len(queries) <= limit:
        return queries

    def key(q: _Query) -> bytes:
        return hashlib.blake2b(repr([(p.kind, p.value) for p in q.parts]).encode(), digest_size=8).digest()

    return sorted(queries, key=key)[:limit]


def _plan(items: dict[str, _Item], labels: Labels, options: EvalOptions) -> tuple[list[_Task], list[dict[str, str]]]:
    by_mod = {m: [it for it in items.values() if it.modality == m] for m in media.names()}
    labelled = {p: labels.of(p) for p in items if labels.of(p)}
    tasks: list[_Task] = []
    skipped: list[dict[str, str]] = []

    def add(name: str, kind: str, source: str, target: str, types: list[str], queries: list[_Query], why: str):
        if queries:
            tasks.append(_Task(name, kind, source, target, types, _sample(queries, options.max_queries), len(queries)))
        else:
            skipped.append({"task": name, "reason": why})

    names = sorted({lab for labs in labelled.values() for lab in labs})
    # the task kinds xmr-eval/1 defines (its schema's task pattern); other media kinds are indexed
    # and counted, but not yet evaluated as label targets
    for target in (*LABEL_TARGETS, "all"):
        queries = []
        for lab in names:
            relevant = {
                p: 1.0
                for p, labs in labelled.items()
                if lab in labs and (target == "all" or items[p].modality == target)
            }
            if relevant:
                n = len(items) if target == "all" else len(by_mod[target])
                for text in labels.captions.get(lab) or [_label_text(lab)]:
                    queries.append(_Query([QueryPart("text", text)], relevant, n))
        what = "files" if target == "all" else f"{target} files"
        kind = "merged" if target == "all" else "label"
        types = [] if target == "all" else [target]
        add(f"label->{target}", kind, "label", target, types, queries, f"no labelled {what}")
    for source, target in ITEM_PAIRS:
        queries = []
        for q in by_mod[source]:
            mine = labelled.get(q.path)
            if not mine:
                continue
            relevant = {
                it.path: float(len(mine & labelled[it.path]))
                for it in by_mod[target]
                if it.path != q.path and it.path in labelled and mine & labelled[it.path]
            }
            if relevant:
                n = len(by_mod[target]) - (source == target)
                part = QueryPart(media.get(source).query_kind or "", q.fs_path)
                queries.append(_Query([part], relevant, n, exclude=q.path))
        why = f"no labelled {source} file shares a label with another {target} file"
        kind = "bridged" if (source, target) in BRIDGED else "item"
        add(f"{source}->{target}", kind, source, target, [target], queries, why)
    return tasks, skipped


@dataclass
class _Pairs:
    scores: list[float] = field(default_factory=list)
    relevant: list[bool] = field(default_factory=list)


def _run_task(
    task: _Task, idx: Path, root: str, settings: Settings, options: EvalOptions, progress: Progress
) -> tuple[TaskResult, _Pairs, list[tuple[float, float]]]:
    from xmr.search import SearchOptions, search

    def run(q: _Query, match: str = "semantic") -> Any:
        # one more than the depth when the query's own file is to be dropped
        k = options.depth + (1 if q.exclude else 0)
        # the task metrics are the encoders' retrieval, as xmr-eval/1 has always measured it
        # (no keyword fusion); --fusion adds the other rankings beside them
        # query_cache=False: tasks share queries (label->image and label->all ask the same labels), and a
        # cached embedding or answer would be timed as free
        opts = SearchOptions(k=k, types=task.types, under=[root], match=match, query_cache=False)
        return search(q.parts, index_dir=idx, settings=settings, options=opts, notify=progress.warn)

    progress.phase(f"evaluating {task.name}", len(task.queries))
    values: dict[str, list[float]] = {m: [] for m in QUALITY}
    chance: dict[str, list[float]] = {m: [] for m in CHANCE}
    pairs = _Pairs()
    timings: list[tuple[float, float]] = []
    fused: dict[str, dict[str, list[float]]] | None = None
    if options.fusion and task.kind in FUSED_KINDS:
        fused = {m: {k: [] for k in FUSION_METRICS} for m in FUSION_METHODS}
    failed = 0
    for i, q in enumerate(task.queries):
        try:
            resp = run(q)
        except MediaError as exc:
            failed += 1
            progress.warn(str(exc))
            progress.advance()
            continue
        # the first query of a task loads its encoder and calibration samples: not a query's latency.
        if i or len(task.queries) == 1:
            timings.append((resp.embed_s * 1000.0, (resp.elapsed_s - resp.embed_s) * 1000.0))
        ranked = [r for r in resp.results if r.path != q.exclude][: options.depth]
        rel = [r.path in q.relevant for r in ranked]
        gains = [q.relevant.get(r.path, 0.0) for r in ranked]
        scores = [r.score for r in ranked]
        for k in RECALL_KS:
            values[f"recall@{k}"].append(metrics.recall_at_k(rel, k))
        values["mrr"].append(metrics.reciprocal_rank(rel))
        values["map"].append(metrics.average_precision(rel, n_relevant=min(len(q.relevant), options.depth)))
        values["ndcg@10"].append(metrics.ndcg_at_k(gains, scores, NDCG_K, ideal_gains=list(q.relevant.values())))
        n, r = q.candidates, len(q.relevant)
        for k in RECALL_KS:
            chance[f"recall@{k}"].append(metrics.chance_recall_at_k(n, r, k))
        chance["mrr"].append(metrics.chance_reciprocal_rank(n, r, options.depth))
        chance["map"].append(metrics.chance_average_precision(n, r, options.depth))
        pairs.scores.extend(scores)
        pairs.relevant.extend(rel)
        if fused is not None:
            for method, paths in _fusion_rankings(q, ranked, run, options.depth).items():
                _add_fusion_metrics(fused[method], paths, q)
        progress.advance()
    result = TaskResult(
        name=task.name,
        kind=task.kind,
        source=task.source,
        target=task.target,
        queries=len(task.queries) - failed,
        candidates=task.candidates,
        failed=failed,
        metrics={m: float(np.mean(v)) if v else 0.0 for m, v in values.items()},
        chance={m: float(np.mean(v)) if v else 0.0 for m, v in chance.items()},
        latency_ms=_latency(timings),
        calibration=_calibration([pairs], options),
        fusion=None if fused is None else {m: _means(v) for m, v in fused.items()},
    )
    return result, pairs, timings


def _means(values: dict[str, list[float]]) -> dict[str, float]:
    return {m: float(np.mean(v)) if v else 0.0 for m, v in values.items()}


def _fusion_rankings(q: _Query, semantic: Sequence[Any], run: Any, depth: int) -> dict[str, list[str]]:
    """The paths each FUSION_METHODS ranking puts first, for one query whose semantic results
    (``semantic``, the query's own file dropped) are already known."""
    from xmr import fusion

    def ranked(scores: dict[str, float]) -> list[str]:
        return sorted(scores, key=lambda p: (-scores[p], p))[:depth]

    # the keyword side alone: the keyword index's matches, scored as the fusion scores them
    keyword = {r.path: r.score for r in run(q, "keyword").results if r.path != q.exclude}
    both = [r.path for r in run(q, "both").results if r.path != q.exclude][:depth]
    rrf = fusion.fuse_rrf({r.path: r.score for r in semantic}, keyword)
    return {
        "semantic": [r.path for r in semantic],
        "keyword": ranked(keyword),
        "calibrated_sum": both,
        "rrf": ranked(rrf),
    }


def _add_fusion_metrics(values: dict[str, list[float]], paths: list[str], q: _Query) -> None:
    rel = [p in q.relevant for p in paths]
    gains = [q.relevant.get(p, 0.0) for p in paths]
    for k in RECALL_KS:
        values[f"recall@{k}"].append(metrics.recall_at_k(rel, k))
    values["mrr"].append(metrics.reciprocal_rank(rel))
    # the list's order is the ranking: descending stand-in scores keep it
    order = [-float(i) for i in range(len(paths))]
    values["ndcg@10"].append(metrics.ndcg_at_k(gains, order, NDCG_K, ideal_gains=list(q.relevant.values())))


def _latency(timings: Sequence[tuple[float, float]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for i, name in enumerate(("embed", "search", "total")):
        vals = [t[0] + t[1] if i == 2 else t[i] for t in timings]
        out[name] = {
            "p50": _r(metrics.percentile(vals, 50), 3),
            "p95": _r(metrics.percentile(vals, 95), 3),
        }
    return out


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(x, digits)


def _calibration(pair_sets: Sequence[_Pairs], options: EvalOptions) -> dict[str, Any]:
    scores = np.array([s for p in pair_sets for s in p.scores], dtype=np.float64)
    rel = np.array([r for p in pair_sets for r in p.relevant], dtype=bool)
    ece, bins = metrics.expected_calibration_error(metrics.normal_cdf(scores), rel, options.bins)
    thr = metrics.precision_threshold(scores, rel, options.target_precision)
    return {
        "pairs": int(len(scores)),
        "relevant": int(rel.sum()),
        "ece": round(ece, 6),
        "bins": [b.as_dict() for b in bins],
        "threshold": {
            "target_precision": options.target_precision,
            "min_score": None if thr is None else round(thr.score, 4),
            "precision": None if thr is None else round(thr.precision, 6),
            "recall": None if thr is None else round(thr.recall, 6),
            "kept": None if thr is None else thr.kept,
        },
    }


def _peak_rss() -> tuple[int | None, int | None]:
    """Peak resident memory of this process and of its largest child (decoder workers), in bytes."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None, None
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit
    return int(own), int(children) or None


def _resources(idx: Path, indexed: IndexReport) -> dict[str, Any]:
    from xmr import core

    status = core.status(idx)
    own, children = _peak_rss()
    rate = None
    if indexed.embedded_files and indexed.elapsed_s > 0:
        rate = round(indexed.embedded_files / indexed.elapsed_s, 3)
    return {
        "index_bytes": int(status.get("catalogue_bytes", 0)) + int(status.get("ann_bytes", 0)),
        "peak_rss_bytes": own,
        "peak_rss_children_bytes": children,
        "indexing": {
            "files_embedded": indexed.embedded_files,
            "unchanged": indexed.unchanged,
            "failed": indexed.failed,
            "segments": indexed.segments,
            "elapsed_s": indexed.elapsed_s,
            "files_per_s": rate,
        },
    }


def _describe_collection(root: str, items: dict[str, _Item], labels: Labels, unindexed: int) -> dict[str, Any]:
    """What was measured, with a hash of the files' contents and labels so runs can be matched."""
    h = hashlib.blake2b(digest_size=16)
    for key, it in sorted(items.items()):
        rel = os.path.relpath(key, root)
        h.update(f"{rel}\t{it.hash}\t{'|'.join(sorted(labels.of(key)))}\n".encode())
    for lab in sorted(labels.captions):
        h.update(f"caption\t{lab}\t{'|'.join(labels.captions[lab])}\n".encode())
    by_mod = {m: sum(1 for it in items.values() if it.modality == m) for m in media.names()}
    return {
        "path": root,
        "hash": h.hexdigest(),
        "files": len(items),
        "by_modality": by_mod,
        "labelled": sum(1 for p in items if labels.of(p)),
        "labels": len({lab for p in items for lab in labels.of(p)}),
        "captions": sum(len(v) for v in labels.captions.values()),
        "label_source": labels.source,
        "labels_file": labels.file,
        "labelled_not_indexed": unindexed,
    }


def _precision(settings: Settings) -> str:
    """The encoders' arithmetic: fp16 on CUDA, fp32 elsewhere (xmr.encoders.device.use_half)."""
    device = (settings.device or "auto").lower()
    if device.startswith("cuda"):
        return "fp16"
    torch = sys.modules.get("torch")  # only if a backend already imported it: no import just to ask
    if device == "auto" and torch is not None and torch.cuda.is_available():
        return "fp16"
    return "fp32"

