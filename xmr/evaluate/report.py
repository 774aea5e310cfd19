"""Rich renderables for ``xmr eval`` and ``xmr eval --compare`` (built here, printed by the CLI).

Both take the JSON form of a report (``EvalReport.as_dict()``), so a saved
report renders exactly as a fresh one.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from xmr.fusion import RRF_K
from xmr.units import human_bytes

SECTIONS = ("collection", "quality", "latency", "calibration", "resources")


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _table(title: str, *columns: str) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", show_edge=False, header_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    return t


def render_report(data: dict[str, Any]) -> Group:
    c = data["collection"]
    mods = ", ".join(f"{n} {m}" for m, n in c["by_modality"].items())
    source = c["labels_file"] or "parent folder names"
    head = [
        Text(f"collection: {c['path']} ({c['files']} files: {mods}; hash {c['hash']})"),
        Text(f"labels: {c['labels']} from {source}; {c['labelled']} files labelled, {c['captions']} captions"),
    ]
    for m in data["models"]:
        head.append(Text(f"model {m['space']}: {m['model_id']} ({m['precision']})"))
    s = data["settings"]
    head.append(Text(f"xmr {data['xmr_version']}; depth {s['depth']}; device {s['device']}; "
                     f"query engine {s['query_engine']}"))  # fmt: skip

    quality = _table("quality", "task", "queries", "R@1", "R@5", "R@10", "MRR", "mAP", "nDCG@10", "mAP chance")
    latency = _table("latency (ms per query)", "task", "embed p50", "embed p95", "search p50", "search p95")
    calib = _table("calibration", "task", "results", "ECE", f"min-score for P>={s['target_precision']:g}", "recall")
    for t in data["tasks"]:
        m, lat, cal = t["metrics"], t["latency_ms"], t["calibration"]
        quality.add_row(
            t["task"], str(t["queries"]), *(_f(m[k]) for k in ("recall@1", "recall@5", "recall@10", "mrr", "map")),
            _f(m["ndcg@10"]), _f(t["chance"]["map"]),
        )  # fmt: skip
        latency.add_row(t["task"], *(_f(lat[p][q], ".1f") for p in ("embed", "search") for q in ("p50", "p95")))
        thr = cal["threshold"]
        calib.add_row(t["task"], str(cal["pairs"]), _f(cal["ece"]), _f(thr["min_score"], ".2f"), _f(thr["recall"]))
    lat = data["latency_ms"]
    latency.add_row("all", *(_f(lat[p][q], ".1f") for p in ("embed", "search") for q in ("p50", "p95")), style="bold")
    cal, thr = data["calibration"], data["calibration"]["threshold"]
    calib.add_row("all", str(cal["pairs"]), _f(cal["ece"]), _f(thr["min_score"], ".2f"), _f(thr["recall"]),
                  style="bold")  # fmt: skip

    r = data["resources"]
    ix = r["indexing"]
    rate = "-" if ix["files_per_s"] is None else f"{ix['files_per_s']:.1f} files/s"
    resources = _table("resources", "measure", "value")
    resources.add_row("index size", human_bytes(r["index_bytes"]))
    resources.add_row("peak RSS (this process)", human_bytes(r["peak_rss_bytes"]))
    resources.add_row("peak RSS (largest decoder worker)", human_bytes(r["peak_rss_children_bytes"]))
    resources.add_row("indexing rate", f"{rate} ({ix['files_embedded']} files, {ix['segments']} segments "
                      f"in {ix['elapsed_s']:.1f} s; {ix['unchanged']} unchanged)")  # fmt: skip
    parts: list[Any] = [*head, Text(""), quality, Text(""), latency, Text(""), calib, Text(""), resources]
    fusion = _fusion_table(data["tasks"])
    if fusion is not None:
        parts += [Text(""), fusion]
    if data["skipped"]:
        parts.append(Text(""))
        parts.extend(Text(f"skipped {s['task']}: {s['reason']}") for s in data["skipped"])
    if data.get("plot"):
        parts.append(Text(f"reliability diagram: {data['plot']}"))
    return Group(*parts)


FUSION_NAMES = {
    "semantic": "semantic only",
    "keyword": "keyword only",
    "calibrated_sum": "calibrated sum (in use)",
    "rrf": f"RRF (k={RRF_K})",
}


def _fusion_table(tasks: list[dict[str, Any]]) -> Table | None:
    """--fusion: each text-query task's rankings side by side (None when not measured)."""
    rows = [t for t in tasks if t.get("fusion")]
    if not rows:
        return None
    table = _table("keyword + semantic fusion", "task", "ranking", "R@1", "R@5", "R@10", "MRR", "nDCG@10")
    for t in rows:
        for i, (method, m) in enumerate(t["fusion"].items()):
            name = FUSION_NAMES.get(method, method)
            table.add_row(t["task"] if i == 0 else "", name,
                          *(_f(m[k]) for k in ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")))  # fmt: skip
    return table


def render_comparison(data: dict[str, Any]) -> Group:
    a, b = data["a"], data["b"]
    head = [Text(f"a: {a['file']} ({', '.join(a['models'])})"), Text(f"b: {b['file']} ({', '.join(b['models'])})")]
    if a["collection_hash"] != b["collection_hash"]:
        head.append(Text("warning: the two runs measured different collections (hashes differ)", style="yellow"))
    table = _table("differences (b - a)", "metric", "a", "b", "change", "")
    for row in data["rows"]:
        flag = row["flag"]
        style = {"worse": "red", "better": "green"}.get(flag)
        change = "-" if row["delta"] is None else f"{row['delta']:+.4g}"
        table.add_row(row["metric"], _f(row["a"], ".4g"), _f(row["b"], ".4g"), change, flag, style=style)
    summary = Text(
        f"{data['worse']} worse, {data['better']} better beyond the tolerance "
        f"(quality ±{data['tolerance']:g}, speed and size ±{data['speed_tolerance']:.0%})"
    )
    return Group(*head, Text(""), table, Text(""), summary)
