"""The CLAP backend with real architectures and random weights.

Checkpoints are written in the published LAION-CLAP layout and loaded back
through ``Settings(clap_model=path)``; fidelity is checked against laion-clap's
own ``CLAP_Module`` holding the same weights (built offline, see clap_helpers).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch  # a declared dependency: a broken install fails here, it is never skipped
from clap_helpers import (
    build_roberta_tokenizer,
    install_librosa_torchaudio_shim,
    make_checkpoint,
    randomise_bn_stats,
    reference_clap_module,
    save_published_checkpoint,
)

from xmr.encoders.base import Encoder
from xmr.errors import ModelError, ModelMissing
from xmr.preprocess.audio import WINDOW_SAMPLES, load_audio, quantize, windows
from xmr.settings import Settings

_MODULES_BEFORE_XMR_CLAP: set[str] = set()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_roberta_tokenizer(tmp_path_factory.mktemp("roberta-tokenizer"))


@pytest.fixture(autouse=True)
def _tokenizer_env(tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMR_CLAP_TOKENIZER", str(tokenizer_dir))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Default architecture (HTSAT-tiny, non-fusion), "module."-prefixed keys
    and the old position_ids buffer, like 630k-audioset-best.pt."""
    _MODULES_BEFORE_XMR_CLAP.update(sys.modules)
    path = tmp_path_factory.mktemp("ckpt") / "random-htsat-tiny.pt"
    sd = make_checkpoint(path, seed=1234)
    return path, sd


@pytest.fixture(scope="module")
def encoder(
    tiny: tuple[Path, dict[str, Any]], tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    from xmr.encoders.clap import ClapEncoder

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:  # module scope: conftest's per-test env is not active yet
        mp.setenv("XMR_CLAP_TOKENIZER", str(tokenizer_dir))
        mp.setenv("XMR_MODELS_DIR", str(tmp_path_factory.mktemp("models")))
        with contextlib.redirect_stdout(out):
            enc = ClapEncoder(Settings(clap_model=str(tiny[0]), device="cpu"))
    enc.load_stdout = out.getvalue()
    # what building (in make_checkpoint) and loading the model imported
    enc.modules_added = set(sys.modules) - _MODULES_BEFORE_XMR_CLAP
    yield enc
    del enc


@pytest.fixture(scope="module")
def reference(tiny: tuple[Path, dict[str, Any]], tokenizer_dir: Path) -> Iterator[Any]:
    """laion-clap's CLAP_Module with the same weights. Importing laion_clap
    pollutes sys.modules (it also appends its folder to sys.path); undo that
    afterwards so other tests see a clean interpreter."""
    before_modules, before_path = set(sys.modules), list(sys.path)
    ref = reference_clap_module(tokenizer_dir, tiny[1])
    yield ref
    del ref
    for name in set(sys.modules) - before_modules:
        if name.split(".")[0] in {"laion_clap", "clap_module", "training", "evaluate"}:
            del sys.modules[name]
    sys.path[:] = before_path


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 48000)) / 48000
    return (
        0.3 * np.sin(2 * np.pi * 330 * t) * np.sin(2 * np.pi * 0.5 * t) + 0.05 * rng.standard_normal(t.shape)
    ).astype(np.float32)


def _embed_file_like(enc: Any, raw: np.ndarray) -> np.ndarray:
    return enc.embed_audio(np.stack([w.samples for w in windows(quantize(raw))]))


TEXTS = ["a dog barking in the rain", "", "piano music with a crowd applauding " * 12, "siren"]


# --------------------------------------------------------------------------- loading


@pytest.mark.slow
def test_loads_published_format_strictly_and_quietly(encoder: Any, tiny: tuple[Path, dict[str, Any]]) -> None:
    path, saved = tiny
    assert encoder.load_stdout == ""
    # laion-clap's model code ran under a private name; its package (whose
    # training.data fetches tokenizers at import) was never imported
    added = encoder.modules_added
    assert "_xmr_laion_clap.clap_module.htsat" in added
    assert not {m for m in added if m == "laion_clap" or m.startswith(("laion_clap.", "training", "clap_module"))}
    assert isinstance(encoder, Encoder)
    assert encoder.arch.amodel == "HTSAT-tiny" and not encoder.arch.enable_fusion
    loaded = encoder.model.state_dict()
    assert set(loaded) == set(saved)  # position_ids is a non-persistent buffer in transformers 5
    for k, v in saved.items():
        assert torch.equal(loaded[k].cpu(), v), k
    assert not encoder.model.training


@pytest.mark.slow
def test_model_info(encoder: Any, tiny: tuple[Path, dict[str, Any]]) -> None:
    sha = hashlib.sha256(tiny[0].read_bytes()).hexdigest()
    info = encoder.info
    assert info.model_id == f"clap:HTSAT-tiny:sha256:{sha[:16]}"
    assert info.checkpoint_sha256 == sha
    assert info.space == encoder.space == "clap"
    assert info.dim == encoder.dim == 512
    assert encoder.modalities == frozenset({"audio", "text"})
    assert info.pretrained is None and info.name == "HTSAT-tiny"
    p = info.preprocessing
    assert p["sample_rate"] == 48000 and p["window_s"] == 10.0 and p["window_samples"] == 480000
    assert p["filling"] == "repeatpad" and p["quantize"] == "int16 round trip" and p["fusion"] is False
    assert p["text_max_length"] == 77
    json.dumps(p)  # recorded in the catalogue


@pytest.mark.slow
def test_text_embeddings(encoder: Any) -> None:
    a = encoder.embed_texts(TEXTS)
    assert a.shape == (len(TEXTS), 512) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, encoder.embed_texts(TEXTS))  # deterministic
    assert np.abs(a[0] - a[3]).max() > 1e-3
    old = encoder.batch_size
    encoder.batch_size = 1
    try:
        np.testing.assert_allclose(encoder.embed_texts(TEXTS), a, atol=1e-5)
    finally:
        encoder.batch_size = old
    assert encoder.embed_texts([]).shape == (0, 512)


@pytest.mark.slow
def test_audio_embeddings(encoder: Any) -> None:
    w = np.stack([w.samples for w in windows(quantize(_audio(23.0)))])
    assert w.shape == (3, WINDOW_SAMPLES)
    a = encoder.embed_audio(w)
    assert a.shape == (3, 512) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, encoder.embed_audio(w))
    np.testing.assert_allclose(encoder.embed_audio(w[1:2]), a[1:2], atol=1e-5)  # batch independent
    assert encoder.embed_audio(np.zeros((0, WINDOW_SAMPLES), np.float32)).shape == (0, 512)
    with pytest.raises(ValueError):
        encoder.embed_audio(np.zeros((1, 16000), np.float32))


@pytest.mark.slow
def test_split_text_fits_context(encoder: Any) -> None:
    text = " ".join(f"word{i} the dog barked at the passing car" for i in range(60))
    passages = encoder.split_text(text)
    assert len(passages) > 1
    for p in passages:
        assert p.text == text[p.start : p.end]
        ids = encoder._tokenizer(p.text)["input_ids"]
        assert len(ids) <= 77
    # passages are full windows, not one word each (a padded token count made every word "too long")
    assert encoder.count_tokens("the dog") < 10
    total = encoder.count_tokens(text)
    assert len(passages) <= total // (75 - 15 - 8) + 2  # 8: slack for word boundaries


# --------------------------------------------------------------------------- fidelity vs laion-clap


@pytest.mark.slow
def test_audio_matches_laion_clap(encoder: Any, reference: Any, tmp_path: Path) -> None:
    diffs = {}
    for seconds in (10.0, 3.0):
        raw = _audio(seconds, seed=int(seconds))
        ref = reference.get_audio_embedding_from_data([raw])  # quantises and repeat-pads itself
        ours = _embed_file_like(encoder, raw)
        assert ours.shape == ref.shape == (1, 512)
        diffs[seconds] = float(np.abs(ours - ref).max())
    # whole pipeline from a file: librosa.load(sr=48000) vs load_audio, 44.1 kHz stereo
    import soundfile as sf

    stereo = np.stack([_audio(7.0 * 44100 / 48000, 1), _audio(7.0 * 44100 / 48000, 2)], axis=1)
    path = tmp_path / "clip.wav"
    sf.write(str(path), stereo, 44100, subtype="PCM_16")
    ref = reference.get_audio_embedding_from_filelist([str(path)])
    ours = encoder.embed_audio(np.stack([w.samples for w in windows(load_audio(path))]))
    diffs["file"] = float(np.abs(ours - ref).max())
    print(f"CLAP audio fidelity (max abs diff): {diffs}")
    assert max(diffs.values()) <= 1e-5, diffs


@pytest.mark.slow
def test_text_matches_laion_clap(encoder: Any, reference: Any) -> None:
    ref = reference.get_text_embedding(TEXTS)
    ours = encoder.embed_texts(TEXTS)
    diff = float(np.abs(ours - ref).max())
    print(f"CLAP text fidelity (max abs diff): {diff}")
    assert diff <= 1e-5
    # and the same token ids as laion-clap's own tokenizer call
    ref_ids = reference.tokenizer(TEXTS)["input_ids"]
    ours_ids = encoder._tokenizer(TEXTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")[
        "input_ids"
    ]
    assert torch.equal(ref_ids, ours_ids) and ref_ids.shape == (len(TEXTS), 77)


@pytest.mark.slow
def test_fusion_checkpoint_matches_laion_clap(tmp_path: Path, tokenizer_dir: Path) -> None:
    """630k-fusion-best.pt's architecture, the checkpoint made from laion-clap's
    own randomly initialised CLAP_Module(enable_fusion=True). laion-clap's
    fusion path needs torchaudio for its mel; the stand-in here is written with
    librosa, independently of xmr's torch re-implementation."""
    from xmr.encoders.clap import ClapEncoder

    before_modules, before_path = set(sys.modules), list(sys.path)
    try:
        torch.manual_seed(77)
        ref = reference_clap_module(tokenizer_dir, None, enable_fusion=True)
        saved = randomise_bn_stats(ref.model.state_dict(), 78)
        ref.model.load_state_dict(saved)
        path = tmp_path / "630k-fusion-random.pt"
        save_published_checkpoint(path, saved)
        del saved
        enc = ClapEncoder(Settings(clap_model=str(path), device="cpu"))
        assert enc.arch.enable_fusion and enc.arch.fusion_type == "aff_2d"
        assert enc.info.preprocessing["fusion"] is True
        install_librosa_torchaudio_shim()
        diffs = {}
        for seconds in (10.0, 3.0):
            raw = _audio(seconds, seed=int(seconds) + 20)
            diffs[seconds] = float(np.abs(_embed_file_like(enc, raw) - ref.get_audio_embedding_from_data([raw])).max())
        diffs["text"] = float(np.abs(enc.embed_texts(TEXTS) - ref.get_text_embedding(TEXTS)).max())
    finally:
        for name in set(sys.modules) - before_modules:
            if name.split(".")[0] in {"laion_clap", "clap_module", "training", "evaluate"}:
                del sys.modules[name]
        sys.path[:] = before_path
    print(f"CLAP fusion fidelity (max abs diff): {diffs}")
    assert max(diffs.values()) <= 1e-5, diffs


def test_fusion_mel_matches_librosa() -> None:
    """xmr's torch version of laion-clap's torchaudio mel (htk, no norm, power dB)."""
    from types import SimpleNamespace

    import librosa  # laion-clap's dependency, so xmr's: imported, never skipped

    from xmr.encoders.clap import _fusion_mel

    cfg = SimpleNamespace(sample_rate=48000, window_size=1024, hop_size=480, mel_bins=64, fmin=50, fmax=14000)
    x = quantize(_audio(10.0, seed=4))
    ours = _fusion_mel(torch.from_numpy(x)[None], cfg)[0].numpy()
    mel = librosa.feature.melspectrogram(
        y=x.astype(np.float64),
        sr=48000,
        n_fft=1024,
        hop_length=480,
        win_length=1024,
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=64,
        fmin=50,
        fmax=14000,
        htk=True,
        norm=None,
    )
    ref = (10.0 * np.log10(np.maximum(mel, 1e-10))).T
    assert ours.shape == ref.shape == (1001, 64)
    assert np.abs(ours - ref).max() < 5e-3


# --------------------------------------------------------------------------- architectures


@pytest.mark.slow
def test_htsat_base_music_checkpoint_is_derived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The music checkpoints are HTSAT-base; the architecture comes from the
    file, here under its published name in xmr's models dir (no prefix, no
    position_ids)."""
    from xmr.encoders.clap import ClapEncoder

    name = "music_audioset_epoch_15_esc_90.14.pt"
    models = tmp_path / "models"
    (models / "clap").mkdir(parents=True)
    monkeypatch.setenv("XMR_MODELS_DIR", str(models))
    saved = make_checkpoint(
        models / "clap" / name, amodel="HTSAT-base", seed=5, module_prefix=False, position_ids=False
    )
    enc = ClapEncoder(Settings(clap_model=name, device="cpu"))
    assert enc.arch.amodel == "HTSAT-base" and not enc.arch.enable_fusion
    assert enc.info.model_id == "clap:music_audioset_epoch_15_esc_90.14:HTSAT-base"
    assert enc.info.pretrained == "music_audioset_epoch_15_esc_90.14"
    loaded = enc.model.state_dict()
    assert set(loaded) == set(saved) and all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert loaded["audio_branch.patch_embed.proj.weight"].shape[0] == 128
    e = enc.embed_audio(np.stack([w.samples for w in windows(quantize(_audio(3.0)))]))
    assert e.shape == (1, 512) and abs(float(np.linalg.norm(e)) - 1) < 1e-5
    status = ClapEncoder.status(Settings(clap_model=name))
    assert status.present and status.source == "xmr-cache" and status.location == str(models / "clap" / name)
    # the same file under a tiny checkpoint's name: a clear architecture mismatch
    (models / "630k-audioset-best.pt").symlink_to(models / "clap" / name)
    with pytest.raises(ModelError, match=r"HTSAT-base.*630k-audioset-best.pt should be HTSAT-tiny"):
        ClapEncoder(Settings(clap_model="630k-audioset-best", device="cpu"))


@pytest.mark.slow
def test_named_checkpoint_in_hf_cache_without_prefix_or_position_ids(
    tiny: tuple[Path, dict[str, Any]],
    encoder: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same weights saved without "module." and without position_ids, found
    by name in a Hugging Face cache laid out like hf_hub_download leaves it."""

    from xmr.encoders.clap import ClapEncoder

    plain = tmp_path / "plain.pt"
    save_published_checkpoint(plain, tiny[1], module_prefix=False, position_ids=False)
    sha = hashlib.sha256(plain.read_bytes()).hexdigest()
    cache = tmp_path / "hub"
    repo = cache / "models--lukewys--laion_clap"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    plain.rename(repo / "blobs" / sha)
    (repo / "snapshots" / "abc123" / "630k-best.pt").symlink_to(repo / "blobs" / sha)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # read when looking up, as huggingface_hub users set it

    status = ClapEncoder.status(Settings(clap_model="630k-best.pt"))
    assert status.present and status.source == "hf-cache" and status.sha256 == sha
    capsys.readouterr()
    enc = ClapEncoder(Settings(clap_model="630k-best", device="cpu"))
    assert capsys.readouterr().out == ""
    assert enc.info.model_id == "clap:630k-best:HTSAT-tiny" and enc.info.checkpoint_sha256 == sha
    assert enc.info.pretrained == "630k-best"
    np.testing.assert_array_equal(enc.embed_texts(TEXTS[:2]), encoder.embed_texts(TEXTS[:2]))
    raw = _audio(4.0, seed=9)
    np.testing.assert_array_equal(_embed_file_like(enc, raw), _embed_file_like(encoder, raw))
    del enc
    with pytest.raises(ModelError, match="fusion"):
        ClapEncoder(Settings(clap_model=str(tiny[0]), device="cpu"), expect_fusion=True)
    with pytest.raises(ModelError, match="HTSAT-base"):
        ClapEncoder(Settings(clap_model=str(tiny[0]), device="cpu"), expect_amodel="HTSAT-base")


def test_derive_arch_rejects_foreign_state_dicts() -> None:
    from xmr.encoders.clap import derive_arch

    z = torch.zeros
    base = {
        "audio_branch.patch_embed.proj.weight": z(96, 1, 4, 4),
        "text_branch.embeddings.word_embeddings.weight": z(50265, 768),
    }
    base.update({f"audio_branch.layers.2.blocks.{i}.norm1.weight": z(1) for i in range(6)})
    arch = derive_arch(base)
    assert (arch.amodel, arch.enable_fusion) == ("HTSAT-tiny", False)
    fusion = dict(
        base,
        **{
            "audio_branch.patch_embed.mel_conv2d.weight": z(1),
            "audio_branch.patch_embed.fusion_model.local_att.0.weight": z(1),
        },
    )
    assert derive_arch(fusion).fusion_type == "aff_2d"
    with pytest.raises(ModelError, match="not RoBERTa"):
        derive_arch(dict(base, **{"text_branch.embeddings.word_embeddings.weight": z(30522, 768)}))
    with pytest.raises(ModelError, match="PANN"):
        derive_arch({"audio_branch.conv_block1.conv1.weight": z(1)})
    with pytest.raises(ModelError, match="stage 3"):
        derive_arch(dict(base, **{"audio_branch.patch_embed.proj.weight": z(128, 1, 4, 4)}))
    with pytest.raises(ModelError, match="1-D"):
        derive_arch(dict(base, **{"audio_branch.mel_conv1d.0.weight": z(1)}))


# --------------------------------------------------------------------------- bad inputs


def test_bad_checkpoint_files(tmp_path: Path) -> None:
    from xmr.encoders.clap import ClapEncoder, _read_state_dict

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint" * 10)
    with pytest.raises(ModelError) as info:
        ClapEncoder(Settings(clap_model=str(garbage), device="cpu"))
    assert info.value.path == str(garbage.resolve())
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 1, "state_dict": {}}, empty)
    with pytest.raises(ModelError, match="no state_dict"):
        ClapEncoder(Settings(clap_model=str(empty), device="cpu"))
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"module.encoder.weight": torch.ones(2)}}, other)
    with pytest.raises(ModelError, match="not a LAION-CLAP checkpoint"):
        ClapEncoder(Settings(clap_model=str(other), device="cpu"))
    # legacy (non-zip) serialisation cannot be mmapped; pickled extras need weights_only=False
    legacy = tmp_path / "legacy.pt"
    torch.save({"state_dict": {"module.a": torch.ones(3)}}, legacy, _use_new_zipfile_serialization=False)
    assert list(_read_state_dict(legacy)) == ["a"]
    extras = tmp_path / "extras.pt"
    torch.save({"state_dict": {"a": torch.ones(3)}, "args": Path("x")}, extras)
    assert list(_read_state_dict(extras)) == ["a"]


def test_tokenizer_with_wrong_vocabulary_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmr.encoders.clap import ClapEncoder

    ckpt = tmp_path / "any.pt"
    ckpt.write_bytes(b"the tokenizer is checked before the checkpoint is read")
    small = build_roberta_tokenizer(tmp_path / "small-tok", vocab_size=30000)
    monkeypatch.setenv("XMR_CLAP_TOKENIZER", str(small))
    with pytest.raises(ModelError, match=r"vocabulary of 30000 tokens \(expected 50265\)") as info:
        ClapEncoder(Settings(clap_model=str(ckpt), device="cpu"))
    assert info.value.path == str(small)
    # a folder without the files (transformers 5 would build a 5-token placeholder)
    hollow = tmp_path / "hollow"
    hollow.mkdir()
    (hollow / "tokenizer_config.json").write_text("{}")
    monkeypatch.setenv("XMR_CLAP_TOKENIZER", str(hollow))
    with pytest.raises(ModelMissing, match="RoBERTa tokenizer"):
        ClapEncoder(Settings(clap_model=str(ckpt), device="cpu"))
    monkeypatch.delenv("XMR_CLAP_TOKENIZER")
    with pytest.raises(ModelMissing, match="Hugging Face cache"):
        ClapEncoder(Settings(clap_model=str(ckpt), device="cpu"))


def test_missing_checkpoint_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import xmr.encoders.clap as clap_module
    from xmr.encoders.clap import ClapEncoder

    def heavy(*args: object, **kwargs: object) -> None:
        raise AssertionError("a missing checkpoint must fail before anything is read or built")

    for name in ("_load_tokenizer", "_read_state_dict", "build_clap_model"):
        monkeypatch.setattr(clap_module, name, heavy)
    settings = Settings.from_env()
    assert settings.clap_model == "630k-audioset-best.pt" and settings.offline
    with pytest.raises(ModelMissing) as info:
        ClapEncoder(settings)
    msg = str(info.value)
    assert "630k-audioset-best.pt" in msg and "\n" not in msg
    assert os.environ["XMR_MODELS_DIR"] in msg and "lukewys/laion_clap" in msg
    assert "xmr models download" in msg and "--clap-model" in msg and "XMR_CLAP_MODEL" in msg
    status = ClapEncoder.status(settings)
    assert not status.present and status.space == "clap" and "not found" in status.detail
    with pytest.raises(ModelMissing, match="offline"):
        ClapEncoder.download(settings)
    with pytest.raises(ModelMissing, match="file not found") as info:
        ClapEncoder(Settings(clap_model=str(tmp_path / "nope.pt")))
    assert info.value.path == str(tmp_path / "nope.pt")


def test_missing_checkpoint_fast_in_fresh_process(tmp_path: Path) -> None:
    """Through the registry, in a new interpreter: one ModelMissing, and neither the
    backend's import nor the failed load imported torch or laion-clap's stack."""
    script = textwrap.dedent(
        """
        import sys
        from xmr.encoders import load_encoder, model_status
        from xmr.errors import ModelMissing
        from xmr.settings import Settings
        assert not model_status("clap", Settings.from_env()).present
        try:
            load_encoder("clap", Settings.from_env())
        except ModelMissing as exc:
            heavy = [m for m in ("torch", "laion_clap", "librosa", "transformers") if m in sys.modules]
            print("ModelMissing", ",".join(heavy) or "-", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kind, heavy_loaded, *_ = out.stdout.split(" ", 2)
    assert kind == "ModelMissing" and heavy_loaded == "-", out.stdout
    assert out.stderr == ""


def test_download_fetches_checkpoint_and_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online path with huggingface_hub's downloader replaced by a fake that
    fills a Hugging Face cache the way the real one does."""
    import huggingface_hub

    from xmr.encoders import download_model, model_status

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for var in ("XMR_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "XMR_CLAP_TOKENIZER"):
        monkeypatch.delenv(var, raising=False)
    calls: list[tuple[str, str]] = []

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        calls.append((repo_id, filename))
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text("r1")
        target = repo / "snapshots" / "r1" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    settings = Settings.from_env()
    assert not settings.offline and not model_status("clap", settings).present
    status = download_model("clap", settings)
    assert ("lukewys/laion_clap", "630k-audioset-best.pt") in calls
    assert ("FacebookAI/roberta-base", "vocab.json") in calls and ("FacebookAI/roberta-base", "merges.txt") in calls
    assert status.present and status.source == "hf-cache"
    n = len(calls)
    assert download_model("clap", settings).present and len(calls) == n  # nothing left to fetch

    def failing(repo_id: str, filename: str, **kwargs: Any) -> str:
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    with pytest.raises(ModelMissing, match="cannot download 630k-fusion-best.pt"):
        download_model("clap", Settings.from_env(clap_model="630k-fusion-best.pt"))


def test_checkpoint_sha256_is_cached_per_file_version(tmp_path: Path) -> None:
    from xmr import paths
    from xmr.encoders.clap import _known_sha256, _sha256

    f = tmp_path / "w.pt"
    f.write_bytes(b"abc")
    assert _known_sha256(f) is None  # status never hashes
    assert _sha256(f) == hashlib.sha256(b"abc").hexdigest()
    assert (paths.models_dir() / "sha256-cache.json").is_file()
    assert _known_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    f.write_bytes(b"abcd")  # new size (and mtime): hashed again
    assert _sha256(f) == hashlib.sha256(b"abcd").hexdigest()


# --------------------------------------------------------------------------- dynamic lengths, precision

MIXED = [
    "dog",
    "a dog barking in the rain",
    "piano music with a crowd applauding " * 12,
    "",
    "siren",
    "wind and water over the river " * 4,
] * 4


@pytest.mark.slow
def test_dynamic_lengths_equal_the_padded_path(encoder: Any) -> None:
    import torch.nn.functional as F

    tok = encoder._tokenizer(MIXED, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.inference_mode():
        data = {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
        want = F.normalize(encoder.model.encode_text(data, device=encoder.device), dim=-1).numpy()
    widths: list[int] = []
    inner = encoder.model.text_branch.forward

    def spy(*a: Any, **k: Any) -> Any:
        widths.append(int(k["input_ids"].shape[1]))
        return inner(*a, **k)

    encoder.model.text_branch.forward = spy
    old = encoder.batch_size
    try:
        for size in (None, 3):
            encoder.batch_size = size
            widths.clear()
            got = encoder.embed_texts(MIXED)
            assert float(np.abs(got - want).max()) <= 1e-5, size
            assert min(widths) <= 16 and max(widths) == 77, widths  # padded to each batch's longest only
    finally:
        encoder.batch_size = old
        del encoder.model.text_branch.forward


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_lower_precisions_stay_close_to_fp32(
    encoder: Any, tiny: tuple[Path, dict[str, Any]], precision: str
) -> None:
    from xmr.encoders.clap import ClapEncoder

    low = ClapEncoder(Settings(clap_model=str(tiny[0]), device="cpu", precision=precision))
    assert low.precision == precision and low.info.model_id == f"{encoder.info.model_id}@{precision}"
    w = np.stack([w.samples for w in windows(quantize(_audio(23.0)))])
    for a, b in ((encoder.embed_audio(w), low.embed_audio(w)), (encoder.embed_texts(MIXED), low.embed_texts(MIXED))):
        cos = (a * b).sum(axis=1)
        assert cos.min() >= 0.999, (precision, cos.min())
        assert not np.array_equal(a, b)


def test_benchmark_words_become_whole_tokens_without_changing_other_splits(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    # benchmarks/_models.roberta_tokenizer relies on this: its words cost one token each,
    # as in roberta-base's real vocabulary, and the tests' own words split as before
    from transformers import RobertaTokenizer

    words = ["lighthouse", "keeper", "electricity", "weather", "tuesday"]
    plain = RobertaTokenizer.from_pretrained(str(tokenizer_dir))
    built = RobertaTokenizer.from_pretrained(str(build_roberta_tokenizer(tmp_path / "tok", words=words)))
    assert len(built) == len(plain) == 50265
    text = "the lighthouse keeper paid the electricity bill on tuesday weather"
    assert len(plain.tokenize(text)) > 20  # spelled in pieces without the words
    assert built.tokenize(text)[:3] == ["the", "Ġlighthouse", "Ġkeeper"]
    assert all(built.tokenize(" " + w) == ["Ġ" + w] for w in words)
    assert built.tokenize("weather") == ["weather"]  # the word alone, not only after a space
    for w in ("dog barking", "rain on a car", "piano music"):  # the tests' vocabulary splits as before
        assert built.tokenize(w) == plain.tokenize(w)


@pytest.mark.slow
def test_int8_computes_the_spectrogram_by_fft_as_laion_clap_does_by_convolution(
    encoder: Any, tiny: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from xmr.encoders import towers
    from xmr.encoders.clap import ClapEncoder
    from xmr.encoders.clap_frontend import use_fft

    # where audio runs in torch at int8 (no ONNX audio tower: xmr.encoders.image_int8)
    monkeypatch.setattr(towers, "available", lambda: False)
    low = ClapEncoder(Settings(clap_model=str(tiny[0]), device="cpu", precision="int8"))
    assert low._int8_audio is None
    fft = low.model.audio_branch.spectrogram_extractor
    conv = encoder.model.audio_branch.spectrogram_extractor  # fp32 keeps laion-clap's module
    assert type(fft).__name__ == "_FftSpectrogram" and type(conv).__module__.startswith("torchlibrosa")
    x = torch.from_numpy(np.stack([w.samples for w in windows(quantize(_audio(12.0)))]))
    with torch.inference_mode():
        want, got = conv(x), fft(x)
    assert got.shape == want.shape
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5

    class Other(torch.nn.Module):  # not torchlibrosa's layout: left alone
        spectrogram_extractor = torch.nn.Identity()

    assert not use_fft(Other())
