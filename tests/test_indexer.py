"""Incremental indexing through the library API, with the deterministic test encoders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import fake_encoders
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from xmr import paths
from xmr.catalogue import Catalogue
from xmr.indexer import IndexOptions, _NoProgress, index

pytestmark = pytest.mark.usefixtures("fake_encoders")

WORDS = "river mountain violin thunder kitten harbour lantern meadow engine whisper copper orchard".split()


def make_image(path: Path, seed: int, size: int = 48) -> None:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


def make_audio(path: Path, seed: int, seconds: float = 1.5, sr: int = 16000) -> None:
    t = np.arange(int(seconds * sr)) / sr
    freq = 220 + 40 * seed
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def make_text(path: Path, seed: int, words: int = 60) -> None:
    rng = np.random.default_rng(seed)
    path.write_text(" ".join(rng.choice(WORDS, words)) + "\n", encoding="utf-8")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    make_image(root / "a.png", 1)
    make_image(root / "sub" / "b.jpg", 2)
    make_audio(root / "tone.wav", 1)
    make_text(root / "notes.txt", 1)
    make_text(root / "sub" / "essay.md", 2, words=400)
    (root / "blob.bin").write_bytes(bytes(range(256)) * 4)
    return root


def _index(root: Path, **opts: object):
    return index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=0, checkpoint_ann=False, **opts))


def _cat() -> Catalogue:
    return Catalogue.open(paths.index_dir(), readonly=True)


def _vector_ids(cat: Catalogue, h: str) -> set[int]:
    rows = cat.conn.execute("SELECT v.id FROM vectors v JOIN segments s ON s.id = v.segment_id WHERE s.hash = ?", (h,))
    return {r[0] for r in rows}


def _hash_of(cat: Catalogue, path: Path) -> str:
    row = cat.file_by_path(str(path))
    assert row is not None, path
    return row.hash


def test_first_run_indexes_every_modality(tree: Path) -> None:
    report = _index(tree)
    assert report.found == 6
    assert report.new == 6
    assert report.embedded_files == 5
    assert report.skipped == 1  # blob.bin is neither image, audio nor text
    assert report.failed == 0
    with _cat() as cat:
        status = {r.path: (r.modality, r.status) for r in cat.files_under(str(tree)).values()}
        assert status[str(tree / "a.png")] == ("image", "indexed")
        assert status[str(tree / "tone.wav")] == ("audio", "indexed")
        assert status[str(tree / "notes.txt")] == ("text", "indexed")
        assert status[str(tree / "blob.bin")] == ("other", "skipped")
        # text goes to both spaces, images to clip, audio to clap
        spaces = dict(
            cat.conn.execute(
                "SELECT f.modality, group_concat(DISTINCT e.space) FROM files f JOIN encodings e ON e.hash = f.hash"
                " GROUP BY f.modality"
            ).fetchall()
        )
        assert sorted(spaces["text"].split(",")) == ["clap", "clip"]
        assert spaces["image"] == "clip"
        assert spaces["audio"] == "clap"
        long_text = cat.file_by_path(str(tree / "sub" / "essay.md"))
        n = cat.conn.execute(
            "SELECT COUNT(*) FROM segments WHERE hash = ? AND space = 'clip'", (long_text.hash,)
        ).fetchone()[0]
        assert n > 1  # split into passages
        assert cat.integrity_check() == "ok"


def test_unchanged_reindex_reads_nothing_and_embeds_nothing(tree: Path) -> None:
    _index(tree)
    before = dict(fake_encoders.CALLS)
    with _cat() as cat:
        vectors_before = cat.conn.execute("SELECT id, vector FROM vectors ORDER BY id").fetchall()
    report = _index(tree)
    assert report.unchanged == report.found == 6
    assert report.files_read == 0 and report.bytes_read == 0
    assert report.embedded_files == 0 and report.segments == 0
    assert fake_encoders.CALLS == before
    with _cat() as cat:
        assert cat.conn.execute("SELECT id, vector FROM vectors ORDER BY id").fetchall() == vectors_before
        last = cat.last_run("index")
        assert last["status"] == "completed" and last["counts"]["files_read"] == 0
        assert cat.integrity_check() == "ok"


def test_unchanged_reindex_does_not_open_files(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _index(tree)
    import builtins

    real_open = builtins.open
    opened: list[str] = []

    def spy(file, *a, **k):  # type: ignore[no-untyped-def]
        if str(file).startswith(str(tree)):
            opened.append(str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", spy)
    _index(tree)
    assert opened == []


def test_modified_file_is_reembedded_and_old_vectors_removed(tree: Path) -> None:
    _index(tree)
    target = tree / "notes.txt"
    with _cat() as cat:
        old_hash = _hash_of(cat, target)
        assert _vector_ids(cat, old_hash)
    make_text(target, 99)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    report = _index(tree)
    assert report.changed == 1 and report.embedded_files == 1 and report.unchanged == 5
    with _cat() as cat:
        new_hash = _hash_of(cat, target)
        assert new_hash != old_hash
        assert _vector_ids(cat, old_hash) == set()
        assert cat.conn.execute("SELECT COUNT(*) FROM encodings WHERE hash = ?", (old_hash,)).fetchone()[0] == 0
        assert len(_vector_ids(cat, new_hash)) >= 2  # clip + clap passages
        assert cat.integrity_check() == "ok"


def test_deleted_file_rows_are_removed(tree: Path) -> None:
    _index(tree)
    victim = tree / "sub" / "b.jpg"
    with _cat() as cat:
        h = _hash_of(cat, victim)
    victim.unlink()
    report = _index(tree)
    assert report.removed == 1
    with _cat() as cat:
        assert cat.file_by_path(str(victim)) is None
        assert _vector_ids(cat, h) == set()
        assert cat.conn.execute("SELECT COUNT(*) FROM segments WHERE hash = ?", (h,)).fetchone()[0] == 0


def test_renamed_file_keeps_its_vectors(tree: Path) -> None:
    _index(tree)
    src, dst = tree / "tone.wav", tree / "sub" / "renamed-tone.wav"
    with _cat() as cat:
        h = _hash_of(cat, src)
        ids = _vector_ids(cat, h)
    calls = dict(fake_encoders.CALLS)
    src.rename(dst)
    report = _index(tree)
    assert report.moved == 1 and report.removed == 1 and report.embedded_files == 0
    assert fake_encoders.CALLS == calls
    with _cat() as cat:
        assert cat.file_by_path(str(src)) is None
        assert _hash_of(cat, dst) == h
        assert _vector_ids(cat, h) == ids


def test_duplicate_content_is_embedded_once(tree: Path) -> None:
    _index(tree)
    shutil.copy2(tree / "a.png", tree / "copy-of-a.png")
    calls = dict(fake_encoders.CALLS)
    report = _index(tree)
    assert report.new == 1 and report.duplicates == 1 and report.embedded_files == 0
    assert fake_encoders.CALLS == calls
    with _cat() as cat:
        h = _hash_of(cat, tree / "a.png")
        assert _hash_of(cat, tree / "copy-of-a.png") == h
        assert cat.conn.execute("SELECT COUNT(*) FROM segments WHERE hash = ?", (h,)).fetchone()[0] == 1
    # removing one copy keeps the content for the other
    (tree / "a.png").unlink()
    _index(tree)
    with _cat() as cat:
        assert len(_vector_ids(cat, h)) == 1


def test_identical_files_in_one_batch_embed_once(tmp_path: Path) -> None:
    root = tmp_path / "dups"
    root.mkdir()
    make_image(root / "x.png", 5)
    for i in range(3):
        shutil.copy(root / "x.png", root / f"x{i}.png")
    before = fake_encoders.CALLS["images"]
    report = _index(root)
    assert report.embedded_files == 1 and report.duplicates == 3
    assert fake_encoders.CALLS["images"] - before == 1


def test_broken_files_are_recorded_and_the_run_continues(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    make_image(root / "good.png", 3)
    good = (root / "good.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 3])
    (root / "empty.wav").write_bytes(b"")
    (root / "garbage.txt").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    report = _index(root)
    assert report.embedded_files == 1
    assert report.failed == 3
    with _cat() as cat:
        errs = {Path(e["path"]).name: e["error"] for e in cat.errors()}
    assert set(errs) == {"truncated.png", "empty.wav", "garbage.txt"}
    for reason in errs.values():
        assert reason and "\n" not in reason and "Traceback" not in reason
    # unchanged broken files are not retried (no re-read) ...
    again = _index(root)
    assert again.files_read == 0 and again.failed == 0
    # ... unless asked to
    retry = _index(root, retry_errors=True)
    assert retry.failed == 3


def test_modalities_limit_the_work_and_pending_files_resume(tree: Path) -> None:
    report = _index(tree, modalities=["image"])
    assert report.embedded_files == 2
    with _cat() as cat:
        assert cat.file_by_path(str(tree / "tone.wav")).status == "pending"
        assert cat.conn.execute("SELECT COUNT(*) FROM encodings WHERE space = 'clap'").fetchone()[0] == 0
    report = _index(tree)
    assert report.embedded_files == 3  # the audio and the two texts
    with _cat() as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM files WHERE status = 'pending'").fetchone()[0] == 0


class _PoolSpy:
    """Counts the decode pools an index run starts (wraps the real executor)."""

    started = 0

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from concurrent.futures import ProcessPoolExecutor

        from xmr.index import schedule

        spy = self

        class Counting(ProcessPoolExecutor):
            def __init__(self, *args: object, **kwargs: object) -> None:
                spy.started += 1
                super().__init__(*args, **kwargs)

        monkeypatch.setattr(schedule, "ProcessPoolExecutor", Counting)


def test_worker_processes_give_the_same_catalogue_as_inline(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline_dir, pool_dir = tmp_path / "inline", tmp_path / "pool"
    # enough files to decode that the pool is used rather than the inline fast path
    for i in range(5):
        make_text(tree / f"extra{i}.txt", 100 + i)
        make_image(tree / f"extra{i}.png", 100 + i)
    pools = _PoolSpy(monkeypatch)
    index([tree], index_dir=inline_dir, options=IndexOptions(workers=0, checkpoint_ann=False))
    assert pools.started == 0
    index([tree], index_dir=pool_dir, options=IndexOptions(workers=2, checkpoint_ann=False))
    assert pools.started == 1

    def dump(d: Path) -> list[tuple]:
        with Catalogue.open(d, readonly=True) as cat:
            return cat.conn.execute(
                "SELECT f.path, f.hash, f.status, s.space, s.seq, s.char_start, v.vector FROM files f"
                " LEFT JOIN segments s ON s.hash = f.hash LEFT JOIN vectors v ON v.segment_id = s.id"
                " ORDER BY f.path, s.space, s.seq"
            ).fetchall()

    assert dump(inline_dir) == dump(pool_dir)


def test_text_only_work_is_prepared_inline_without_a_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # reading a note costs far less than embedding it; a decode worker would only take a core
    root = tmp_path / "notes"
    root.mkdir()
    for i in range(20):
        make_text(root / f"note{i}.txt", i)
    (root / "page.html").write_text("<html><body><p>a page about the sea</p></body></html>", encoding="utf-8")
    pools = _PoolSpy(monkeypatch)
    report = index([root], index_dir=tmp_path / "idx", options=IndexOptions(workers=2, checkpoint_ann=False))
    assert report.embedded_files == 21 and report.failed == 0, report.errors
    assert pools.started == 0
    for i in range(8):  # eight images to decode: now the pool pays
        make_image(root / f"photo{i}.png", i)
    report = index([root], index_dir=tmp_path / "idx", options=IndexOptions(workers=2, checkpoint_ann=False))
    assert report.embedded_files == 8 and pools.started == 1


def test_short_texts_are_embedded_in_long_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a commit batch counts a text by its length: one-line notes fill it by the hundred, so the
    # text encoders get calls long enough to sort by length (a batch of 64 segments held 64 notes)
    import fake_encoders

    calls: list[int] = []
    real = fake_encoders.FakeClip.embed_texts

    def spy(self, texts):
        calls.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(fake_encoders.FakeClip, "embed_texts", spy)
    root = tmp_path / "notes"
    root.mkdir()
    for i in range(900):
        make_text(root / f"note{i:03d}.txt", i, words=8)
    report = index([root], index_dir=tmp_path / "idx", options=IndexOptions(workers=0, checkpoint_ann=False))
    assert report.embedded_files == 900 and report.failed == 0, report.errors
    assert sum(calls) >= 900 and max(calls) >= 256, calls
    assert calls[0] <= 64  # the first batches stay small: the model starts while files are read


def test_a_commit_batch_counts_texts_by_length() -> None:
    from xmr.indexer import MIN_TEXT_SHARE, PASSAGE_CHARS, _Item, _Prepared, _segment_estimate

    item = _Item("/x", "/", 1, 0, None, None, None, None)
    note = _Prepared(item=item, text="buy milk")
    long = _Prepared(item=item, text="w" * (10 * PASSAGE_CHARS))
    image = _Prepared(item=item, pixels=np.zeros((3, 2, 2), np.float32))
    assert _segment_estimate(note) == MIN_TEXT_SHARE
    assert _segment_estimate(long) == 10
    assert _segment_estimate(image) == 1


def test_decode_workers_run_below_the_encoder() -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from xmr import indexer

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=indexer._init_worker) as pool:
        child = pool.submit(os.nice, 0).result()
    assert child == min(19, os.nice(0) + indexer.WORKER_NICE)


def test_hidden_and_excluded_files(tree: Path) -> None:
    (tree / ".hidden").mkdir()
    make_text(tree / ".hidden" / "secret.txt", 7)
    make_text(tree / "draft.tmp.txt", 8)
    (tree / ".xmrignore").write_text("sub/\n")
    report = _index(tree, excludes=["*.tmp.txt"])
    with _cat() as cat:
        names = {Path(p).name for p in cat.files_under(str(tree))}
    assert "secret.txt" not in names and "draft.tmp.txt" not in names and "essay.md" not in names
    assert report.found == len(names)
    report = _index(tree, include_hidden=True)
    with _cat() as cat:
        names = {Path(p).name for p in cat.files_under(str(tree))}
    assert "secret.txt" in names and ".xmrignore" in names


# -- regressions found in review ---------------------------------------------------------------


def test_changed_file_does_not_take_the_vectors_of_a_copy_moved_in_the_same_run(tmp_path: Path) -> None:
    root = tmp_path / "mg"
    root.mkdir()
    make_image(root / "a.png", 1)
    _index(root)
    (root / "a.png").rename(root / "b.png")  # b now holds a's old content ...
    make_image(root / "a.png", 2)  # ... and a new content takes the old name
    report = _index(root)
    assert report.failed == 0
    with _cat() as cat:
        for name in ("a.png", "b.png"):
            row = cat.file_by_path(str(root / name))
            assert row.status == "indexed"
            assert _vector_ids(cat, row.hash), f"{name} has no vectors"


def test_whitespace_only_text_is_a_file_error_not_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "blank"
    root.mkdir()
    (root / "blank.txt").write_text("  \n\t\n")
    make_text(root / "ok.txt", 1, words=20)
    report = _index(root)
    assert report.failed == 1 and report.embedded_files == 1
    with _cat() as cat:
        assert [Path(e["path"]).name for e in cat.errors()] == ["blank.txt"]


def test_a_hidden_folder_indexed_by_name_survives_indexing_its_parent(tmp_path: Path) -> None:
    root = tmp_path / "mh"
    (root / ".secret").mkdir(parents=True)
    make_image(root / ".secret" / "s.png", 1)
    make_image(root / "v.png", 2)
    _index(root / ".secret")
    report = _index(root)
    assert report.removed == 0
    with _cat() as cat:
        assert cat.file_by_path(str(root / ".secret" / "s.png")).status == "indexed"
    (root / ".secret" / "s.png").unlink()
    assert _index(root).removed == 1  # really gone: removed


def test_files_of_other_roots_catch_up_after_a_model_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    for i, r in enumerate((r1, r2)):
        r.mkdir()
        make_image(r / "p.png", 10 + i)
    index([r1, r2], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    monkeypatch.setenv("XMR_CLIP_MODEL", "ViT-B-16:other-tag")
    index([r1], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    # r2 still has the old model's vectors only; the next run over it re-embeds it
    report = index([r1, r2], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    assert report.embedded_files == 1
    with _cat() as cat:
        model = cat.active_model("clip")
        assert model == "fake-clip:ViT-B-16:other-tag"
        h = cat.file_by_path(str(r2 / "p.png")).hash
        assert cat.encoded_spaces(h, {"clip": model}) == {"clip"}


# -- the embedding seam (xmr.index.embed) --------------------------------------------------------


class _RecordingEmbedder:
    """An Embedder of the test's own that delegates to LocalEmbedder and records the calls."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.loads: list[str] = []
        self.batches: list[int] = []

    def check_available(self, spaces):  # type: ignore[no-untyped-def]
        self.inner.check_available(spaces)

    def load(self, space):  # type: ignore[no-untyped-def]
        self.loads.append(space)
        return self.inner.load(space)

    def loaded(self):  # type: ignore[no-untyped-def]
        return self.inner.loaded()

    def decoded(self, work, triage):  # type: ignore[no-untyped-def]
        return self.inner.decoded(work, triage)

    def redecode(self, batch, triage):  # type: ignore[no-untyped-def]
        self.inner.redecode(batch, triage)

    def embed(self, batch, spaces_for):  # type: ignore[no-untyped-def]
        self.batches.append(len(batch))
        return self.inner.embed(batch, spaces_for)

    def encoder(self, space):  # type: ignore[no-untyped-def]
        return self.inner.encoder(space)


def test_the_indexer_is_handed_its_embedder(tree: Path) -> None:
    from xmr.index.embed import LocalEmbedder
    from xmr.settings import Settings

    options = IndexOptions(workers=0, checkpoint_ann=False)
    embedder = _RecordingEmbedder(LocalEmbedder(Settings.from_env(), options))
    report = index([tree], index_dir=paths.index_dir(), options=options, embedder=embedder)
    assert report.failed == 0 and report.embedded_files == 5, report.errors
    assert sum(embedder.batches) == report.found == 6  # every file went through it, blob.bin included
    assert sorted(embedder.loads) == ["clap", "clip"]
    with _cat() as cat:
        assert cat.active_model("clip") == embedder.loaded()["clip"].model_id

    # a long-lived embedder keeps its models across runs: a new file needs no load
    built = len(fake_encoders.BUILT)
    make_text(tree / "more.txt", 9)
    report = index([tree], index_dir=paths.index_dir(), options=options, embedder=embedder)
    assert report.new == 1 and report.embedded_files == 1 and embedder.batches[-1] == 1
    assert fake_encoders.BUILT[built:] == [] and sorted(embedder.loads) == ["clap", "clip"]


def test_decode_workers_never_load_the_catalogue() -> None:
    # what a spawned worker imports to run xmr.index.decode: the catalogue is not among it
    code = "import sys, xmr.index.decode; print(sorted(m for m in sys.modules if m.startswith('xmr.catalogue')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class Details(_NoProgress):
    """A progress sink that keeps the detail lines (the rate column of the terminal's bar)."""

    def __init__(self) -> None:
        self.details: list[str] = []

    def detail(self, text: str) -> None:
        self.details.append(text)


def test_a_long_file_says_it_is_being_embedded(tmp_path: Path) -> None:
    # without it, a scanned PDF's progress line stayed on "page 300 of 300" while its passages embedded
    from xmr.index.run import LONG_FILE_SEGMENTS
    from xmr.indexer import PASSAGE_CHARS

    root = tmp_path / "docs"
    root.mkdir()
    words = (LONG_FILE_SEGMENTS + 6) * PASSAGE_CHARS // 7  # words of ~7 characters with their space
    text = " ".join(np.random.default_rng(1).choice(WORDS, words))  # as the decoder normalises it: no final newline
    (root / "book.txt").write_text(text, encoding="utf-8")
    make_text(root / "note.txt", 2, words=20)
    progress = Details()
    report = index([root], index_dir=tmp_path / "idx", options=IndexOptions(workers=0, checkpoint_ann=False),
                   progress=progress)
    assert report.embedded_files == 2 and report.failed == 0, report.errors
    assert progress.details == [f"book.txt: embedding {len(text):,} characters of text"]
    # a second run embeds nothing: nothing to say
    again = Details()
    index([root], index_dir=tmp_path / "idx", options=IndexOptions(workers=0, checkpoint_ann=False), progress=again)
    assert again.details == []


def test_the_long_file_detail_names_what_it_embeds() -> None:
    from xmr.index.run import _inputs
    from xmr.indexer import _Item, _Prepared

    item = _Item("/x", "/", 1, 0, None, None, None, None)
    frame = (0.0, 1.0, np.zeros((3, 2, 2), np.float32))
    window = (0.0, 10.0, np.zeros(16, np.float32))
    pdf = _Prepared(item=item, text="abc " * 500, pages=((1, 0, 900), (2, 900, 2000)))
    assert _inputs(pdf) == "the text of 2 pages"
    assert _inputs(_Prepared(item=item, text="abc " * 500)) == "2,000 characters of text"
    video = _Prepared(item=item, frames=[frame] * 3, audio_windows=[window] * 2)
    assert _inputs(video) == "3 frames and 2 audio windows"
    assert _inputs(_Prepared(item=item, audio_windows=[window] * 7)) == "7 audio windows"


@pytest.mark.parametrize("single_max", [2000, 1])
def test_encoded_hashes_answer_alike_by_lookups_and_by_the_whole_set(
    tree: Path, monkeypatch: pytest.MonkeyPatch, single_max: int
) -> None:
    # a run over a few files of a huge index asks about each content (one query each); past
    # SINGLE_MAX questions it reads the whole set once: the answers must not depend on which
    from xmr.catalogue.content import EncodedHashes

    monkeypatch.setattr(EncodedHashes, "SINGLE_MAX", single_max)
    index([tree], index_dir=paths.index_dir(), options=IndexOptions(workers=0, checkpoint_ann=False))
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        rows = [r for r in cat.files_under(str(tree)).values() if r.status == "indexed"]
        clip = cat.encoded_hashes("clip", cat.active_model("clip"))
        other = cat.encoded_hashes("clip", "another-model")
        for r in rows:  # images and texts are in clip; the sound is not
            assert (r.hash in clip) == (r.modality in ("image", "text")), r.path
            assert r.hash not in other
        assert "0" * 32 not in clip
        assert (clip._all is not None) == (single_max == 1)
    monkeypatch.setattr("xmr.catalogue.meta._LOOKUP_MAX", single_max)  # and the metadata back-fill's lookups
    with Catalogue.open(paths.index_dir()) as cat:
        cat.conn.execute("DELETE FROM file_meta WHERE file_id = ?", (rows[0].id,))
        assert cat.files_lacking_meta([r.id for r in rows]) == {rows[0].id} == cat.files_lacking_meta()
        assert cat.files_lacking_meta([r.id for r in rows[1:]]) == set()
