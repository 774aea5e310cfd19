"""Video fixtures written with PyAV at test time (never committed).

``make_video`` writes a clip of plain backgrounds with, optionally, a constant-colour scene
between two known times and a sine tone in another interval; the rest of the soundtrack
is quiet noise. The benchmark's camera-like clips come from ``make_camera_video``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

AUDIO_RATE = 48_000


@dataclass(frozen=True)
class Spec:
    codec: str = "libx264"
    audio_codec: str | None = "aac"
    duration_s: float = 12.0
    size: tuple[int, int] = (160, 96)  # width, height as stored
    fps: int = 10
    scene: tuple[float, float] = (4.0, 8.0)  # the coloured scene's interval
    scene_rgb: tuple[int, int, int] = (200, 40, 40)
    tone: tuple[float, float] | None = (0.0, 10.0)  # the tone's interval (one audio window)
    tone_hz: float = 880.0
    rotation: int | None = None  # display rotation (degrees) written in the container
    pix_fmt: str = "yuv420p"
    options: tuple[tuple[str, str], ...] = ()


def background(i: int, size: tuple[int, int]) -> np.ndarray:
    """A grey frame with a slowly moving bar: not constant, so no frame equals the scene."""
    w, h = size
    img = np.full((h, w, 3), 90, np.uint8)
    x = (i * 3) % w
    img[:, x : x + 6] = (30, 160, 220)
    return img


def soundtrack(spec: Spec) -> np.ndarray:
    n = int(round(spec.duration_s * AUDIO_RATE))
    rng = np.random.default_rng(1)
    sig = (rng.standard_normal(n) * 0.01).astype(np.float32)
    if spec.tone is not None:
        a, b = (int(t * AUDIO_RATE) for t in spec.tone)
        t = np.arange(b - a) / AUDIO_RATE
        sig[a:b] = (0.5 * np.sin(2 * np.pi * spec.tone_hz * t)).astype(np.float32)
    return sig


def make_video(path: Path, spec: Spec = Spec()) -> Path:
    import av

    with av.open(str(path), "w") as out:
        v = out.add_stream(spec.codec, rate=spec.fps)
        v.width, v.height = spec.size
        v.pix_fmt = spec.pix_fmt
        if spec.options:
            v.options = dict(spec.options)
        if spec.rotation is not None:
            v.set_display_rotation(spec.rotation)
        a = None
        if spec.audio_codec is not None:
            a = out.add_stream(spec.audio_codec, rate=AUDIO_RATE)
            a.layout = "mono"
        n = int(round(spec.duration_s * spec.fps))
        for i in range(n):
            t = i / spec.fps
            if spec.scene[0] <= t < spec.scene[1]:
                img = np.empty((spec.size[1], spec.size[0], 3), np.uint8)
                img[:] = spec.scene_rgb
            else:
                img = background(i, spec.size)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, spec.fps)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            _write_audio(out, a, soundtrack(spec))
    return path


def _write_audio(out, stream, sig: np.ndarray) -> None:  # noqa: ANN001 - PyAV objects
    import av

    fmt = stream.codec_context.format.name
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, len(sig), chunk):
        part = sig[start : start + chunk]
        if fmt in ("s16", "s16p"):
            arr = (np.clip(part, -1, 1) * 32767).astype(np.int16)[None, :]
        else:
            arr = part[None, :]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt, layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_camera_video(
    path: Path,
    *,
    seconds: float = 60.0,
    size: tuple[int, int] = (1920, 1080),
    fps: int = 30,
    seed: int = 0,
    keyint: int = 60,
) -> Path:
    """A camera-like clip: a textured scene panned slowly, a cut to another scene every ~12 s,
    and a soundtrack of noise and tones. ``keyint``: the keyframe interval (phones: 1-2 s)."""
    import av

    rng = np.random.default_rng(seed)
    w, h = size
    scenes = [_texture(rng, w * 2, h * 2) for _ in range(6)]
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"preset": "ultrafast", "g": str(keyint), "crf": "28"}
        a = out.add_stream("aac", rate=AUDIO_RATE)
        a.layout = "mono"
        n = int(seconds * fps)
        cut_every = int(12 * fps)
        for i in range(n):
            tex = scenes[(i // cut_every) % len(scenes)]
            k = i % cut_every
            x, y = (k * 2) % w, (k // 2) % h
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[y : y + h, x : x + w]), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
        sig = (0.05 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * (220 + 40 * (t // 5)) * t)).astype(
            np.float32
        )
        _write_audio(out, a, sig)
    return path


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    small = rng.integers(0, 256, (h // 40 + 1, w // 40 + 1, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 40, axis=0), 40, axis=1)[:h, :w]
    return np.ascontiguousarray(big)
