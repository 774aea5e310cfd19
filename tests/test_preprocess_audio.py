"""Audio decoding and windowing against laion-clap's own preprocessing.

Reference: laion-clap embeds a file as ``librosa.load(path, sr=48000)`` then
``int16_to_float32(float32_to_int16(x))`` then ``get_audio_features(...,
data_filling="repeatpad")``. librosa is installed with laion-clap; the
laion-clap functions are compiled from its ``training/data.py`` source.
"""

from __future__ import annotations

import math
from pathlib import Path

import librosa  # installed with laion-clap, a declared dependency: imported, never skipped
import numpy as np
import pytest
import soundfile as sf
from clap_helpers import laion_data_functions

from xmr.errors import MediaError, UsageError
from xmr.preprocess.audio import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    AudioWindow,
    load_audio,
    quantize,
    repeat_pad,
    window_count,
    windows,
)


def _signal(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    base = 0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3000.0 * t)
    x = np.stack([base * (0.5 + 0.5 * c) + 0.02 * rng.standard_normal(t.shape) for c in range(channels)], axis=1)
    return x.astype(np.float32)


def _write(path: Path, x: np.ndarray, sr: int, fmt: str, subtype: str) -> Path:
    sf.write(str(path), x, sr, format=fmt, subtype=subtype)
    return path


def _laion_reference(path: Path) -> np.ndarray:
    """What laion-clap's get_audio_embedding_from_filelist feeds its model."""
    ref = laion_data_functions("int16_to_float32", "float32_to_int16")
    y, _ = librosa.load(str(path), sr=48000)
    return ref["int16_to_float32"](ref["float32_to_int16"](y))


CASES = [
    ("WAV", "PCM_16", 44100, 2, "wav"),
    ("WAV", "FLOAT", 48000, 1, "wav"),
    ("WAV", "PCM_24", 16000, 1, "wav"),
    ("FLAC", "PCM_16", 22050, 2, "flac"),
    ("OGG", "VORBIS", 44100, 1, "ogg"),
    ("OGG", "VORBIS", 16000, 2, "ogg"),
    ("OGG", "OPUS", 48000, 2, "opus"),
    ("MP3", "MPEG_LAYER_III", 44100, 2, "mp3"),
]


@pytest.mark.parametrize(("fmt", "subtype", "sr", "channels", "ext"), CASES)
def test_load_matches_laion_clap_pipeline(
    tmp_path: Path, fmt: str, subtype: str, sr: int, channels: int, ext: str
) -> None:
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"libsndfile here cannot write {fmt}/{subtype}")
    path = _write(tmp_path / f"clip.{ext}", _signal(3.3, sr, channels), sr, fmt, subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.flags["C_CONTIGUOUS"]
    frames = sf.info(str(path)).frames
    assert audio.shape[0] == math.ceil(frames * SAMPLE_RATE / sr)
    reference = _laion_reference(path)
    assert audio.shape == reference.shape
    np.testing.assert_array_equal(audio, reference)
    # values sit on the int16 grid laion-clap quantises to
    assert np.abs(audio.astype(np.float64) * 32767 - np.round(audio.astype(np.float64) * 32767)).max() < 1e-3


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left = _signal(2.0, 48000)[:, 0]
    x = np.stack([left, np.zeros_like(left)], axis=1)
    audio = load_audio(_write(tmp_path / "st.wav", x, 48000, "WAV", "FLOAT"))
    np.testing.assert_array_equal(audio, quantize(left / 2))


def test_quantize_is_laion_clap_round_trip() -> None:
    ref = laion_data_functions("int16_to_float32", "float32_to_int16")
    x = np.random.default_rng(1).uniform(-1.5, 1.5, 10000).astype(np.float32)
    np.testing.assert_array_equal(quantize(x), ref["int16_to_float32"](ref["float32_to_int16"](x)))


def test_long_file_blockwise_and_windowed_with_hop(tmp_path: Path) -> None:
    # 35 s of stereo at 32 kHz: several read blocks and resampler chunks (ratio 1.5 keeps n exact)
    sr = 32000
    path = _write(tmp_path / "long.flac", _signal(35.0, sr, 2, seed=3), sr, "FLAC", "PCM_16")
    audio = load_audio(path)
    np.testing.assert_array_equal(audio, _laion_reference(path))
    n = audio.shape[0]
    assert n == 35 * SAMPLE_RATE

    ws = windows(audio)  # hop = window = 10 s; end-aligned tail
    assert [(w.start_s, w.end_s) for w in ws] == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (25.0, 35.0)]
    for w in ws:
        assert w.samples.shape == (WINDOW_SAMPLES,) and w.samples.dtype == np.float32
        a = int(round(w.start_s * SAMPLE_RATE))
        np.testing.assert_array_equal(w.samples, audio[a : a + WINDOW_SAMPLES])

    ws = windows(audio, hop_s=5.0)
    assert [w.start_s for w in ws] == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    assert ws[-1].end_s == 35.0
    assert len(ws) == window_count(n, hop_s=5.0)

    ws = windows(audio, hop_s=7.5)
    assert [w.start_s for w in ws] == [0.0, 7.5, 15.0, 22.5, 25.0]
    assert len(ws) == window_count(n, hop_s=7.5)
    # every sample is inside some window
    covered = np.zeros(n, dtype=bool)
    for w in ws:
        covered[int(round(w.start_s * SAMPLE_RATE)) : int(round(w.end_s * SAMPLE_RATE))] = True
    assert covered.all()


@pytest.mark.parametrize("seconds", [3.0, 3.3, 7.0, 0.01, 10.0])
def test_short_clip_repeat_padding_equals_laion_clap(seconds: float) -> None:
    import torch

    ref = laion_data_functions("get_audio_features")["get_audio_features"]
    x = quantize(_signal(seconds, SAMPLE_RATE, seed=5)[:, 0])
    ws = windows(x)
    assert len(ws) == 1
    assert ws[0].start_s == 0.0 and ws[0].end_s == pytest.approx(x.shape[0] / SAMPLE_RATE)
    sample = ref({}, torch.from_numpy(x), 480000, data_truncating="rand_trunc", data_filling="repeatpad", audio_cfg={})
    expected = sample["waveform"].numpy()
    assert expected.shape == (WINDOW_SAMPLES,)
    np.testing.assert_array_equal(ws[0].samples, expected)
    assert not bool(sample["longer"])


def test_repeat_pad_zero_fills_the_remainder() -> None:
    x = np.arange(1, 200001, dtype=np.float32)  # 200000 samples: 2 repeats + 80000 zeros
    out = repeat_pad(x)
    np.testing.assert_array_equal(out[:200000], x)
    np.testing.assert_array_equal(out[200000:400000], x)
    assert not out[400000:].any()


def test_window_edges() -> None:
    x = quantize(_signal(10.0, SAMPLE_RATE)[:, 0])
    assert [(w.start_s, w.end_s) for w in windows(x)] == [(0.0, 10.0)]
    # 10 s + 1 sample (resampling's rounding): no near-duplicate second window
    assert len(windows(np.concatenate([x, x[:1]]))) == 1
    # 10 s + 1 s: the second window is end-aligned
    extra = SAMPLE_RATE
    y = np.concatenate([x, x[:extra]])
    ws = windows(y)
    assert len(ws) == 2 and ws[1].end_s == pytest.approx(y.shape[0] / SAMPLE_RATE)
    assert ws[1].start_s == pytest.approx(extra / SAMPLE_RATE)
    np.testing.assert_array_equal(ws[1].samples, y[extra:])
    assert windows(np.zeros(0, dtype=np.float32)) == []
    assert isinstance(ws[0], AudioWindow)
    with pytest.raises(UsageError):
        windows(x, hop_s=0)
    with pytest.raises(UsageError):
        windows(x, hop_s=12.0)


def test_windows_are_deterministic(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.wav", _signal(23.0, 22050), 22050, "WAV", "PCM_16")
    a = [w.samples for w in windows(load_audio(path), hop_s=4.0)]
    b = [w.samples for w in windows(load_audio(path), hop_s=4.0)]
    assert len(a) == len(b) == 5
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


def _errors(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    cases: dict[str, tuple[Path, str]] = {}
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    cases["zero-byte"] = (zero, "empty file")
    empty = _write(tmp_path / "empty.wav", np.zeros((0, 1), dtype=np.float32), 48000, "WAV", "PCM_16")
    cases["no samples"] = (empty, "no samples")
    silent = _write(tmp_path / "silent.flac", np.zeros((48000, 2), dtype=np.float32), 44100, "FLAC", "PCM_16")
    cases["silent"] = (silent, "silent")
    tiny = _write(tmp_path / "tiny.wav", np.full((4800, 1), 1e-6, dtype=np.float32), 48000, "WAV", "FLOAT")
    cases["below 16-bit"] = (tiny, "silent")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    cases["garbage"] = (garbage, "cannot decode audio")
    m4a = tmp_path / "song.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\x00" * 200)
    cases["m4a"] = (m4a, "MP4")
    truncated = tmp_path / "trunc.mp3"
    truncated.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 10)
    cases["broken mp3"] = (truncated, "MP3")
    cases["missing"] = (tmp_path / "nope.flac", "cannot read")
    return cases


def test_bad_audio_raises_media_error(tmp_path: Path) -> None:
    for label, (path, needle) in _errors(tmp_path).items():
        with pytest.raises(MediaError) as info:
            load_audio(path)
        err = info.value
        assert err.path == str(path), label
        assert needle in err.reason, (label, err.reason)
        assert "\n" not in str(err), label
