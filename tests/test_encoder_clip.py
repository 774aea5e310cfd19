"""The CLIP backend, end to end with random weights (no downloads).

The default architecture (ViT-B-32) is built once per module with a fixed
seed, saved to disk and loaded back through the user-facing model specs; the
results are compared with open_clip's own preprocessing and encoders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open_clip  # declared dependencies: a broken install fails here, it is never skipped
import pytest
import torch
from clip_helpers import build_random_clip, make_fake_hf_text_repo, put_in_hf_cache, sha256_of
from PIL import Image

from xmr.encoders.clip import ClipEncoder, parse_spec
from xmr.errors import ModelError, ModelMissing, UsageError
from xmr.settings import Settings

DEFAULT_SPEC = "ViT-B-32:laion2b_s34b_b79k"
DEFAULT_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
TEXTS = [
    "a photo of a cat",
    "A DOG running on the beach at sunset!",
    "über café — naïve résumé 東京",
    "",
    "word " * 200,  # longer than the context: truncated the same way by both paths
]


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """ViT-B-32 with random weights, its saved checkpoint and open_clip's references."""
    root = tmp_path_factory.mktemp("clip")
    model, preprocess = build_random_clip("ViT-B-32", seed=1234)
    weights = root / "w.pt"
    torch.save(model.state_dict(), weights)
    rng = np.random.default_rng(7)
    images = []
    for i, (w, h, fmt) in enumerate([(224, 224, "PNG"), (640, 480, "JPEG"), (150, 500, "PNG"), (333, 201, "JPEG")]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
        noise = rng.integers(0, 40, (h, w, 3))
        path = root / f"img{i}.{fmt.lower()}"
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, fmt)
        images.append(path)
    return SimpleNamespace(
        root=root,
        model=model,
        preprocess=preprocess,
        weights=weights,
        sha=sha256_of(weights),
        tokenizer=open_clip.get_tokenizer("ViT-B-32"),
        images=images,
    )


@pytest.fixture(scope="module")
def enc(ref: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> ClipEncoder:
    # module scope runs outside the per-test environment: give it its own caches
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XMR_MODELS_DIR", str(tmp_path_factory.mktemp("xmr-models")))
        mp.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-empty")))
        mp.setenv("XMR_OFFLINE", "1")
        return ClipEncoder(Settings(clip_model=f"ViT-B-32:{ref.weights}", offline=True))


def reference_image_embeddings(ref: SimpleNamespace, paths: list[Path]) -> np.ndarray:
    with torch.no_grad():
        batch = torch.stack([ref.preprocess(Image.open(p).convert("RGB")) for p in paths])
        return ref.model.encode_image(batch, normalize=True).numpy()


def reference_text_embeddings(ref: SimpleNamespace, texts: list[str]) -> np.ndarray:
    with torch.no_grad():
        return ref.model.encode_text(ref.tokenizer(texts), normalize=True).numpy()


# ----------------------------------------------------------------- light paths


def test_import_and_status_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import xmr.encoders.clip as c, xmr.preprocess.image, xmr.preprocess.text\n"
        "from xmr.settings import Settings\n"
        "st = c.ClipEncoder.status(Settings())\n"
        "assert not st.present, st\n"
        "c.parse_spec('ViT-B-32:/x/w.pt'); c.parse_spec('hf-hub:a/b')\n"
        "bad = [m for m in ('torch', 'open_clip', 'torchvision', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_parse_spec_forms(tmp_path: Path) -> None:
    s = parse_spec(DEFAULT_SPEC)
    assert (s.kind, s.arch, s.tag) == ("tag", "ViT-B-32", "laion2b_s34b_b79k")
    assert parse_spec("ViT-B-32:LAION2B-S34B-B79K").tag == "laion2b_s34b_b79k"  # open_clip's normalisation
    f = parse_spec(f"ViT-B-32:{tmp_path}/w.pt")
    assert (f.kind, f.arch, f.path) == ("file", "ViT-B-32", tmp_path / "w.pt")
    assert parse_spec("ViT-B-32:weights.safetensors").kind == "file"
    assert parse_spec("hf-hub:laion/some-repo").repo == "laion/some-repo"
    assert parse_spec(f"local-dir:{tmp_path}").path == tmp_path
    for bad in [
        "",
        "ViT-B-32",
        "NoSuchArch-99:laion2b_s34b_b79k",
        "ViT-B-32:no_such_tag",
        "hf-hub:onlyorg",
        "local-dir:",
    ]:
        with pytest.raises(UsageError):
            parse_spec(bad)
    with pytest.raises(UsageError, match="ViT-B-32"):  # close-match suggestion
        parse_spec("ViT-B32:laion2b_s34b_b79k")


@pytest.fixture
def no_model_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing model must fail while resolving files, before the architecture is built."""

    def build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built although its files are missing")

    monkeypatch.setattr(ClipEncoder, "_build", staticmethod(build))


@pytest.mark.usefixtures("no_model_build")
def test_missing_weights_offline_fails_fast_with_instructions() -> None:
    with pytest.raises(ModelMissing) as info:
        ClipEncoder(Settings(clip_model=DEFAULT_SPEC, offline=True))
    msg = str(info.value)
    assert "\n" not in msg
    for needed in (
        DEFAULT_SPEC,
        "--clip-model",
        "XMR_CLIP_MODEL",
        "xmr models download",
        "offline",
        "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K",
    ):
        assert needed in msg, needed
    st = ClipEncoder.status(Settings(clip_model=DEFAULT_SPEC))
    assert not st.present and st.source == "hf-cache" and "models--laion" in (st.location or "")


@pytest.mark.usefixtures("no_model_build")
def test_download_offline_and_failed_download_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2
    import huggingface_hub

    from xmr.encoders.clip import PROBE_TIMEOUT_S

    calls: list[tuple[str, object]] = []

    def unreachable(url: str, **kwargs: object) -> None:
        calls.append((url, kwargs.get("timeout")))
        raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not try to download after a failed probe")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    with pytest.raises(ModelMissing, match="offline"):
        ClipEncoder.download(Settings(clip_model=DEFAULT_SPEC, offline=True))
    assert calls == []  # offline: not even a probe

    # online, but the Hub cannot be reached: one quick probe, no retries, no download attempt
    for name in ("XMR_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ModelMissing, match="download failed") as info:
        ClipEncoder(Settings(clip_model=DEFAULT_SPEC, offline=False))
    assert len(calls) == 1 and DEFAULT_SPEC in str(info.value)
    assert calls[0][1] == PROBE_TIMEOUT_S <= 5  # a short timeout of its own, not the library's default


def test_missing_local_file_and_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match="weights file not found") as info:
        ClipEncoder(Settings(clip_model=f"ViT-B-32:{tmp_path}/nope.pt", offline=True))
    assert str(tmp_path / "nope.pt") in str(info.value)
    with pytest.raises(ModelMissing, match="folder not found"):
        ClipEncoder(Settings(clip_model=f"local-dir:{tmp_path}/nodir", offline=True))
    (tmp_path / "export").mkdir()
    with pytest.raises(ModelMissing, match="open_clip_config.json"):
        ClipEncoder(Settings(clip_model=f"local-dir:{tmp_path}/export", offline=True))


@pytest.mark.usefixtures("no_model_build")
def test_multilingual_model_without_tokenizer_is_missing(tmp_path: Path) -> None:
    """Weights present, but the HF text model/tokenizer is not cached: clear ModelMissing, no torch work."""
    cache = Path(os.environ["HF_HUB_CACHE"])  # per-test, empty
    dummy = tmp_path / "dummy.bin"
    dummy.write_bytes(b"not loaded")
    put_in_hf_cache(
        cache, "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", "open_clip_pytorch_model.bin", dummy
    )
    spec = "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k"
    with pytest.raises(ModelMissing, match="xlm-roberta-base") as info:
        ClipEncoder(Settings(clip_model=spec, offline=True))
    assert spec in str(info.value) and "tokenizer" in str(info.value)
    st = ClipEncoder.status(Settings(clip_model=spec))
    assert not st.present and "xlm-roberta-base" in st.detail


# ------------------------------------------------------------ real model paths


def test_file_spec_loads_the_saved_weights(enc: ClipEncoder, ref: SimpleNamespace) -> None:
    saved = torch.load(ref.weights, weights_only=True)
    loaded = enc._model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert not enc._model.training
    assert enc.space == "clip" and enc.modalities == frozenset({"image", "text"})
    assert enc.dim == 512
    info = enc.info
    assert info.model_id == f"clip:ViT-B-32:sha256:{ref.sha[:16]}"
    assert info.checkpoint_sha256 == ref.sha
    assert (info.space, info.name, info.pretrained, info.dim) == ("clip", "ViT-B-32", None, 512)
    pp = info.preprocessing
    assert pp["size"] == [224, 224] and pp["interpolation"] == "bicubic" and pp["resize_mode"] == "shortest"
    assert pp["mean"] == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert pp["std"] == pytest.approx(open_clip.OPENAI_DATASET_STD)
    st = ClipEncoder.status(Settings(clip_model=f"ViT-B-32:{ref.weights}"))
    assert st.present and st.source == "local-file" and st.size_bytes == ref.weights.stat().st_size


def test_image_path_matches_open_clip(enc: ClipEncoder, ref: SimpleNamespace) -> None:
    pre = enc.image_preprocessor()
    pixels = np.stack([pre(p) for p in ref.images])
    with torch.no_grad():
        ref_pixels = np.stack([ref.preprocess(Image.open(p).convert("RGB")).numpy() for p in ref.images])
    assert pixels.dtype == np.float32 and pixels.shape == (len(ref.images), 3, 224, 224)
    assert np.abs(pixels - ref_pixels).max() <= 1e-6
    got = enc.embed_images(pixels)
    want = reference_image_embeddings(ref, ref.images)
    assert got.dtype == np.float32 and got.shape == (len(ref.images), 512)
    assert np.abs(got - want).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_text_path_matches_open_clip(enc: ClipEncoder, ref: SimpleNamespace) -> None:
    got = enc.embed_texts(TEXTS)
    want = reference_text_embeddings(ref, TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 512)
    assert np.abs(got - want).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert enc.embed_texts([]).shape == (0, 512)


def test_embeddings_are_deterministic_and_batch_independent(enc: ClipEncoder, ref: SimpleNamespace) -> None:
    pre = enc.image_preprocessor()
    pixels = np.stack([pre(p) for p in ref.images])
    a, b = enc.embed_images(pixels), enc.embed_images(pixels)
    assert np.array_equal(a, b)
    t1, t2 = enc.embed_texts(TEXTS), enc.embed_texts(TEXTS)
    assert np.array_equal(t1, t2)
    saved = enc.batch_size
    try:
        enc.batch_size = 2  # several batches must give the same vectors as one
        assert np.abs(enc.embed_images(pixels) - a).max() <= 1e-5
        assert np.abs(enc.embed_texts(TEXTS) - t1).max() <= 1e-5
    finally:
        enc.batch_size = saved
    with pytest.raises(ValueError):
        enc.embed_images(pixels[:, :, :100])


def test_split_text_fits_the_context(enc: ClipEncoder, ref: SimpleNamespace) -> None:
    from xmr.preprocess.text import normalise

    words = (
        "The quick brown fox jumps over the lazy dog; supercalifragilisticexpialidocious! "
        "東京 https://example.com/a/very/long/path?with=query&and=more "
    ).split()
    raw = "  \n".join(" ".join(words[(i * 7) % len(words) :] + words[: (i * 7) % len(words)]) for i in range(40))
    raw += " " + "x" * 600  # one "word" longer than the context
    text = normalise(raw)
    passages = enc.split_text(raw)
    assert len(passages) > 5
    sot, eot = ref.tokenizer.sot_token_id, ref.tokenizer.eot_token_id
    for p in passages:
        assert text[p.start : p.end] == p.text and p.text
        assert len(ref.tokenizer.encode(p.text)) <= 75
        row = ref.tokenizer([p.text])[0].tolist()  # nothing is cut off: EOT is the real end
        assert row[0] == sot and eot in row
        assert len(ref.tokenizer.encode(p.text)) == row.index(eot) - 1
    overlapping = 0
    for a, b in zip(passages, passages[1:], strict=False):
        assert a.start < b.start
        if b.start < a.end:  # shared words, at most the overlap budget
            overlapping += 1
            assert len(ref.tokenizer.encode(text[b.start : a.end])) <= 16
        else:  # no gap: the next window starts at the next word
            assert text[a.end : b.start].strip() == ""
    assert overlapping >= len(passages) // 2
    assert passages[0].start == 0 and passages[-1].end == len(text)


def test_local_dir_spec(enc: ClipEncoder, ref: SimpleNamespace, tmp_path: Path) -> None:
    export = tmp_path / "my-export"
    export.mkdir()
    cfg = {
        "model_cfg": open_clip.get_model_config("ViT-B-32"),
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
            "interpolation": "bilinear",
            "resize_mode": "squash",
        },
    }
    (export / "open_clip_config.json").write_text(json.dumps(cfg))
    (export / "open_clip_pytorch_model.bin").symlink_to(ref.weights)
    spec = f"local-dir:{export}"
    st = ClipEncoder.status(Settings(clip_model=spec))
    assert st.present and st.source == "local-dir"
    local = ClipEncoder(Settings(clip_model=spec, offline=True))
    assert local.info.name == "ViT-B-32"  # recognised as the built-in architecture
    assert local.info.model_id == f"clip:ViT-B-32:sha256:{ref.sha[:16]}"
    assert local.info.preprocessing["resize_mode"] == "squash"  # the export's settings apply
    assert local.info.preprocessing["interpolation"] == "bilinear"
    assert np.abs(local.embed_texts(TEXTS[:3]) - enc.embed_texts(TEXTS[:3])).max() <= 1e-6
    square = tmp_path / "sq.png"
    Image.open(ref.images[0]).save(square)  # 224x224: squash and shortest agree
    pixels = local.image_preprocessor()(square)[None]
    assert np.abs(local.embed_images(pixels) - enc.embed_images(enc.image_preprocessor()(square)[None])).max() <= 1e-5


def test_default_spec_resolves_from_a_hugging_face_cache_offline(
    enc: ClipEncoder, ref: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Path(os.environ["HF_HUB_CACHE"])  # per-test, empty
    put_in_hf_cache(cache, DEFAULT_REPO, "open_clip_pytorch_model.bin", ref.weights, blob=ref.sha)
    st = ClipEncoder.status(Settings(clip_model=DEFAULT_SPEC))
    assert st.present and st.source == "hf-cache"
    assert st.sha256 == ref.sha  # read from the LFS blob name, not recomputed
    assert "snapshots" in (st.location or "")
    import xmr.encoders.filehash as filehash_module  # where a checkpoint's sha256 is computed

    def no_hashing(*args: object) -> None:
        raise AssertionError("the checkpoint's sha256 is its blob's name in the cache: no hashing")

    with monkeypatch.context() as mp:
        mp.setattr(filehash_module.hashlib, "sha256", no_hashing)
        hub = ClipEncoder(Settings(offline=True))  # the default spec
    assert hub.info.model_id == "clip:ViT-B-32:laion2b_s34b_b79k"
    assert hub.info.pretrained == "laion2b_s34b_b79k" and hub.info.checkpoint_sha256 == ref.sha
    assert np.abs(hub.embed_texts(TEXTS[:2]) - enc.embed_texts(TEXTS[:2])).max() <= 1e-6
    # the download command has nothing to do and does not touch the network
    assert ClipEncoder.download(Settings(offline=True)).present


def test_mismatching_checkpoint_is_a_model_error(ref: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        ClipEncoder(Settings(clip_model=f"ViT-B-16:{ref.weights}", offline=True))
    msg = str(info.value)
    assert "does not fit the ViT-B-16 architecture" in msg and str(ref.weights) in msg and "\n" not in msg
    assert not isinstance(info.value, ModelMissing)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        ClipEncoder(Settings(clip_model=f"ViT-B-32:{garbage}", offline=True))


def test_multilingual_model_with_hf_tokenizer_from_cache(tmp_path: Path) -> None:
    """An open_clip model whose text tower and tokenizer come from Hugging Face
    (xlm-roberta-base-ViT-B-32), resolved by name from the cache, offline."""
    import huggingface_hub.constants as hf_constants

    cache = Path(os.environ["HF_HUB_CACHE"])  # per-test, empty
    make_fake_hf_text_repo(cache, "xlm-roberta-base")
    arch = "xlm-roberta-base-ViT-B-32"
    # build the reference with huggingface_hub pointed at the same cache, offline;
    # xmr must then find that cache from the environment by itself
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        model, _ = build_random_clip(arch, seed=5, pretrained_text=False)
        tokenizer = open_clip.get_tokenizer(arch)
    weights = tmp_path / "xlmr.pt"
    torch.save(model.state_dict(), weights)
    put_in_hf_cache(
        cache, "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", "open_clip_pytorch_model.bin", weights
    )

    spec = f"{arch}:laion5b_s13b_b90k"
    assert ClipEncoder.status(Settings(clip_model=spec)).present
    ml = ClipEncoder(Settings(clip_model=spec, offline=True))
    texts = ["a photo of the cat", "une photo chat", "ein foto der katze hund"]
    with torch.no_grad():
        want = model.encode_text(tokenizer(texts), normalize=True).numpy()
    assert np.abs(ml.embed_texts(texts) - want).max() <= 1e-5
    assert all(ml.count_tokens(p.text) <= ml.max_text_tokens for p in ml.split_text(" ".join(texts * 30)))


def test_hf_hub_spec_from_the_cache(enc: ClipEncoder, ref: SimpleNamespace, tmp_path: Path) -> None:
    cache = Path(os.environ["HF_HUB_CACHE"])  # per-test, empty
    repo = "someorg/my-clip"
    cfg = tmp_path / "open_clip_config.json"
    cfg.write_text(json.dumps({"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": {}}))
    put_in_hf_cache(cache, repo, "open_clip_config.json", cfg)
    put_in_hf_cache(cache, repo, "open_clip_pytorch_model.bin", ref.weights, blob=ref.sha)
    spec = f"hf-hub:{repo}"
    st = ClipEncoder.status(Settings(clip_model=spec))
    assert st.present and st.source == "hf-cache" and st.sha256 == ref.sha
    hub = ClipEncoder(Settings(clip_model=spec, offline=True))
    assert hub.info.model_id == f"clip:hf-hub:{repo}" and hub.info.pretrained == spec
    assert hub.info.name == "ViT-B-32" and hub.info.checkpoint_sha256 == ref.sha
    assert np.abs(hub.embed_texts(TEXTS[:2]) - enc.embed_texts(TEXTS[:2])).max() <= 1e-6


def test_download_fetches_what_open_clip_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online download through huggingface_hub (mocked: nothing connects): the
    .safetensors twin is preferred when the repo has it, else the .bin."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    for name in ("XMR_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    cache = Path(os.environ["HF_HUB_CACHE"])
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"weights")
    probed: list[str] = []
    fetched: list[tuple[str, str, str]] = []

    def metadata(url: str, **kwargs: object) -> object:
        probed.append(url.rsplit("/", 1)[-1])
        if url.endswith(".safetensors"):
            raise EntryNotFoundError("404")
        return object()

    def download(repo_id: str, filename: str, *, cache_dir: str, **kwargs: object) -> str:
        fetched.append((repo_id, filename, cache_dir))
        return str(put_in_hf_cache(Path(cache_dir), repo_id, filename, payload))

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    st = ClipEncoder.download(Settings(clip_model=DEFAULT_SPEC))
    assert probed == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert fetched == [(DEFAULT_REPO, "open_clip_pytorch_model.bin", str(cache))]
    assert st.present and st.source == "hf-cache" and st.size_bytes == len(b"weights")
    # present now: a second download is a no-op
    probed.clear()
    assert ClipEncoder.download(Settings(clip_model=DEFAULT_SPEC)).present and probed == []


# ----------------------------------------------------------- dynamic lengths, precision

MIXED = [
    "cat",
    "word " * 60,
    "a photo of a dog on a red sofa",
    "",
    "the quick brown fox jumps over the lazy dog " * 3,
    "x",
    "word " * 200,  # truncated at the context, like the padded path
    "sunset",
] * 3


def test_dynamic_lengths_equal_the_padded_path(enc: ClipEncoder, ref: SimpleNamespace) -> None:
    seen: list[int] = []
    runner = enc._text_runner
    assert runner.dynamic and runner.pooled_last  # cut at the last pooled position, last block on the pooled rows
    first = runner.parts[0].transformer.resblocks[0]
    inner = first.forward
    saved = enc.batch_size

    def spy(x: object, *a: object, **k: object) -> object:
        seen.append(int(x.shape[1]))  # type: ignore[attr-defined]
        return inner(x, *a, **k)

    first.forward = spy
    try:
        for size in (32, 3):
            enc.batch_size = size
            seen.clear()
            got = enc.embed_texts(MIXED)
            want = reference_text_embeddings(ref, MIXED)
            assert np.abs(got - want).max() <= 1e-5, size
            # the batches really were cut short: the shortest texts ("", "x") take 2-3 tokens
            assert min(seen) <= 12 and max(seen) == 77 and len(seen) >= 3, seen
    finally:
        enc.batch_size = saved
        del first.forward


def test_the_pooled_last_block_equals_the_whole_block(enc: ClipEncoder) -> None:
    import torch

    runner = enc._text_runner
    tokens = enc._tokenizer(MIXED)
    with torch.inference_mode():
        try:
            runner.pooled_last = False
            whole = runner.features(tokens).numpy()
        finally:
            runner.pooled_last = True
        pooled = runner.features(tokens).numpy()
    assert np.abs(pooled - whole).max() <= 1e-5
    assert not np.array_equal(pooled, np.zeros_like(pooled))


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_lower_precisions_stay_close_to_fp32(enc: ClipEncoder, ref: SimpleNamespace, precision: str) -> None:
    low = ClipEncoder(Settings(clip_model=f"ViT-B-32:{ref.weights}", offline=True, device="cpu", precision=precision))
    assert low.precision == precision
    assert low.info.model_id == f"{enc.info.model_id}@{precision}"
    pre = enc.image_preprocessor()
    pixels = np.stack([pre(p) for p in ref.images])
    pairs = ((enc.embed_images(pixels), low.embed_images(pixels)), (enc.embed_texts(MIXED), low.embed_texts(MIXED)))
    for a, b in pairs:
        cos = (a * b).sum(axis=1)
        assert cos.min() >= 0.999, cos.min()
        assert not np.array_equal(a, b)  # it did run at another precision
