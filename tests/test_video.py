"""Video: frames in the clip space and the soundtrack in the clap space, every hit with its time.

The fixtures are written with PyAV at test time (tests/video_helpers.py). The deterministic
test encoders hash their inputs, so a query finds a segment only when its pixels / samples
are exactly those of the indexed segment: the still is a constant-colour scene (every
scaling of it gives the same pixels) and the tone query is the video's own sound for one
window, decoded here with PyAV independently of xmr's decoder.
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from importlib import resources
from pathlib import Path

import av
import fake_encoders
import jsonschema
import numpy as np
import pytest
import soundfile as sf
from cli_helpers import invoke
from PIL import Image
from video_helpers import AUDIO_RATE, Spec, make_video

from xmr import media, paths
from xmr.catalogue import Catalogue

pytestmark = pytest.mark.usefixtures("fake_encoders")
SCHEMA = json.loads(resources.files("xmr").joinpath("data/search.schema.json").read_text())
HAS_X265 = "libx265" in av.codecs_available

# name -> the fixture: each with its own scene colour and interval, the tone in 10-20 s
# (the second 10 s sound window)
VIDEOS = {
    "h264_aac.mp4": Spec(codec="libx264", audio_codec="aac", scene=(4.0, 8.0), scene_rgb=(220, 30, 30)),
    "hevc_rot90.mov": Spec(
        codec="libx265" if HAS_X265 else "mpeg4",
        audio_codec="aac",
        scene=(12.0, 16.0),
        scene_rgb=(30, 200, 40),
        rotation=90,
        options=(("x265-params", "log-level=error"),) if HAS_X265 else (),
    ),
    "vp9_opus.webm": Spec(codec="libvpx-vp9", audio_codec="libopus", scene=(6.0, 10.0), scene_rgb=(40, 40, 210)),
    "silent.mp4": Spec(codec="libx264", audio_codec=None, scene=(14.0, 18.0), scene_rgb=(230, 200, 20)),
}
for _name, _spec in VIDEOS.items():
    VIDEOS[_name] = Spec(**{**_spec.__dict__, "duration_s": 20.0, "tone": (10.0, 20.0)})
TONES = {"h264_aac.mp4": 440.0, "hevc_rot90.mov": 660.0, "vp9_opus.webm": 990.0}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    lib = root / "lib"
    lib.mkdir()
    for name, spec in VIDEOS.items():
        make_video(lib / name, Spec(**{**spec.__dict__, "tone_hz": TONES.get(name, 440.0)}))
    good = (lib / "h264_aac.mp4").read_bytes()
    # corrupt: a real ftyp box, then noise; truncated: the first 40 % of a WebM (its frames end early)
    (lib / "corrupt.mp4").write_bytes(good[:32] + np.random.default_rng(0).bytes(20_000))
    webm = (lib / "vp9_opus.webm").read_bytes()
    (lib / "truncated.webm").write_bytes(webm[: len(webm) * 2 // 5])
    return lib


def _still(video: Path, at_s: float, out: Path) -> Path:
    """The frame shown at ``at_s``, upright, saved losslessly: decoded here, not by xmr."""
    with av.open(str(video)) as c:
        for frame in c.decode(video=0):
            if frame.time is not None and frame.time >= at_s:
                arr = np.rot90(frame.to_ndarray(format="rgb24"), int(round((frame.rotation or 0) / 90)) % 4)
                Image.fromarray(np.ascontiguousarray(arr)).save(out)
                return out
    raise AssertionError("no frame at that time")


def _sound(video: Path, start_s: float, end_s: float, out: Path) -> Path:
    """The video's sound between two times as a float WAV (mono, 48 kHz), decoded here."""
    with av.open(str(video)) as c:
        resampler = av.AudioResampler(format="fltp", rate=AUDIO_RATE)
        chunks, first = [], None
        for frame in c.decode(audio=0):
            if first is None:
                first = float(frame.pts * frame.time_base)
            for o in resampler.resample(frame):
                chunks.append(o.to_ndarray().mean(axis=0))
        for o in resampler.resample(None):
            chunks.append(o.to_ndarray().mean(axis=0))
    sig = np.concatenate(chunks).astype(np.float32)
    shift = int(round((first or 0.0) * AUDIO_RATE))
    sig = sig[-shift:] if shift < 0 else np.concatenate([np.zeros(shift, np.float32), sig])
    sf.write(out, sig[int(start_s * AUDIO_RATE) : int(end_s * AUDIO_RATE)], AUDIO_RATE, subtype="FLOAT")
    return out


@pytest.fixture(scope="module")
def indexed(library: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("XMR_HOME", str(home))
    mp.setenv("XMR_BACKEND_CLIP", "fake_encoders:FakeClip")
    mp.setenv("XMR_BACKEND_CLAP", "fake_encoders:FakeClap")
    mp.setenv("XMR_OFFLINE", "1")
    res = invoke("index", str(library), "--workers", "1", "--json")
    mp.undo()
    assert res.exit_code == 0, res.stderr
    return {"home": home, "report": json.loads(res.stdout)}


@pytest.fixture
def home(indexed: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XMR_HOME", str(indexed["home"]))
    return indexed["home"]


def _search(*args: str) -> dict:
    res = invoke("search", *args, "--json", "--explain")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    jsonschema.validate(doc, SCHEMA)
    return doc


def test_containers_are_claimed_by_content(library: Path, tmp_path: Path) -> None:
    for name in VIDEOS:
        renamed = tmp_path / (name + ".bin")  # the name says nothing
        shutil.copy(library / name, renamed)
        assert media.classify_path(renamed).modality == "video", name
    ts = tmp_path / "clip.data"
    with av.open(str(ts), "w", format="mpegts") as out:
        s = out.add_stream("mpeg2video", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 10)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    assert media.classify_path(ts).modality == "video"
    avi = tmp_path / "x.avi"
    avi.write_bytes(b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(100))
    assert media.classify_path(avi).modality == "video"
    # not video: M4A audio, a HEIF still, noise named .mp4
    m4a = tmp_path / "a.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A isom" + bytes(64))
    assert media.classify_path(m4a).modality != "video"
    heic = tmp_path / "a.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    assert media.classify_path(heic).modality != "video"
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(1).bytes(5000))
    c = media.classify_path(noise)
    assert c.modality == "other" and c.reason == "not video: unrecognised content"


def test_index_reports_bad_videos_and_goes_on(indexed: dict, home: Path) -> None:
    report = indexed["report"]
    assert report["embedded_files"] == 4 and report["failed"] == 2, report
    reasons = {Path(e["path"]).name: e["error"] for e in report["errors"]}
    assert reasons["corrupt.mp4"].startswith("cannot open video:"), reasons
    assert reasons["truncated.webm"].startswith("truncated or damaged: video frames stop at"), reasons
    assert all("\n" not in r for r in reasons.values())


def test_each_video_has_timed_frames_and_sound(home: Path, library: Path) -> None:
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        rows = cat.conn.execute(
            "SELECT f.path, s.space, s.kind, s.start_s, s.end_s FROM files f JOIN segments s ON s.hash = f.hash"
            " WHERE f.modality = 'video' ORDER BY f.path, s.space, s.start_s"
        ).fetchall()
    by = {}
    for path, space, kind, start, end in rows:
        by.setdefault((Path(path).name, space), []).append((kind, start, end))
    for name, spec in VIDEOS.items():
        frames = by[(name, "clip")]
        assert all(k == "image" and s is not None and e > s for k, s, e in frames)
        starts = [s for _, s, _ in frames]
        assert starts == sorted(starts) and starts[0] == 0.0
        assert max(b - a for a, b in zip(starts, starts[1:], strict=False)) <= 2.0 + 1e-6 or any(
            spec.scene[0] - 1e-6 <= s < spec.scene[1] for s in starts
        )
        # the scene's frames after the first are the same picture: dropped, so one frame spans the scene
        in_scene = [s for s in starts if spec.scene[0] - 1e-6 <= s < spec.scene[1]]
        assert len(in_scene) == 1, (name, starts)
        sound = by.get((name, "clap"), [])
        if spec.audio_codec is None:
            assert sound == []
        else:
            assert [(round(s), round(e)) for _, s, e in sound] == [(0, 10), (10, 20)], (name, sound)


@pytest.mark.parametrize("name", list(VIDEOS))
def test_a_still_of_the_scene_finds_the_video_at_the_scene(
    home: Path, library: Path, tmp_path: Path, name: str
) -> None:
    spec = VIDEOS[name]
    still = _still(library / name, (spec.scene[0] + spec.scene[1]) / 2, tmp_path / "still.png")
    doc = _search("--image", str(still), "--type", "video")
    best = doc["results"][0]
    assert Path(best["path"]).name == name and best["modality"] == "video", doc["results"][:2]
    assert spec.scene[0] - 1e-6 <= best["start_s"] < spec.scene[1], best
    assert best["explain"]["segment"] == "frame" and best["space"] == "clip"


@pytest.mark.parametrize("name", [n for n, s in VIDEOS.items() if s.audio_codec])
def test_the_tone_finds_the_video_at_the_tone(home: Path, library: Path, tmp_path: Path, name: str) -> None:
    tone = _sound(library / name, 10.0, 20.0, tmp_path / "tone.wav")
    doc = _search("--audio", str(tone), "--type", "video")
    best = doc["results"][0]
    assert Path(best["path"]).name == name, doc["results"][:2]
    assert 10.0 - 1e-6 <= best["start_s"] < 20.0 and best["explain"]["segment"] == "sound", best


def test_a_video_is_a_query_with_its_frames_and_its_sound(home: Path, library: Path) -> None:
    doc = _search("--video", str(library / "h264_aac.mp4"), "-k", "3")
    assert doc["query"][0]["kind"] == "video"
    assert Path(doc["results"][0]["path"]).name == "h264_aac.mp4"
    spaces = {r["space"] for r in doc["routes"]} if doc.get("routes") else set()
    assert {"clip", "clap"} <= {r["space"] for r in doc["routes"]}, doc["routes"]
    assert spaces
    # a silent video as the query: its frames alone
    silent = _search("--video", str(library / "silent.mp4"), "-k", "1")
    assert Path(silent["results"][0]["path"]).name == "silent.mp4"
    res = invoke("search", "--video", str(library / "corrupt.mp4"))
    assert res.exit_code != 0 and "corrupt.mp4" in res.stderr and "cannot open video" in res.stderr


def test_table_shows_the_time_and_all_segments_lists_the_rest(home: Path, library: Path, tmp_path: Path) -> None:
    spec = VIDEOS["h264_aac.mp4"]
    still = _still(library / "h264_aac.mp4", 5.0, tmp_path / "still.png")
    from xmr.query import QueryPart
    from xmr.render import where_cell as _where  # the table's "where" cell
    from xmr.search import SearchOptions, search

    found = search([QueryPart("image", str(still))], options=SearchOptions(k=1, types=["video"], all_segments=True))
    best = found.results[0]
    assert _where(best.best, best.modality) == f"0:{int(spec.scene[0]):02d} frame"  # the table's "where"
    assert len(best.segments) > 1
    assert {_where(s, "video").split()[1] for s in best.segments} <= {"frame", "sound"}
    doc = _search("--image", str(still), "--type", "video", "-k", "1", "--all-segments")
    segs = doc["results"][0]["segments"]
    assert len(segs) > 1 and all("start_s" in s for s in segs)


def test_rotation_and_thumbnail_frame(library: Path) -> None:
    from xmr.media.video import video_thumbnail

    img = video_thumbnail(str(library / "hevc_rot90.mov"), 1000, "hevc_rot90.mov", at_s=0.0)
    assert img.size == (96, 160)  # stored 160x96, shown upright (portrait)
    spec = VIDEOS["h264_aac.mp4"]
    at = video_thumbnail(str(library / "h264_aac.mp4"), 64, "h264_aac.mp4", at_s=spec.scene[0] + 0.5)
    px = np.asarray(at.convert("RGB"))[at.height // 2, at.width // 2].astype(int)
    assert np.abs(px - np.array(spec.scene_rgb)).max() < 12, px


def test_unchanged_videos_are_not_read_and_a_moved_video_keeps_its_vectors(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    make_video(lib / "v.mp4", Spec(duration_s=6.0, tone=(0.0, 6.0)))
    assert invoke("index", str(lib), "--workers", "0", "--quiet").exit_code == 0
    again = json.loads(invoke("index", str(lib), "--workers", "0", "--json").stdout)
    assert again["files_read"] == 0 and again["bytes_read"] == 0 and again["unchanged"] == 1, again
    (lib / "sub").mkdir()
    (lib / "v.mp4").rename(lib / "sub" / "v.mp4")
    calls = dict(fake_encoders.CALLS)
    moved = json.loads(invoke("index", str(lib), "--workers", "0", "--json").stdout)
    assert moved["moved"] == 1 and moved["embedded_files"] == 0, moved
    assert fake_encoders.CALLS == calls  # nothing embedded again
    info = json.loads(invoke("info", str(lib / "sub" / "v.mp4"), "--json").stdout)
    assert {e["space"]: e["n_segments"] > 0 for e in info["encodings"]} == {"clip": True, "clap": True}


def test_info_shows_the_sampling_and_what_was_kept(home: Path, library: Path) -> None:
    res = invoke("info", str(library / "h264_aac.mp4"), "--json")
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    dec = info["decoding"]
    n = {e["space"]: e["n_segments"] for e in info["encodings"]}
    assert dec["sampling"]["every_s"] == 2.0 and dec["frames_kept"] == n["clip"]
    assert dec["frames_dropped_as_same"] >= 1  # the scene's later samples
    assert dec["audio_track"] is True and dec["audio_windows"] == n["clap"] == 2
    text = invoke("info", str(library / "silent.mp4")).stdout
    assert "sampling: a frame every 2 s" in text and "sound: no audio track" in text, text
    assert "frame(s) dropped" in text


def _pre(img: Image.Image) -> tuple[int, int]:
    return img.size


def test_ten_bit_hevc_anamorphic_pixels_and_variable_frame_rate(tmp_path: Path) -> None:
    from xmr.preprocess.video import SampleStats, Sampling, sample_frames

    if HAS_X265:
        ten = make_video(
            tmp_path / "ten.mkv",
            Spec(
                codec="libx265",
                audio_codec=None,
                pix_fmt="yuv420p10le",
                options=(("x265-params", "log-level=error"),),
            ),
        )
        frames = sample_frames(str(ten), Sampling(), _pre)
        assert frames and frames[0][2] == (160, 96)
    # anamorphic: 2:1 pixels are shown twice as wide
    wide = tmp_path / "wide.mkv"
    with av.open(str(wide), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 80, 96, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for i in range(10):
            f = av.VideoFrame.from_ndarray(np.full((96, 80, 3), 20 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 10)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    assert sample_frames(str(wide), Sampling(), _pre)[0][2] == (160, 96)
    # variable frame rate: times are the frames' own presentation times
    vfr = tmp_path / "vfr.mkv"
    times_ms = [0, 100, 2500, 2600, 5300, 9000]
    with av.open(str(vfr), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            # a little change per frame: neither a cut nor the same picture
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 60 + 8 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    stats = SampleStats()
    got = [round(a, 3) for a, _, _ in sample_frames(str(vfr), Sampling(), _pre, stats)]
    assert got == [0.0, 2.5, 5.3, 9.0], (got, stats)


def test_long_videos_spread_their_frames_and_decoding_has_a_deadline(library: Path) -> None:
    from xmr.errors import MediaError
    from xmr.preprocess.video import SampleStats, Sampling, sample_frames

    stats = SampleStats()
    frames = sample_frames(str(library / "h264_aac.mp4"), Sampling(max_frames=4), _pre, stats)
    assert len(frames) <= 4 and stats.interval_s == pytest.approx(5.0)
    assert frames[-1][1] == pytest.approx(20.0, abs=0.2)  # the last kept frame stands for the rest
    with pytest.raises(MediaError, match="exceeded the 0 s per-file limit"):
        sample_frames(str(library / "h264_aac.mp4"), Sampling(deadline_s=0.0), _pre)


def test_the_server_takes_a_video_upload_and_serves_the_matching_frame(home: Path, library: Path) -> None:
    import io

    from server_helpers import running_server

    name = "vp9_opus.webm"
    spec = VIDEOS[name]
    with running_server(paths.index_dir()) as server:
        for field in ("video", "file"):
            reply = server.upload(field, name, (library / name).read_bytes(), {"k": 3, "explain": True})
            assert reply.status == 200, reply.body[:300]
            doc = reply.json()
            assert doc["query"][0]["kind"] == "video" and Path(doc["results"][0]["path"]).name == name
        still = _still(library / name, spec.scene[0] + 1.0, library.parent / "still.png")
        doc = server.upload("image", "still.png", still.read_bytes(), {"k": 1, "type": ["video"]}).json()
        best = doc["results"][0]
        assert Path(best["path"]).name == name and best["previews"] == ["thumb"]
        assert f"&at={best['start_s']}" in best["urls"]["thumb"]
        thumb = server.request("GET", best["urls"]["thumb"], token=False)
        assert thumb.status == 200 and thumb.headers["content-type"] == "image/jpeg"
        img = Image.open(io.BytesIO(thumb.body)).convert("RGB")
        px = np.asarray(img)[img.height // 2, img.width // 2].astype(int)
        assert np.abs(px - np.array(spec.scene_rgb)).max() < 16, px  # the frame at the hit, not the first
        first = server.request("GET", best["urls"]["thumb"].replace(f"&at={best['start_s']}", ""), token=False)
        assert first.status == 200 and first.body != thumb.body
        part = server.request("GET", best["urls"]["original"], token=False, headers={"Range": "bytes=0-99"})
        assert part.status == 206 and len(part.body) == 100 and part.headers["content-type"] == "video/webm"
        bad = server.request("GET", best["urls"]["thumb"] + "x", token=False)
        assert bad.status in (400, 403)


@pytest.mark.parametrize(
    ("n", "window_s", "hop_s", "end_at"),
    [
        (0, 10.0, 10.0, None),
        (3_000, 10.0, 10.0, None),  # shorter than a window: repeat-padded
        (48_000, 1.0, 1.0, None),  # exactly one window
        (48_000 + 300, 1.0, 1.0, None),  # a rounding remainder within the tolerance
        (250_000, 1.0, 1.0, None),  # an end-aligned tail
        (250_000, 1.0, 0.25, None),  # overlapping windows
        (250_000, 1.0, 1.0, 240_000),  # the padding past the picture's end is cut
        (250_000, 1.0, 1.0, 200_000),  # too much past it to be padding: kept
    ],
)
def test_streamed_windows_equal_the_windows_of_the_whole_track(
    n: int, window_s: float, hop_s: float, end_at: int | None
) -> None:
    from xmr.preprocess.audio import windows
    from xmr.preprocess.video import stream_windows

    rng = np.random.default_rng(n)
    signal = rng.standard_normal(n).astype(np.float32)
    cuts = np.sort(rng.integers(0, max(n, 1), 60))
    chunks = [c for c in np.split(signal, cuts) if len(c)]
    got = stream_windows(iter(chunks), window_s=window_s, hop_s=hop_s, end_at=end_at, end_slack=24_000)
    whole = signal[:end_at] if end_at is not None and 0 < n - end_at < 24_000 else signal
    want = windows(whole, window_s=window_s, hop_s=hop_s, sample_rate=AUDIO_RATE)
    if n == 0:
        assert got is None
        return
    assert got is not None and len(got) == len(want) >= 1
    for g, w in zip(got, want, strict=True):
        assert (g.start_s, g.end_s) == (w.start_s, w.end_s)
        np.testing.assert_array_equal(g.samples, w.samples)


def test_the_soundtrack_is_windowed_as_it_is_decoded(library: Path) -> None:
    from xmr.preprocess.audio import windows
    from xmr.preprocess.video import soundtrack, soundtrack_windows

    video = library / "h264_aac.mp4"
    whole = soundtrack(str(video))
    assert whole is not None and abs(len(whole) / AUDIO_RATE - 20.0) < 0.1
    got = soundtrack_windows(str(video), window_s=10.0, hop_s=10.0, picture_end_s=20.0)
    want = windows(whole[: 20 * AUDIO_RATE] if len(whole) > 20 * AUDIO_RATE else whole, window_s=10.0, hop_s=10.0)
    assert got is not None and [(w.start_s, w.end_s) for w in got] == [(0.0, 10.0), (10.0, 20.0)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.samples, w.samples)
    assert soundtrack_windows(str(library / "silent.mp4"), window_s=10.0, hop_s=10.0) is None


def _tagged_video(path: Path, fmt: str, tags: dict[str, str], shade: int, options: dict | None = None) -> Path:
    """A 1 s 64x48 video whose container carries ``tags`` (PyAV writes them as FFmpeg does)."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        out.metadata.update(tags)
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), shade, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    return path


def _tagged_videos(root: Path) -> dict[str, Path]:
    import os
    from datetime import datetime

    root.mkdir(parents=True, exist_ok=True)
    vids = {
        # MP4's creation time (UTC) and a location atom, as FFmpeg and Android write them
        "may01.mp4": _tagged_video(
            root / "may01.mp4",
            "mp4",
            {"creation_time": "2024-05-01T08:00:00.000000Z", "location": "+52.3702+004.8952/"},
            40,
        ),
        # an iPhone's: the local time with its offset, the place with its altitude (mdta keys)
        "may20.mov": _tagged_video(
            root / "may20.mov",
            "mov",
            {
                "com.apple.quicktime.creationdate": "2024-05-20T23:30:00-0500",
                "com.apple.quicktime.location.ISO6709": "+40.7128-074.0060+010.000/",
                "com.apple.quicktime.make": "Apple",
                "com.apple.quicktime.model": "iPhone 15",
            },
            120,
            {"movflags": "use_metadata_tags"},
        ),
        "untagged.mkv": _tagged_video(root / "untagged.mkv", "matroska", {}, 200),
    }
    stamp = datetime(2023, 1, 15, 12, 0).timestamp()  # the untagged video's date is its mtime
    os.utime(vids["untagged.mkv"], (stamp, stamp))
    return vids


def test_video_metadata_reads_the_recording_time_and_place(tmp_path: Path) -> None:
    from xmr.media.meta import iso6709, video_metadata

    vids = _tagged_videos(tmp_path)
    assert video_metadata(str(vids["may01.mp4"])) == {
        "taken_at": "2024-05-01T08:00:00+00:00",
        "lat": pytest.approx(52.3702),
        "lon": pytest.approx(4.8952),
    }
    iphone = video_metadata(str(vids["may20.mov"]))
    assert iphone["taken_at"] == "2024-05-21T04:30:00+00:00" and iphone["utc_offset"] == "-05:00"
    assert (iphone["lat"], iphone["lon"]) == (pytest.approx(40.7128), pytest.approx(-74.006))
    assert (iphone["camera_make"], iphone["camera_model"]) == ("Apple", "iPhone 15")
    assert video_metadata(str(vids["untagged.mkv"])) == {}
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom garbage")
    assert video_metadata(str(tmp_path / "broken.mp4")) == {}
    # ISO 6709's other forms: degrees and minutes, degrees minutes and seconds; nonsense
    assert iso6709("+5222.212+00453.712/") == (pytest.approx(52.3702), pytest.approx(4.8952))
    assert iso6709("-334130.5+0183006.2/") == (
        pytest.approx(-(33 + 41 / 60 + 30.5 / 3600)),
        pytest.approx(18.50172, abs=1e-5),
    )
    assert iso6709("+95.0000+000.0000/") is None and iso6709("somewhere") is None


def test_date_and_place_filters_find_videos(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    _tagged_videos(root)
    assert invoke("index", str(root), "--workers", "0", "--quiet").exit_code == 0

    def names(*args: str) -> list[str]:
        res = invoke("search", "a video", "--type", "video", "--json", *args)
        assert res.exit_code == 0, res.stderr
        return [Path(r["path"]).name for r in json.loads(res.stdout)["results"]]

    assert set(names("--after", "2024-05-01", "--before", "2024-06-01")) == {"may01.mp4", "may20.mov"}
    assert set(names("--after", "2024-05-21", "--before", "2025-01-01")) == set()  # 20 May where it was filmed
    assert set(names("--before", "2023-02-01")) == {"untagged.mkv"}
    assert names("--near", "52.37,4.9,5") == ["may01.mp4"]
    assert names("--near", "40.71,-74.0,5") == ["may20.mov"]
    assert names("--sort", "date") == ["may20.mov", "may01.mp4", "untagged.mkv"]  # newest first
