"""``xmr eval --compare A.json B.json``: what changed between two saved reports.

Every metric present in either report is one row, B minus A. A change beyond
the tolerance is flagged ``better`` or ``worse`` by the metric's direction:
quality (recall, MRR, mAP, nDCG) and ECE use an absolute tolerance, since they
live on 0..1; latency, memory, index size and indexing rate a relative one
(timings are noisy). A metric only one report has is flagged ``only in a`` / ``only in b``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from xmr.errors import MediaError, PathNotFound
from xmr.evaluate.run import QUALITY, SCHEMA_ID

# metric suffix -> (higher is better, tolerance kind)
_DIRECTION = {
    **{m: (True, "abs") for m in QUALITY},
    "ece": (False, "abs"),
    "embed_p50_ms": (False, "rel"),
    "embed_p95_ms": (False, "rel"),
    "search_p50_ms": (False, "rel"),
    "search_p95_ms": (False, "rel"),
    "peak_rss_bytes": (False, "rel"),
    "index_bytes": (False, "rel"),
    "files_per_s": (True, "rel"),
}


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise PathNotFound("report not found", path=path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(f"not a JSON report: {exc}", path=path) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_ID:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise MediaError(f"not an xmr eval report (schema {found!r}, expected {SCHEMA_ID!r})", path=path)
    return data


def flatten(report: dict[str, Any]) -> dict[str, float]:
    """metric name -> value, e.g. "image->image recall@1", "all search_p95_ms", "peak_rss_bytes"."""
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)

    for t in report.get("tasks", []):
        for m, v in t.get("metrics", {}).items():
            put(f"{t['task']} {m}", v)
        # --fusion: the rankings beside the task's own (its semantic one is "metrics" above)
        for method, values in (t.get("fusion") or {}).items():
            if method != "semantic":
                for m, v in values.items():
                    put(f"{t['task']} {method} {m}", v)
        put(f"{t['task']} ece", t.get("calibration", {}).get("ece"))
        for part in ("embed", "search"):
            for q in ("p50", "p95"):
                put(f"{t['task']} {part}_{q}_ms", t.get("latency_ms", {}).get(part, {}).get(q))
    put("all ece", report.get("calibration", {}).get("ece"))
    for part in ("embed", "search"):
        for q in ("p50", "p95"):
            put(f"all {part}_{q}_ms", report.get("latency_ms", {}).get(part, {}).get(q))
    res = report.get("resources", {})
    put("peak_rss_bytes", res.get("peak_rss_bytes"))
    put("index_bytes", res.get("index_bytes"))
    put("files_per_s", res.get("indexing", {}).get("files_per_s"))
    return out


def _flag(name: str, a: float, b: float, tolerance: float, speed_tolerance: float) -> str:
    higher_better, kind = _DIRECTION[name.rsplit(" ", 1)[-1]]
    delta = b - a
    limit = tolerance if kind == "abs" else speed_tolerance * abs(a)
    if abs(delta) <= limit:
        return ""
    return "better" if (delta > 0) == higher_better else "worse"


def compare_reports(
    a_path: str | os.PathLike[str],
    b_path: str | os.PathLike[str],
    *,
    tolerance: float = 0.02,
    speed_tolerance: float = 0.25,
) -> dict[str, Any]:
    """Rows of (metric, a, b, delta, flag) and the counts of flagged changes."""
    a, b = load_report(a_path), load_report(b_path)
    fa, fb = flatten(a), flatten(b)
    rows = []
    for name in list(fa) + [n for n in fb if n not in fa]:
        va, vb = fa.get(name), fb.get(name)
        if va is None or vb is None:
            flag = "only in b" if va is None else "only in a"
            rows.append({"metric": name, "a": va, "b": vb, "delta": None, "flag": flag})
            continue
        flag = _flag(name, va, vb, tolerance, speed_tolerance)
        rows.append({"metric": name, "a": va, "b": vb, "delta": vb - va, "flag": flag})

    def side(path: str | os.PathLike[str], r: dict[str, Any]) -> dict[str, Any]:
        models = [f"{m.get('model_id')} {m.get('precision', '')}".strip() for m in r.get("models", [])]
        return {"file": str(path), "models": models, "collection_hash": r.get("collection", {}).get("hash")}

    return {
        "schema": "xmr-eval-compare/1",
        "a": side(a_path, a),
        "b": side(b_path, b),
        "tolerance": tolerance,
        "speed_tolerance": speed_tolerance,
        "rows": rows,
        "worse": sum(r["flag"] == "worse" for r in rows),
        "better": sum(r["flag"] == "better" for r in rows),
    }
