"""Per-tower ONNX query encoders against the full models (random weights, real architectures).

Each tower, exported once and loaded alone, must give the vectors the backend
gives for the same inputs within 1e-5, and the torch-free tokenizers the ids
of the backends' own tokenizers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from xmr.encoders import load_encoder, towers
from xmr.encoders.query import query_encoder
from xmr.preprocess.audio import load_audio, windows
from xmr.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"
TEXTS = [
    "a dog barking",
    "",
    "Hello, World! &amp; caf\u00e9 \u00fcber 123 4.5",
    "  multiple   spaces\n\tand a newline ",
    "It's what they'd've done, <mask> or not",
    "\u6f22\u5b57\u3068\u304b\u306a \U0001f600 emoji",
    "the tide came in over the rocks and the gulls rose from the water " * 8,  # truncated at 77 tokens
    "x" * 400,
]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(real_models: dict[str, str]) -> dict[str, tuple[object, object]]:
    """space -> (full backend encoder, ONNX query encoder of the same model)."""
    mp = pytest.MonkeyPatch()
    for key, value in real_models.items():
        mp.setenv(key, value)
    settings = Settings.from_env()
    out = {}
    for space in ("clip", "clap"):
        full = load_encoder(space, settings)
        info = full.info
        row = {
            "id": info.model_id,
            "space": space,
            "spec": settings.clip_model if space == "clip" else settings.clap_model,
            "name": info.name,
            "pretrained": info.pretrained,
            "checkpoint_sha256": info.checkpoint_sha256,
            "dim": info.dim,
            "preprocessing": info.preprocessing,
        }
        q = query_encoder(space, row, settings)
        assert isinstance(q, towers.OnnxQueryEncoder)
        out[space] = (full, q)
    out["settings"] = settings
    yield out
    mp.undo()


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == np.float32
    return float(np.max(np.abs(a - b)))


@pytest.mark.parametrize("space", ["clip", "clap"])
def test_text_tower_equals_the_full_model(models, space: str) -> None:
    full, q = models[space]
    got, want = q.embed_texts(TEXTS), full.embed_texts(TEXTS)
    assert q.engine == "onnx"
    assert _max_diff(got, want) < 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the text graphs take any sequence length: a lone short text runs on its own tokens only
    tower = q.tower("text")
    assert tower.manifest["dynamic_length"] is True
    assert all(isinstance(i.shape[1], str) for i in tower.session.get_inputs())
    short = [t for t in TEXTS if len(t) < 60]
    assert _max_diff(q.embed_texts(short), want[: len(short)]) < 1e-5  # a batch cut to its longest
    for i, text in enumerate(TEXTS):
        assert _max_diff(q.embed_texts([text]), want[i : i + 1]) < 1e-5, text


def test_clip_image_tower_equals_the_full_model(models) -> None:
    full, q = models["clip"]
    assert q.image_preprocessor().describe() == full.image_preprocessor().describe()
    files = sorted(p for p in (FIXTURES / "images").iterdir() if p.suffix in (".jpg", ".png", ".webp", ".gif"))
    pixels = np.stack([full.image_preprocessor()(p) for p in files])
    assert len(pixels) >= 5
    assert _max_diff(q.embed_images(pixels), full.embed_images(pixels)) < 1e-5
    assert q.engine == "onnx"


def test_clap_audio_tower_equals_the_full_model(models) -> None:
    full, q = models["clap"]
    # a 10 s window, a short clip (repeat-padded) and the windows of a 35 s file
    names = ["chord_c_major.wav", "high_voice.mp3", "long_35s.ogg"]
    wins = np.stack([w.samples for n in names for w in windows(load_audio(FIXTURES / "audio" / n))])
    assert len(wins) >= 5
    assert _max_diff(q.embed_audio(wins), full.embed_audio(wins)) < 1e-5
    assert q.engine == "onnx"


@pytest.mark.parametrize("space", ["clip", "clap"])
def test_text_passages_and_token_counts_match_the_backend(models, space: str) -> None:
    full, q = models[space]
    text = (FIXTURES / "text" / "lighthouses_long.txt").read_text(encoding="utf-8")
    assert [(p.text, p.start, p.end) for p in q.split_text(text)] == [
        (p.text, p.start, p.end) for p in full.split_text(text)
    ]
    for t in TEXTS:
        assert q.count_tokens(t) == full.count_tokens(t)


def test_clip_tokenizer_matches_open_clip() -> None:
    import open_clip

    from xmr.encoders.clip_tokenizer import ClipTokenizer

    corpus = [*TEXTS, "&lt;b&gt;bold&lt;/b&gt;", "\u00c9COLE \u00e9l\u00e8ve", "A\u0301 combining", "12,345.67%", "\t"]
    assert np.array_equal(ClipTokenizer()(corpus), open_clip.get_tokenizer("ViT-B-32")(corpus).numpy())


def test_plain_ascii_skips_ftfy_without_changing_a_token() -> None:
    """The fast path is taken only for text that ftfy and html.unescape leave as it is."""
    import html
    import random

    import ftfy

    from xmr.encoders import clip_tokenizer

    def reference(text: str) -> str:
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).strip().lower()

    rng = random.Random(0)
    alphabet = [chr(c) for c in range(128)] + ["\u00e9", "\u201c", "\u2028", "\r\n"]
    corpus = [*TEXTS, "tom &amp; jerry", "caf&eacute;", "a\x1b[31mred", "del\x7f", "cr\rlf", "tab\there"]
    corpus += ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(3000)]
    corpus += ["".join(rng.choices([chr(c) for c in range(9, 127)], k=rng.randint(0, 40))) for _ in range(3000)]
    plain = [t for t in corpus if clip_tokenizer._PLAIN.fullmatch(t)]
    assert len(plain) > 500 and len(plain) < len(corpus) - 1000  # both paths exercised
    assert all(ftfy.fix_text(t) == t and html.unescape(t) == t for t in plain)
    assert [clip_tokenizer._clean(t) for t in corpus] == [reference(t) for t in corpus]


def test_clip_tokenizer_tables_come_from_their_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmr.encoders import clip_tokenizer
    from xmr.encoders.clip_tokenizer import ClipTokenizer

    want = ClipTokenizer()(TEXTS)
    first = ClipTokenizer(cache_dir=tmp_path)
    (cached,) = tmp_path.glob("clip-bpe-*.marshal")
    assert np.array_equal(first(TEXTS), want)

    def no_build(path: Path) -> None:
        raise AssertionError("tables rebuilt although cached")

    with monkeypatch.context() as m:
        m.setattr(clip_tokenizer, "_build_tables", no_build)
        second = ClipTokenizer(cache_dir=tmp_path)
    assert second.encoder == first.encoder and second.bpe_ranks == first.bpe_ranks
    assert np.array_equal(second(TEXTS), want)

    cached.write_bytes(cached.read_bytes()[:1000])  # a damaged copy is rebuilt and rewritten
    assert np.array_equal(ClipTokenizer(cache_dir=tmp_path)(TEXTS), want)
    assert len(cached.read_bytes()) > 1000

    blocked = tmp_path / "a-file"  # a models dir that cannot be made (root ignores modes): built, nothing raised
    blocked.write_text("")
    assert np.array_equal(ClipTokenizer(cache_dir=blocked / "towers")(TEXTS), want)


def test_roberta_tokenizer_matches_the_backend(models, tmp_path: Path) -> None:
    from xmr.encoders.clap import CONTEXT_LENGTH
    from xmr.encoders.roberta_tokenizer import RobertaTokenizer, save_backend_tokenizer

    full, _ = models["clap"]
    save_backend_tokenizer(full._tokenizer, tmp_path / "tokenizer.json")
    mine = RobertaTokenizer(tmp_path / "tokenizer.json", CONTEXT_LENGTH)
    want = full._tokenizer(TEXTS, padding="max_length", truncation=True, max_length=CONTEXT_LENGTH, return_tensors="np")
    got = mine(TEXTS)
    assert np.array_equal(got["input_ids"], want["input_ids"])
    assert np.array_equal(got["attention_mask"], want["attention_mask"])
    ascii_only = [t for t in TEXTS if t.isascii()]
    fresh = RobertaTokenizer(tmp_path / "tokenizer.json", CONTEXT_LENGTH)
    fresh(ascii_only)
    assert fresh._tables is not None and fresh._rust is None  # typed queries never parse the JSON


def _rust_reference(path: Path, max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
    counter = Tokenizer.from_file(str(path))
    counter.no_truncation()
    counter.no_padding()
    return tok, counter


def test_roberta_ascii_path_matches_tokenizers_on_fuzzed_text(models, tmp_path: Path) -> None:
    import random

    from xmr.encoders.roberta_tokenizer import RobertaTokenizer, save_backend_tokenizer

    full, _ = models["clap"]
    path = tmp_path / "tokenizer.json"
    save_backend_tokenizer(full._tokenizer, path)
    tok, counter = _rust_reference(path, 77)
    rng = random.Random(1)
    words = ["dog", "barking", " the", "'s", "'ll", "'re", "<mask>", "<s>", "</s>", "<pad>", "<unk>", "12", "3.5"]
    alphabet = [chr(c) for c in range(128)] + words
    corpus = ["".join(rng.choices(alphabet, k=rng.randint(0, 60))) for _ in range(2000)]
    corpus += [" ".join(rng.choices(words + ["a", " ", "  ", "\t", "\n"], k=rng.randint(1, 120))) for _ in range(300)]
    corpus += ["", " ", "   x   ", "don't 'S 'LL", "x" * 400, "a\x1cb\x1fc\x0bd\x0ce\rf"]
    mine = RobertaTokenizer(path, 77)
    got, want = mine(corpus), tok.encode_batch(corpus)
    assert mine._rust is None
    assert [list(r) for r in got["input_ids"]] == [e.ids for e in want]
    assert [list(r) for r in got["attention_mask"]] == [e.attention_mask for e in want]
    assert [mine.count_tokens(t) for t in corpus[:500]] == [
        len(counter.encode(t, add_special_tokens=False).ids) for t in corpus[:500]
    ]
    assert mine._counter is None


def test_roberta_tables_cache_and_the_tokenizers_fallback(models, tmp_path: Path, monkeypatch) -> None:
    import json

    from xmr.encoders import roberta_tokenizer
    from xmr.encoders.roberta_tokenizer import RobertaTokenizer, save_backend_tokenizer

    full, _ = models["clap"]
    path = tmp_path / "tokenizer.json"
    save_backend_tokenizer(full._tokenizer, path)
    tok, _ = _rust_reference(path, 77)
    texts = ["a dog barking", "caf\u00e9 \u00fcber", "\u6f22\u5b57 <mask> x"]
    RobertaTokenizer(path, 77)
    assert len(list(tmp_path.glob(".tokenizer-*.marshal"))) == 1
    with monkeypatch.context() as m:  # the second load reads the marshal copy, not the JSON
        m.setattr(roberta_tokenizer.RobertaTokenizer, "_read_tables", lambda self: pytest.fail("JSON re-read"))
        cached = RobertaTokenizer(path, 77)
    assert cached._tables is not None
    assert [list(r) for r in cached(texts)["input_ids"]] == [e.ids for e in tok.encode_batch(texts)]
    assert cached._rust is not None  # non-ASCII text went to tokenizers

    data = json.loads(path.read_text(encoding="utf-8"))
    data["normalizer"] = {"type": "Lowercase"}  # a configuration the ASCII path does not reproduce
    odd = tmp_path / "odd" / "tokenizer.json"
    odd.parent.mkdir()
    odd.write_text(json.dumps(data), encoding="utf-8")
    odd_tok, _ = _rust_reference(odd, 77)
    lowered = RobertaTokenizer(odd, 77)
    assert lowered._tables is None
    assert [list(r) for r in lowered(["A DOG Barking"])["input_ids"]] == [odd_tok.encode("A DOG Barking").ids]


def test_each_tower_is_its_own_file_keyed_by_the_checkpoint(models) -> None:
    for space in ("clip", "clap"):
        full, q = models[space]
        for tower in towers.TOWERS[space]:
            folder = q.folder(tower)
            assert (folder / "manifest.json").is_file() and (folder / "model.onnx").is_file()
            assert full.info.checkpoint_sha256[:16] in str(folder)
            assert folder.stat().st_mode & 0o077 == 0  # private, like the index


def _row(full, settings, sha: str | None = None) -> dict:
    info = full.info
    return {"id": info.model_id, "space": "clip", "spec": settings.clip_model, "name": info.name,
            "pretrained": info.pretrained, "checkpoint_sha256": sha or info.checkpoint_sha256, "dim": info.dim,
            "preprocessing": {}}


def test_a_tower_the_exporter_does_not_cover_falls_back_to_the_backend(models, monkeypatch, tmp_path) -> None:
    full, _ = models["clip"]
    settings = models["settings"]
    monkeypatch.setenv("XMR_MODELS_DIR", str(tmp_path / "models"))  # no tower exported there yet
    row = _row(full, settings)
    calls = []

    def refuse(enc, names, **kw):
        calls.append(names)
        raise towers.TowerUnsupported("not covered in this test")

    monkeypatch.setattr("xmr.encoders.tower_export.export_towers", refuse)
    fallback = query_encoder("clip", row, settings)
    got = fallback.embed_texts(["a dog barking"])
    assert calls and fallback.engine == "backend" and "not covered" in fallback.fallback_reason
    assert _max_diff(got, full.embed_texts(["a dog barking"])) == 0.0
    # remembered: the next query encoder goes to the backend without trying again
    assert not isinstance(query_encoder("clip", row, settings), towers.OnnxQueryEncoder)


def test_a_checkpoint_that_changed_since_indexing_exports_nothing_under_the_old_key(models, tmp_path, monkeypatch):
    full, _ = models["clip"]
    monkeypatch.setenv("XMR_MODELS_DIR", str(tmp_path / "models"))
    row = _row(full, models["settings"], sha="0" * 64)  # the catalogue's sha; the file on disk has another
    q = query_encoder("clip", row, models["settings"])
    got = q.embed_texts(["a dog barking"])
    assert q.engine == "backend" and "changed since it was indexed" in q.fallback_reason
    assert _max_diff(got, full.embed_texts(["a dog barking"])) == 0.0
    assert not list((tmp_path / "models").rglob("manifest.json"))


def test_a_damaged_tower_file_falls_back_to_the_backend(models, tmp_path, monkeypatch):
    full, q = models["clip"]
    monkeypatch.setenv("XMR_MODELS_DIR", str(tmp_path / "models"))
    shutil.copytree(q.folder("text"), tmp_path / "copy")
    fresh = query_encoder("clip", _row(full, models["settings"]), models["settings"])
    shutil.copytree(tmp_path / "copy", fresh.folder("text"))
    (fresh.folder("text") / "model.onnx").write_bytes(b"not a model")
    got = fresh.embed_texts(["a dog barking"])
    assert fresh.engine == "backend" and "cannot load the text tower" in fresh.fallback_reason
    assert _max_diff(got, full.embed_texts(["a dog barking"])) == 0.0


@pytest.mark.parametrize("space", ["clip", "clap"])
def test_an_export_that_strays_from_the_backend_is_refused_and_leaves_nothing(models, tmp_path, monkeypatch, space):
    from xmr.encoders import tower_export

    full, _ = models[space]
    backend = full.backend() if callable(getattr(full, "backend", None)) else full
    real_wrap = tower_export._wrap

    def skewed(encoder, tower):  # the traced graph drifts from the backend by ~1e-4 per unit-vector coordinate
        import torch

        inner, probes, extra = real_wrap(encoder, tower)

        class Skewed(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args):
                out = self.inner(*args)
                return out + 1e-2 * out.abs().mean() * torch.linspace(-1.0, 1.0, out.shape[-1])

        return Skewed(), probes, extra

    monkeypatch.setattr(tower_export, "_wrap", skewed)
    with pytest.raises(towers.TowerUnsupported, match="differs from torch"):
        tower_export.export_towers(backend, ["text"], root=tmp_path)
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("manifest.json"))


def test_ascii_pre_tokenizer_splits_as_open_clips_pattern() -> None:
    """The ``re`` pattern used on ASCII text finds the same pieces as the ``regex`` one."""
    import random

    from xmr.encoders import clip_tokenizer
    from xmr.encoders.clip_tokenizer import ClipTokenizer

    rng = random.Random(1)
    corpus = [*TEXTS, "<start_of_text>x<end_of_text>", "DON'T we'll I'M 3.14", "a_b-c__d", "\x00\x1b\x7f~"]
    corpus += ["".join(rng.choices([chr(c) for c in range(128)], k=rng.randint(0, 40))) for _ in range(3000)]
    cleaned = [c for c in map(clip_tokenizer._clean, corpus) if c.isascii()]
    assert len(cleaned) > 3000
    full = ClipTokenizer().pat
    assert [clip_tokenizer._ASCII_PAT.findall(t) for t in cleaned] == [full.findall(t) for t in cleaned]
