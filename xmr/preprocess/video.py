"""Video decoding with PyAV: frames sampled by time and scene cut, and the soundtrack.

Frames are streamed: each sampled frame is handed to the caller (who preprocesses it for
CLIP at once) and only a small RGB thumbnail of the last kept frame is held, so a
two-hour video costs no more memory than its kept frames' preprocessed pixels.

Sampling (``Sampling``): a frame at least every ``every_s`` seconds (spread further when
the video is so long that ``max_frames`` would be exceeded) and one at each scene cut (the
mean absolute difference of 24x14 RGB thumbnails of consecutive decoded frames above
``scene_cut``); a sampled frame whose thumbnail nearly equals the last kept frame's (below
``same_as_previous``) is dropped without being embedded (the cheap test, on thumbnails, not
embeddings). When the video's keyframes are at most ``every_s`` apart (phones and cameras
write one every 1-2 s, and encoders put one at each cut), only keyframes are decoded
(``skip_frame="NONKEY"``): a fraction of the decoding work. Otherwise every frame is.

Times are presentation times (``frame.pts * time_base``) from the start of the video, so
variable frame rates are handled; the display matrix (rotation) and non-square pixels
(sample aspect ratio) are applied, as a player shows the frame.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from xmr.errors import MediaError
from xmr.preprocess.audio import TAIL_TOLERANCE_S, AudioWindow, quantize, repeat_pad, windows

THUMB_W, THUMB_H = 24, 14
AUDIO_RATE = 48_000
TRUNCATED_GAP_S = 2.0  # frames ending this much (and 10%) before the declared duration: a truncated file


@dataclass(frozen=True)
class Sampling:
    """How frames are chosen; recorded as the video kind's provenance."""

    every_s: float = 2.0
    max_frames: int = 300
    scene_cut: float = 0.12  # mean |difference| of thumbnails, 0-1
    same_as_previous: float = 0.012  # a sample this close to the last kept frame is dropped
    max_short_side: int = 448  # frames are scaled down to this before preprocessing (>= 2x CLIP's input)
    deadline_s: float | None = 900.0  # per file: decoding beyond it fails the file

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SampleStats:
    """What sampling one video did (provenance)."""

    duration_s: float = 0.0
    kept: int = 0
    dropped_same: int = 0  # near-duplicates of the previous kept frame
    dropped_cap: int = 0  # beyond max_frames
    scene_cuts: int = 0
    decoded: int = 0
    keyframes_only: bool = False
    interval_s: float = 0.0
    corrupt_packets: int = 0
    notes: list[str] = field(default_factory=list)


class _Deadline:
    def __init__(self, seconds: float | None, path: str):
        self.end = None if seconds is None else time.monotonic() + seconds
        self.seconds, self.path = seconds, path

    def check(self) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise MediaError(f"video decoding exceeded the {self.seconds:g} s per-file limit", path=self.path)


def _one_line(exc: BaseException) -> str:
    why = getattr(exc, "strerror", None)  # FFmpeg's errors: the reason without errno and path
    return " ".join(str(why or exc).split()) or type(exc).__name__


def open_container(path: Any, name: str | None = None) -> Any:
    """``av.open`` with a one-line MediaError for anything it cannot open."""
    import av

    where = name if name is not None else path
    try:
        return av.open(path, metadata_errors="ignore")
    except FileNotFoundError:
        raise MediaError("cannot read file: no such file", path=where) from None
    except PermissionError:
        raise MediaError("cannot read file: permission denied", path=where) from None
    except Exception as exc:  # av.error.InvalidDataError and kin: corrupt or truncated
        raise MediaError(f"cannot open video: {_one_line(exc)}", path=where) from None


def video_stream(container: Any, where: Any) -> Any:
    streams = [s for s in container.streams.video if not _is_cover_art(s)]
    if not streams:
        raise MediaError("no video stream", path=where)
    stream = streams[0]
    try:
        ctx = stream.codec_context
        if ctx is None or not ctx.is_decoder:
            raise ValueError
    except Exception:
        raise MediaError(f"unsupported video codec: {_codec_name(stream)}", path=where) from None
    return stream


def _is_cover_art(stream: Any) -> bool:
    try:
        return bool(stream.disposition & 0x400)  # AV_DISPOSITION_ATTACHED_PIC
    except Exception:
        return False


def _codec_name(stream: Any) -> str:
    try:
        return str(stream.codec_context.name)
    except Exception:
        return "unknown"


def _origin(container: Any, stream: Any) -> float:
    """The presentation time of the video's start: times are counted from it."""
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    if container.start_time is not None:
        return container.start_time / 1_000_000
    return 0.0


def duration_s(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def upright(frame: Any, stream: Any, max_short_side: int | None) -> Any:
    """The frame as a PIL RGB image as a player shows it: square pixels, rotated, at most
    ``max_short_side`` on its short side (None: full size)."""
    from PIL import Image

    w, h = frame.width, frame.height
    sar = stream.codec_context.sample_aspect_ratio or stream.sample_aspect_ratio
    dw = w
    if sar is not None and sar.numerator > 0 and sar.denominator > 0 and sar != 1:
        dw = max(1, round(w * float(sar)))
    scale = 1.0 if max_short_side is None else min(1.0, max_short_side / max(1, min(dw, h)))
    tw, th = max(1, round(dw * scale)), max(1, round(h * scale))
    if (tw, th) == (w, h):
        arr = frame.to_ndarray(format="rgb24")
    else:
        arr = frame.reformat(width=tw, height=th, format="rgb24", interpolation="AREA").to_ndarray()
    k = _quarter_turns(frame)
    if k:
        arr = np.rot90(arr, k)  # counter-clockwise, as the display matrix says
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def _quarter_turns(frame: Any) -> int:
    try:
        rot = frame.rotation or 0
    except Exception:
        return 0
    return int(round(rot / 90.0)) % 4


def _thumb(frame: Any) -> np.ndarray:
    return frame.reformat(width=THUMB_W, height=THUMB_H, format="rgb24").to_ndarray().astype(np.float32) / 255.0


def _decoded_frames(container: Any, stream: Any, stats: SampleStats, deadline: _Deadline) -> Iterator[Any]:
    import av

    for packet in container.demux(stream):
        deadline.check()
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            stats.corrupt_packets += 1
            continue
        except Exception as exc:  # unsupported profile, broken stream state
            raise MediaError(f"cannot decode video: {_one_line(exc)}") from None
        yield from frames


def sample_frames(
    path: str, sampling: Sampling, convert: Callable[[Any], Any], stats: SampleStats | None = None
) -> list[tuple[float, float, Any]]:
    """(start_s, end_s, convert(upright PIL image)) for each kept frame, in time order: a
    frame stands for the time until the next kept one. ``convert`` runs as each frame is
    decoded (CLIP's preprocessing), so no full-size frame is held. ``stats`` is filled in.
    Raises MediaError with a one-line reason."""
    stats = SampleStats() if stats is None else stats
    deadline = _Deadline(sampling.deadline_s, path)
    with open_container(path) as probe:
        s = video_stream(probe, path)
        dur = duration_s(probe, s)
        keyframes_first = _keyframes_worth_trying(s)
    interval = sampling.every_s
    if dur and sampling.max_frames > 0 and dur / interval > sampling.max_frames:
        interval = dur / sampling.max_frames  # long videos: samples spread over the whole length
    out: list[tuple[float, Any]] = []
    done = False
    if keyframes_first:
        stats.__init__(duration_s=dur or 0.0, interval_s=interval)  # type: ignore[misc]
        done = _run(path, sampling, interval, True, stats, deadline, out, convert)
    if not done:
        out.clear()
        stats.__init__(duration_s=dur or 0.0, interval_s=interval)  # type: ignore[misc]
        _run(path, sampling, interval, False, stats, deadline, out, convert)
    ends = [t for t, _ in out[1:]] + [max(stats.duration_s, out[-1][0])]
    return [(t, end, px) for (t, px), end in zip(out, ends, strict=False)]


def _keyframes_worth_trying(stream: Any) -> bool:
    """Worth trying keyframes only: the container does not say the codec is intra-only
    (then every frame is a keyframe and skipping saves nothing)."""
    try:
        props = stream.codec_context.codec.properties
        return not bool(props & 1)  # AV_CODEC_PROP_INTRA_ONLY
    except Exception:
        return True


def _run(
    path: str,
    sampling: Sampling,
    interval: float,
    keyframes_only: bool,
    stats: SampleStats,
    deadline: _Deadline,
    out: list[tuple[float, Any]],
    convert: Callable[[Any], Any],
) -> bool:
    """One decoding pass. Keyframes only: returns False as soon as two keyframes are further
    apart than the interval allows (the caller then decodes every frame)."""
    eps = 1e-6
    with open_container(path) as c:
        stream = video_stream(c, path)
        stream.thread_type = "AUTO"
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        stats.keyframes_only = keyframes_only
        t0 = _origin(c, stream)
        prev_thumb = kept_thumb = None
        last_t: float | None = None  # last sampled (kept or dropped as the same)
        last_seen: float | None = None
        try:
            for frame in _decoded_frames(c, stream, stats, deadline):
                if frame.pts is None:
                    continue
                t = max(0.0, float(frame.pts * frame.time_base) - t0)
                if keyframes_only and (t - (last_seen if last_seen is not None else 0.0)) > interval + 0.05:
                    return False
                last_seen = t
                stats.decoded += 1
                thumb = _thumb(frame)
                cut = prev_thumb is not None and float(np.abs(thumb - prev_thumb).mean()) > sampling.scene_cut
                prev_thumb = thumb
                due = last_t is None or t >= last_t + interval - eps
                if cut:
                    stats.scene_cuts += 1
                if not (due or cut):
                    continue
                last_t = t
                if kept_thumb is not None and float(np.abs(thumb - kept_thumb).mean()) < sampling.same_as_previous:
                    stats.dropped_same += 1
                    continue
                if sampling.max_frames > 0 and stats.kept >= sampling.max_frames:
                    stats.dropped_cap += 1
                    continue
                kept_thumb = thumb
                stats.kept += 1
                out.append((t, convert(upright(frame, stream, sampling.max_short_side))))
        except MediaError as exc:
            raise MediaError(exc.reason, path=path) from None
        if keyframes_only and last_seen is not None and stats.duration_s - last_seen > interval + 0.05:
            return False
        if stats.decoded == 0:
            what = "no decodable video frames"
            if stats.corrupt_packets:
                what += f" ({stats.corrupt_packets} corrupt packet(s): truncated or damaged file)"
            raise MediaError(what, path=path)
        if last_seen is not None:
            declared = stats.duration_s
            if declared and last_seen < 0.9 * declared and declared - last_seen > TRUNCATED_GAP_S:
                raise MediaError(
                    f"truncated or damaged: video frames stop at {last_seen:.1f} s of {declared:.1f} s", path=path
                )
            rate = stream.average_rate or stream.guessed_rate
            step = 1.0 / float(rate) if rate else 0.0
            stats.duration_s = max(stats.duration_s, last_seen + step)
    if stats.corrupt_packets:
        stats.notes.append(f"{stats.corrupt_packets} corrupt packet(s) skipped")
    return True


def soundtrack(path: str, deadline_s: float | None = None) -> np.ndarray | None:
    """The first audio track as float32 mono at 48 kHz on the video's clock (sample 0 at the
    video's start), int16-quantised like audio files; None when there is no audio track.
    Holds the whole track: ``soundtrack_windows`` is what indexing uses."""
    with open_container(path) as c:
        chunks = list(_soundtrack_chunks(c, path, _Deadline(deadline_s, path)))
    return np.concatenate(chunks) if chunks else None


def soundtrack_windows(
    path: str,
    *,
    window_s: float,
    hop_s: float,
    deadline_s: float | None = None,
    picture_end_s: float | None = None,
) -> list[AudioWindow] | None:
    """The soundtrack cut into windows as audio files are (``xmr.preprocess.audio.windows``),
    streamed: the track is decoded, resampled and windowed as it goes, so only the windows
    are held, never the whole track beside them. The encoder's padding past
    ``picture_end_s`` (less than half a second, e.g. AAC's last frame) gets no window of
    its own. None when there is no audio track (or it holds no samples)."""
    deadline = _Deadline(deadline_s, path)
    end_at = None if picture_end_s is None else int(round(picture_end_s * AUDIO_RATE))
    with open_container(path) as c:
        if not c.streams.audio:
            return None
        return stream_windows(
            _soundtrack_chunks(c, path, deadline),
            window_s=window_s,
            hop_s=hop_s,
            end_at=end_at,
            end_slack=AUDIO_RATE // 2,
        )


def _soundtrack_chunks(c: Any, path: str, deadline: _Deadline) -> Iterator[np.ndarray]:
    """The first audio track of open container ``c``: quantised float32 mono chunks at
    48 kHz on the video's clock (leading silence added when the sound starts late, encoder
    priming before the video's start removed). Nothing when there is no audio track."""
    pending: list[np.ndarray] = []
    n = 0
    # checked and quantised a second at a time: per decoded frame (1,024 samples) NumPy's
    # call overhead would cost more than the work
    for x in _mono_chunks(c, path, deadline):
        pending.append(x)
        n += len(x)
        if n >= AUDIO_RATE:
            yield _quantised(pending, path)
            pending, n = [], 0
    if pending:
        yield _quantised(pending, path)


def _quantised(parts: list[np.ndarray], path: str) -> np.ndarray:
    x = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if not np.all(np.isfinite(x)):
        raise MediaError("cannot decode the audio track: samples are not finite", path=path)
    return np.ascontiguousarray(quantize(x), dtype=np.float32)


def _mono_chunks(c: Any, path: str, deadline: _Deadline) -> Iterator[np.ndarray]:
    import av

    if not c.streams.audio:
        return
    a = c.streams.audio[0]
    vs = [s for s in c.streams.video if not _is_cover_art(s)]
    t0 = _origin(c, vs[0]) if vs else _origin(c, a)
    resampler = av.AudioResampler(format="fltp", rate=AUDIO_RATE)
    first: float | None = None
    skip = 0  # priming samples still to drop

    def emit(frames: list[Any]) -> Iterator[np.ndarray]:
        nonlocal skip
        for o in frames:
            x = _mono(o.to_ndarray())
            if skip:
                cut = min(skip, len(x))
                x, skip = x[cut:], skip - cut
            if len(x):
                yield x

    try:
        for packet in c.demux(a):
            deadline.check()
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            for fr in frames:
                if first is None and fr.pts is not None:
                    first = float(fr.pts * fr.time_base) - t0
                    shift = int(round(first * AUDIO_RATE))
                    if shift > 0:
                        yield np.zeros(shift, np.float32)  # the sound starts after the picture
                    else:
                        skip = -shift  # encoder priming before the video starts
                yield from emit(resampler.resample(fr))
        yield from emit(resampler.resample(None))
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot decode the audio track: {_one_line(exc)}", path=path) from None


def stream_windows(
    chunks: Iterable[np.ndarray],
    *,
    window_s: float,
    hop_s: float,
    sample_rate: int = AUDIO_RATE,
    end_at: int | None = None,
    end_slack: int = 0,
) -> list[AudioWindow] | None:
    """``windows(np.concatenate(chunks)[:n])`` without holding the concatenation: only the
    samples from one hop before the next window on are kept. ``n`` is ``end_at`` when the
    signal is longer than it by less than ``end_slack`` samples, else the signal's length.
    None when the chunks hold no samples."""
    windows(np.zeros(0, np.float32), window_s=window_s, hop_s=hop_s)  # the same checks of window and hop
    win = int(round(window_s * sample_rate))
    hop = int(round(hop_s * sample_rate))
    tol = int(round(TAIL_TOLERANCE_S * sample_rate))
    sr = float(sample_rate)
    margin = end_slack if end_at is not None else 0  # samples a cut at end_at may still remove
    out: list[AudioWindow] = []
    buf = np.zeros(0, np.float32)  # samples [base, base + len(buf))
    base = start = 0
    pending: list[np.ndarray] = []
    pending_n = 0

    def window(lo: int, hi: int) -> AudioWindow:
        return AudioWindow(lo / sr, hi / sr, buf[lo - base : hi - base].copy())

    for chunk in chunks:
        pending.append(chunk)
        pending_n += len(chunk)
        seen = base + len(buf) + pending_n
        if seen - margin <= start + win + tol:
            continue
        buf = np.concatenate([buf, *pending])
        pending, pending_n = [], 0
        # a full window at ``start`` is certain once the signal runs past it by the tolerance
        while seen - margin > start + win + tol:
            out.append(window(start, start + win))
            start += hop
        keep = max(base, start - hop)  # an end-aligned tail starts after the last window's start
        buf, base = buf[keep - base :].copy(), keep
    if pending:
        buf = np.concatenate([buf, *pending])
    seen = base + len(buf)
    n = seen
    if end_at is not None and 0 < seen - end_at < end_slack:
        n = end_at
    if n == 0:
        return None
    if not out and n <= win:
        return [AudioWindow(0.0, n / sr, repeat_pad(buf[:n], win))]
    while True:  # the rest as ``windows`` does it, end-aligned tail included
        if start + win >= n - tol:
            if start + win < n:
                out.append(window(start, start + win))
            else:
                out.append(window(n - win, n))
            return out
        out.append(window(start, start + win))
        start += hop


def _mono(planes: np.ndarray) -> np.ndarray:
    # librosa.to_mono, as audio files get: the mean over channels
    planes = np.asarray(planes, dtype=np.float32)
    return planes[0].copy() if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32)


def frame_at(src: Any, at_s: float, name: str | None = None, max_short_side: int | None = None) -> Any:
    """The upright frame shown at ``at_s`` seconds (the first one at or after it), as a PIL
    image: a video result's thumbnail. ``src``: a path or a binary file."""
    where = name if name is not None else src
    with open_container(src, name) as c:
        stream = video_stream(c, where)
        stream.thread_type = "AUTO"
        t0 = _origin(c, stream)
        if at_s > 0 and stream.time_base is not None:
            try:
                c.seek(int((at_s + t0) / stream.time_base), stream=stream, backward=True)
            except Exception:
                c.seek(0)
        best = None
        try:
            for frame in c.decode(stream):
                if frame.pts is None:
                    continue
                best = frame
                if float(frame.pts * frame.time_base) - t0 >= at_s - 1e-3:
                    break
        except Exception as exc:
            if best is None:
                raise MediaError(f"cannot decode video: {_one_line(exc)}", path=where) from None
        if best is None:
            raise MediaError("no decodable video frames", path=where)
        return upright(best, stream, max_short_side)


def window_span(n_samples: int) -> float:
    return n_samples / AUDIO_RATE if n_samples else 0.0


def clock(t: float) -> str:
    """0:42, 1:02:03: a time as a table shows it."""
    s = int(math.floor(t))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
