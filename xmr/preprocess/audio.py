"""Audio decoding and windowing for the CLAP space (numpy only, no torch).

``load_audio`` reproduces what LAION-CLAP does before its model sees a file
(``CLAP_Module.get_audio_embedding_from_filelist``): ``librosa.load(path,
sr=48000)`` -- soundfile decode, mean over channels, soxr "HQ" resampling,
length fixed to ``ceil(n * 48000 / sr)`` -- followed by the int16 round trip
``int16_to_float32(float32_to_int16(x))``. It reads block by block and streams
through soxr, whose streamed output is bit-identical to the one-shot call
librosa makes, so memory is the 48 kHz mono result plus one block.

``windows`` cuts that signal into the fixed 10 s inputs the model takes. A
window shorter than 10 s (a file shorter than one window) is filled the way
laion-clap's ``get_audio_features(..., data_filling="repeatpad")`` does:
repeat the clip ``int(480000 / n)`` times, then zero-pad. Files longer than
one window never need laion-clap's random crop, so every embedding is
deterministic.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmr.errors import MediaError, UsageError

SAMPLE_RATE = 48000
WINDOW_S = 10.0
WINDOW_SAMPLES = 480000  # laion-clap's max_len / audio_cfg.clip_samples
TAIL_TOLERANCE_S = 0.01
RESAMPLE_QUALITY = "soxr_hq"  # librosa.load's default res_type
_BLOCK_FRAMES = 1 << 18  # ~6 s at 44.1 kHz per read

# Extensions libsndfile cannot decode, named so the error says what the file is.
_UNSUPPORTED = {
    ".m4a": "AAC/ALAC in an MP4 container",
    ".mp4": "MP4 container",
    ".aac": "raw AAC",
    ".wma": "Windows Media Audio",
    ".webm": "WebM container",
    ".mka": "Matroska container",
    ".amr": "AMR",
    ".ac3": "AC-3",
}


def int16_to_float32(x: np.ndarray) -> np.ndarray:
    # verbatim from laion_clap/training/data.py
    return (x / 32767.0).astype(np.float32)


def float32_to_int16(x: np.ndarray) -> np.ndarray:
    # verbatim from laion_clap/training/data.py
    x = np.clip(x, a_min=-1.0, a_max=1.0)
    return (x * 32767.0).astype(np.int16)


def quantize(x: np.ndarray) -> np.ndarray:
    """The int16 round trip laion-clap applies to every waveform before embedding."""
    return int16_to_float32(float32_to_int16(x))


def _sniff(path: Path) -> str | None:
    """Name the container from its magic bytes, for error messages only."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return None
    if head[4:8] == b"ftyp":
        return "MP4/M4A (AAC or ALAC)"
    if head.startswith(b"\x30\x26\xb2\x75"):
        return "ASF/WMA"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    if head.startswith(b"RIFF"):
        return "WAV"
    if head.startswith(b"fLaC"):
        return "FLAC"
    if head.startswith(b"OggS"):
        return "Ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    return None


def _undecodable(path: Path, exc: Exception | None) -> MediaError:
    kind = _UNSUPPORTED.get(path.suffix.lower())
    sniffed = _sniff(path)
    detail = f" ({str(exc).strip().splitlines()[0]})" if exc is not None and str(exc).strip() else ""
    if sniffed and sniffed.startswith(("MP4", "ASF", "Matroska")):
        kind = sniffed
    if kind:
        reason = f"cannot decode audio: {kind} is not supported by libsndfile; convert to WAV, FLAC, OGG or MP3"
    elif sniffed:
        reason = f"cannot decode audio: file looks like {sniffed} but libsndfile cannot read it{detail}"
    else:
        reason = f"cannot decode audio: not a format libsndfile can read{detail}"
    return MediaError(reason, path=path)


def load_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode ``path`` to float32 mono at 48 kHz, int16-quantised like laion-clap.

    Raises MediaError for a missing, empty, undecodable or all-silent file.
    """
    import soundfile as sf
    import soxr

    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise MediaError(f"cannot read audio file: {exc.strerror or exc}", path=p) from exc
    if size == 0:
        raise MediaError("empty file (0 bytes)", path=p)

    try:
        snd = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise _undecodable(p, exc) from exc

    chunks: list[np.ndarray] = []
    n_in = 0
    try:
        with snd:
            sr = int(snd.samplerate)
            if sr <= 0:
                raise MediaError(f"invalid sample rate {sr}", path=p)
            stream = None
            if sr != SAMPLE_RATE:
                # streamed soxr output equals soxr.resample on the whole signal
                stream = soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
            while True:
                block = snd.read(frames=_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                n_in += block.shape[0]
                # librosa.to_mono: mean over channels (no-op for mono)
                mono = block[:, 0].copy() if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
                chunks.append(stream.resample_chunk(mono) if stream is not None else mono)
            if stream is not None:
                chunks.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, MemoryError) as exc:
        raise MediaError(f"cannot decode audio: {exc}", path=p) from exc

    if n_in == 0:
        raise MediaError("audio has no samples", path=p)
    audio = np.concatenate(chunks) if len(chunks) != 1 else chunks[0]
    del chunks
    if sr != SAMPLE_RATE:
        # librosa.util.fix_length to ceil(n * ratio): zero-pad or trim
        n_out = int(np.ceil(n_in * (float(SAMPLE_RATE) / sr)))
        if audio.shape[0] < n_out:
            audio = np.pad(audio, (0, n_out - audio.shape[0]))
        else:
            audio = audio[:n_out]
    if not np.all(np.isfinite(audio)):
        raise MediaError("cannot decode audio: samples are not finite (NaN/inf)", path=p)
    audio = np.ascontiguousarray(quantize(audio), dtype=np.float32)
    if not np.any(audio):
        raise MediaError("audio is silent (every sample is zero at 16-bit precision)", path=p)
    return audio


@dataclass(frozen=True)
class AudioWindow:
    """One model input: ``samples`` always holds exactly one window (480000 at 10 s).

    ``start_s``/``end_s`` are the span of the *real* audio it contains; for a
    clip shorter than a window, ``end_s`` is the clip's end and the rest of
    ``samples`` is repeat padding.
    """

    start_s: float
    end_s: float
    samples: np.ndarray


def repeat_pad(x: np.ndarray, length: int = WINDOW_SAMPLES) -> np.ndarray:
    """laion-clap's "repeatpad" filling for a clip shorter than ``length``.

    ``int(length / n)`` whole repeats, then zeros up to ``length`` (no partial
    repeat), exactly as ``get_audio_features`` does it.
    """
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("cannot pad an empty clip")
    if n >= length:
        return np.ascontiguousarray(x[:length], dtype=np.float32)
    n_repeat = int(length / n)
    out = np.zeros(length, dtype=np.float32)
    out[: n * n_repeat] = np.tile(x.astype(np.float32, copy=False), n_repeat)
    return out


def windows(
    audio: np.ndarray,
    *,
    window_s: float = WINDOW_S,
    hop_s: float = WINDOW_S,
    sample_rate: int = SAMPLE_RATE,
) -> list[AudioWindow]:
    """Fixed-length windows covering all of ``audio`` (1-D, at ``sample_rate``).

    Windows start at 0, hop, 2*hop, ... until one reaches the end of the
    file (a remainder of at most ``TAIL_TOLERANCE_S`` after a full window, such as
    resampling's rounding sample, is left out). Tail rule: when the audio is shorter than one window, the single
    window is repeat-padded (laion-clap's "repeatpad"); when it is longer, the
    last window is *end-aligned* -- it starts at ``duration - window_s`` and
    so overlaps its predecessor, as laion-clap's own sliding-window inference
    (``CLAP.audio_infer``) does -- so no window is mostly padding. Start/end
    seconds are the real span each window holds.
    """
    if window_s <= 0 or hop_s <= 0:
        raise UsageError(f"audio window and hop must be positive (got window {window_s} s, hop {hop_s} s)")
    if hop_s > window_s:
        raise UsageError(f"audio hop ({hop_s} s) longer than the window ({window_s} s) would skip audio")
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {x.shape}")
    n = int(x.shape[0])
    if n == 0:
        return []
    win = int(round(window_s * sample_rate))
    hop = int(round(hop_s * sample_rate))
    sr = float(sample_rate)
    if n <= win:
        return [AudioWindow(0.0, n / sr, repeat_pad(x, win))]
    tol = int(round(TAIL_TOLERANCE_S * sample_rate))
    out: list[AudioWindow] = []
    start = 0
    while True:
        if start + win >= n - tol:
            if start + win < n:
                # a resampling rounding remainder (<= 10 ms) gets no window of its own:
                # a 30 s file is 3 windows, not 3 and a near-duplicate
                out.append(AudioWindow(start / sr, (start + win) / sr, x[start : start + win].copy()))
                break
            start = n - win  # end-aligned tail (a no-op when it fits exactly)
            out.append(AudioWindow(start / sr, n / sr, x[start:n].copy()))
            break
        out.append(AudioWindow(start / sr, (start + win) / sr, x[start : start + win].copy()))
        start += hop
    return out


def window_count(
    n_samples: int, *, window_s: float = WINDOW_S, hop_s: float = WINDOW_S, sample_rate: int = SAMPLE_RATE
) -> int:
    """How many windows ``windows`` makes for ``n_samples`` (without building them)."""
    if n_samples <= 0:
        return 0
    win = int(round(window_s * sample_rate))
    hop = int(round(hop_s * sample_rate))
    if n_samples <= win:
        return 1
    tol = int(round(TAIL_TOLERANCE_S * sample_rate))
    return 1 + max(0, math.ceil((n_samples - win - tol) / hop))
