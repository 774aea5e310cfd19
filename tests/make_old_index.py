"""Make tests/fixtures_data/index-707921b: an index written by xmr at commit 707921b.

test_compat.py opens it with today's code: it must be searched and re-indexed as it is
(no re-embedding, no ANN rebuild) and answer the recorded queries the same way.

Run from the repository root (needs git and the test virtualenv):

    python tests/make_old_index.py

It extracts xmr at 707921b with ``git archive``, indexes a small collection with the
deterministic test encoders (tests/fake_encoders.py) in a subprocess running that old
code, and records the top results of a few queries into index.tar.xz and expected.json. The collection is a few files of
fixtures/media (copied into the fixture) plus one synthetic WAV, generated from integers
here (byte for byte the same every time, so it is not stored), cut into 0.1 s windows so
that the clap space holds enough vectors (> EXACT_THRESHOLD) for an hnswlib ANN file.
Every file gets the mtime MTIME_NS, so a copy made by the test is "unchanged".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import wave
from pathlib import Path

import numpy as np

COMMIT = "707921b"
REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures_data" / f"index-{COMMIT}"
MEDIA_SOURCES = {
    "images/gradient.jpg": "fixtures/media/images/gradient.jpg",
    "images/gray.png": "fixtures/media/images/gray.png",
    "images/picture.webp": "fixtures/media/images/picture.webp",
    "audio/surf_noise.ogg": "fixtures/media/audio/surf_noise.ogg",
    "audio/high_voice.mp3": "fixtures/media/audio/high_voice.mp3",
    "text/astronomy.txt": "fixtures/media/text/astronomy.txt",
    "text/bread.md": "fixtures/media/text/bread.md",
    "text/tide_pools.html": "fixtures/media/documents/tide_pools.html",
}
SYNTH = "audio/tones.wav"
MTIME_NS = 1_700_000_000_000_000_000
WINDOW_S = 0.1
SYNTH_WINDOWS = 3200
RATE = 48000
QUERIES: list[dict[str, str]] = [
    {"kind": "text", "value": "a lighthouse on the coast"},
    {"kind": "text", "value": "baking bread"},
    {"kind": "image", "value": "images/gradient.jpg"},
    {"kind": "audio", "value": "audio/surf_noise.ogg"},
]
K = 5


def synth_wav(path: Path) -> None:
    """SYNTH_WINDOWS windows of 0.1 s, each a sawtooth of its own period: integers only."""
    n = int(RATE * WINDOW_S)
    t = np.arange(n, dtype=np.int64)
    chunks = []
    for w in range(SYNTH_WINDOWS):
        period = 20 + w % 400
        amp = 4000 + (w * 37) % 20000
        chunks.append(((t * (w + 7)) % period * (2 * amp) // period - amp).astype("<i2"))
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(np.concatenate(chunks).tobytes())


def build_collection(root: Path, media: Path) -> None:
    """The collection under ``root``; ``media`` holds the copied fixture files."""
    for rel in MEDIA_SOURCES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(media / rel, root / rel)
    synth_wav(root / SYNTH)
    for rel in [*MEDIA_SOURCES, SYNTH]:
        os.utime(root / rel, ns=(MTIME_NS, MTIME_NS))


def run_queries(index_dir: Path, root: Path) -> list[dict[str, object]]:
    """Top K (path relative to root, score) per query, with whatever xmr is importable."""
    from xmr.query import QueryPart
    from xmr.search import SearchOptions, search

    # the semantic ranking alone: since keyword fusion (docs/metadata.md) an index's file names
    # take part too, by design; the old code has no such option
    semantic = {"match": "semantic"} if "match" in SearchOptions.__dataclass_fields__ else {}
    out = []
    for q in QUERIES:
        value = q["value"] if q["kind"] == "text" else str(root / q["value"])
        res = search([QueryPart(q["kind"], value)], index_dir=index_dir, options=SearchOptions(k=K, **semantic))
        out.append(
            {
                **q,
                "results": [
                    {"path": os.path.relpath(r.path, root), "score": round(r.score, 4), "space": r.best.space}
                    for r in res.results
                ],
            }
        )
    return out


def _inside(work: Path) -> None:
    """Runs under the old code: index, then query."""
    from xmr.indexer import IndexOptions, index

    root, index_dir = work / "media", work / "index"
    report = index(
        [root], index_dir=index_dir, options=IndexOptions(workers=0, audio_window_s=WINDOW_S, audio_hop_s=WINDOW_S)
    )
    assert report.failed == 0 and report.embedded_files == len(MEDIA_SOURCES) + 1, report
    (work / "expected.json").write_text(
        json.dumps({"commit": COMMIT, "root": str(root), "queries": run_queries(index_dir, root)}, indent=1) + "\n"
    )
    # everything into the main file, so catalogue.db alone is the whole catalogue
    import sqlite3

    conn = sqlite3.connect(index_dir / "catalogue.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = work / "old"
        old.mkdir()
        archive = subprocess.run(["git", "archive", COMMIT, "xmr"], cwd=REPO, check=True, capture_output=True).stdout
        archive_path = work / "old.tar"
        archive_path.write_bytes(archive)
        with tarfile.open(archive_path) as tar:
            tar.extractall(old, filter="data")
        media = FIXTURE / "media"
        for rel, src in MEDIA_SOURCES.items():
            (media / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / src, media / rel)
        build_collection(work / "media", media)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(old), str(REPO / "tests")]),
            "XMR_BACKEND_CLIP": "fake_encoders:FakeClip",
            "XMR_BACKEND_CLAP": "fake_encoders:FakeClap",
            "XMR_HOME": str(work / "home"),
            "XMR_MODELS_DIR": str(work / "models"),
            "XMR_OFFLINE": "1",
        }
        code = (
            f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r}); import make_old_index as m; "
            f"m._inside(m.Path({str(work)!r}))"
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=work)
        # the catalogue (WAL checkpointed) and the ANN files, no lock or cache files, as one
        # xz tarball: the vectors are random floats, but the tables around them compress
        index_dir = work / "index"
        members = [index_dir / "catalogue.db", *sorted(f for f in (index_dir / "ann").iterdir() if f.suffix == ".hnsw")]

        def plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = MTIME_NS // 10**9  # the ANN file's mtime is checked after extraction
            return info

        with tarfile.open(FIXTURE / "index.tar.xz", "w:xz") as tar:
            for f in members:
                tar.add(f, arcname=str(f.relative_to(work)), filter=plain)
        shutil.copyfile(work / "expected.json", FIXTURE / "expected.json")


if __name__ == "__main__":
    main()
