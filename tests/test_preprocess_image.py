"""Image decoding (modes, EXIF, animation, limits, damage) and exactness of
the torch-free preprocessing against open_clip's own eval transform."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmr.errors import MediaError
from xmr.preprocess.image import DEFAULT_MAX_PIXELS, ImagePreprocessor, load_image, to_rgb

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    assert img.mode == "RGB"
    return tuple(img.getpixel(xy))


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 3) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def gradient(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (3 * xx + yy) % 256], -1)
    arr = np.clip(arr + rng.integers(-20, 21, arr.shape), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


# ----------------------------------------------------------------------- modes


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_greyscale_and_bilevel(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"l.{fmt.lower()}"
    Image.new("L", (8, 6), 77).save(p, fmt)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (8, 6) and pixel(img, (0, 0)) == (77, 77, 77)
    b = tmp_path / f"one.{fmt.lower()}"
    one = Image.new("1", (8, 6), 0)
    one.putpixel((3, 3), 1)
    one.save(b, fmt)
    img = load_image(b)
    assert pixel(img, (0, 0)) == (0, 0, 0) and pixel(img, (3, 3)) == WHITE


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([*RED, *GREEN, *BLUE] + [0] * (256 * 3 - 9))
    pal.putpixel((1, 1), 1)
    pal.putpixel((2, 2), 2)
    plain = tmp_path / "plain.png"
    pal.save(plain)
    img = load_image(plain)
    assert pixel(img, (0, 0)) == RED and pixel(img, (1, 1)) == GREEN and pixel(img, (2, 2)) == BLUE

    transparent = tmp_path / "transparent.png"
    pal.save(transparent, transparency=1)  # palette index 1 (green) is transparent
    img = load_image(transparent)
    assert pixel(img, (1, 1)) == WHITE and pixel(img, (0, 0)) == RED

    gif = tmp_path / "transparent.gif"
    pal.save(gif, transparency=2)
    img = load_image(gif)
    assert pixel(img, (2, 2)) == WHITE and pixel(img, (0, 0)) == RED


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((1, 1), (255, 0, 0, 255))  # opaque red
    rgba.putpixel((2, 2), (0, 0, 0, 128))  # half transparent black -> mid grey
    p = tmp_path / "rgba.png"
    rgba.save(p)
    img = load_image(p)
    assert pixel(img, (0, 0)) == WHITE
    assert pixel(img, (1, 1)) == RED
    assert close(pixel(img, (2, 2)), (127, 127, 127), tol=1)

    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((1, 1), (50, 255))
    p = tmp_path / "la.png"
    la.save(p)
    img = load_image(p)
    assert pixel(img, (0, 0)) == WHITE and pixel(img, (1, 1)) == (50, 50, 50)

    pa = Image.new("PA", (2, 2))
    pa.putpalette([*BLUE] + [0] * 765)
    pa.putdata([(0, 0), (0, 255), (0, 0), (0, 255)])
    img = to_rgb(pa)
    assert pixel(img, (0, 0)) == WHITE and pixel(img, (1, 0)) == BLUE
    assert pixel(to_rgb(Image.new("La", (1, 1), (9, 0))), (0, 0)) == WHITE


def test_cmyk(tmp_path: Path) -> None:
    for fmt in ("JPEG", "TIFF"):
        p = tmp_path / f"cmyk.{fmt.lower()}"
        Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, fmt)  # pure red in CMYK
        img = load_image(p)
        assert img.mode == "RGB" and close(pixel(img, (8, 8)), RED, tol=8), fmt


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path, mode: str) -> None:
    arr = np.array([[0, 257 * 64, 32768, 65535]], dtype=np.uint16)
    raw = arr.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
    img16 = Image.frombytes(mode, (4, 1), raw)
    assert img16.mode == mode
    got = to_rgb(img16)
    assert [pixel(got, (x, 0))[0] for x in range(4)] == [0, 64, 128, 255]
    p = tmp_path / "deep.png" if mode == "I;16" else tmp_path / "deep.tif"  # and through a real file
    img16.save(p)
    with Image.open(p) as check:
        assert check.mode == mode
    assert [pixel(load_image(p), (x, 0))[0] for x in range(4)] == [0, 64, 128, 255]


def test_32_bit_int_and_float(tmp_path: Path) -> None:
    i32 = Image.fromarray(np.array([[0, 257 * 10, 65535]], dtype=np.int32), "I")
    p = tmp_path / "i32.tif"
    i32.save(p)
    assert [pixel(load_image(p), (x, 0))[0] for x in range(3)] == [0, 10, 255]
    small = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), "I")
    assert [pixel(to_rgb(small), (x, 0))[0] for x in range(3)] == [0, 100, 255]

    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    p = tmp_path / "f.tif"
    unit.save(p)
    assert [pixel(load_image(p), (x, 0))[0] for x in range(3)] == [0, 128, 255]
    wide = Image.fromarray(np.array([[-1000.0, 0.0, 1000.0, np.nan]], dtype=np.float32), "F")
    assert [pixel(to_rgb(wide), (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_rgb_passthrough_is_lossless(tmp_path: Path) -> None:
    src = gradient(37, 23)
    p = tmp_path / "g.png"
    src.save(p)
    assert np.array_equal(np.asarray(load_image(p)), np.asarray(src))


# ------------------------------------------------------ orientation, animation


@pytest.mark.parametrize(
    "orientation,top_left,shape", [(1, RED, (40, 20)), (3, BLUE, (40, 20)), (6, RED, (20, 40)), (8, BLUE, (20, 40))]
)
def test_exif_orientation(
    tmp_path: Path, orientation: int, top_left: tuple[int, int, int], shape: tuple[int, int]
) -> None:
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    stored.save(p, quality=95, exif=exif)
    img = load_image(p)
    assert img.size == shape
    assert close(pixel(img, (1, 1)), top_left, tol=12)
    if orientation == 6:  # rotated 90 degrees clockwise: red on top, blue below
        assert close(pixel(img, (10, 38)), BLUE, tol=12)


def test_animated_files_give_their_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in (RED, GREEN, BLUE)]
    for name, kwargs in [("a.gif", {}), ("a.png", {}), ("a.webp", {"lossless": True})]:
        p = tmp_path / name
        frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs)
        with Image.open(p) as check:
            assert getattr(check, "n_frames", 1) == 3, name
        img = load_image(p)
        assert img.size == (10, 10) and close(pixel(img, (5, 5)), RED, tol=2), name


# ----------------------------------------------------------- size and damage


def test_draft_decodes_big_jpegs_at_reduced_scale(tmp_path: Path) -> None:
    p = tmp_path / "big.jpg"
    gradient(2400, 1800).save(p, quality=90)
    full = load_image(p)
    assert full.size == (2400, 1800)
    small = load_image(p, target_size=(224, 224))
    w, h = small.size
    assert (w, h) == (600, 450)  # libjpeg scale 1/4: still >= 2x the target
    pre = ImagePreprocessor.from_open_clip({"size": 224})
    drafted = pre(p)
    exact = pre.from_pil(full)
    assert drafted.shape == exact.shape == (3, 224, 224)
    assert np.abs(drafted - exact).mean() < 0.05  # same picture, tiny resampling differences
    no_draft = ImagePreprocessor.from_open_clip({"size": 224}, draft=False)
    assert np.array_equal(no_draft(p), exact)
    # not a JPEG, or not much larger than the target: no draft
    assert load_image(p, target_size=(1000, 1000)).size == (2400, 1800)


def test_draft_accounts_for_exif_rotation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "tall.jpg"
    gradient(2400, 600).save(p, exif=exif)  # shown as 600 wide, 2400 tall
    img = load_image(p, target_size=(150, 600))
    assert img.size == (300, 1200)


def test_decompression_bomb_limit_is_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "wide.png"
    Image.new("L", (2000, 1000)).save(p)  # 2 MP, a tiny file
    with pytest.raises(MediaError, match="exceeds the limit of 1,000,000 pixels") as info:
        load_image(p, max_pixels=1_000_000)
    assert info.value.path == str(p) and "decompression" in info.value.reason
    # Pillow's process-wide setting neither loosens ...
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(MediaError):
        load_image(p, max_pixels=1_000_000)
    with pytest.raises(MediaError):
        ImagePreprocessor.from_open_clip({}, max_pixels=1_000_000)(p)
    # ... nor tightens our limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert load_image(p).size == (2000, 1000)
    assert load_image(p, max_pixels=None).size == (2000, 1000)
    assert Image.MAX_IMAGE_PIXELS == 1000  # and is left as it was
    assert DEFAULT_MAX_PIXELS >= 100_000_000


def test_truncated_and_corrupt_files(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    gradient(300, 200).save(good, quality=90)
    data = good.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as info:
        load_image(cut)
    err = info.value
    assert err.path == str(cut) and err.reason.startswith("cannot decode image: ")
    assert "truncated" in err.reason and "\n" not in str(err)

    png = io.BytesIO()
    gradient(64, 64).save(png, "PNG")
    broken = tmp_path / "broken.png"
    raw = bytearray(png.getvalue())
    raw[60:200] = bytes(140)  # zeroes over the compressed data
    broken.write_bytes(bytes(raw))
    with pytest.raises(MediaError, match="cannot decode image"):
        load_image(broken)

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really" + bytes(range(256)))
    with pytest.raises(MediaError, match="cannot decode image"):
        load_image(junk)
    text = tmp_path / "notes.jpg"
    text.write_text("just text")
    with pytest.raises(MediaError, match="unrecognised"):
        load_image(text)
    with pytest.raises(MediaError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(MediaError, match="is a directory"):
        load_image(tmp_path)
    pre = ImagePreprocessor.from_open_clip({})
    with pytest.raises(MediaError, match="truncated"):
        pre(cut)


# ------------------------------------------------- exactness against open_clip

OC_CFGS = [
    {},
    {"size": 256, "interpolation": "bilinear"},
    {"size": (224, 192)},
    {"size": (200, 240), "interpolation": "bilinear"},
    {"resize_mode": "longest"},
    {"resize_mode": "longest", "fill_color": 128, "size": (192, 256)},
    {"resize_mode": "squash", "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    {"resize_mode": "squash", "size": (160, 224)},
]
SIZES = [(224, 224), (640, 480), (480, 640), (100, 333), (301, 77), (225, 224), (50, 50), (999, 1000), (1, 7)]


@pytest.mark.parametrize("cfg", OC_CFGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_equal_to_open_clip_eval_transform(cfg: dict) -> None:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    oc_cfg = PreprocessCfg(**cfg)
    reference = image_transform_v2(oc_cfg, is_train=False)
    ours = ImagePreprocessor.from_open_clip(oc_cfg)
    assert ours == ImagePreprocessor.from_open_clip(dict(cfg))  # dict and dataclass agree
    for i, (w, h) in enumerate(SIZES):
        img = gradient(w, h, seed=i)
        want = reference(img).numpy()
        got = ours.from_pil(img)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5, (cfg, w, h)


def test_file_path_equals_open_clip_on_decoded_rgb(tmp_path: Path) -> None:
    import open_clip
    _, _, reference = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    ours = ImagePreprocessor.from_open_clip({"size": 224})
    for i, (w, h, fmt) in enumerate([(640, 480, "JPEG"), (333, 500, "PNG"), (224, 224, "WEBP"), (120, 90, "BMP")]):
        p = tmp_path / f"x{i}.{fmt.lower()}"
        gradient(w, h, seed=i).save(p, fmt)
        want = reference(Image.open(p).convert("RGB")).numpy()
        assert np.abs(ours(p) - want).max() <= 1e-5, p


def test_preprocessor_is_a_small_picklable_value(tmp_path: Path) -> None:
    pre = ImagePreprocessor.from_open_clip(
        {"size": 224, "mean": [0.1, 0.2, 0.3], "std": 0.5, "interpolation": "bicubic", "resize_mode": "shortest"}
    )
    clone = pickle.loads(pickle.dumps(pre))
    assert clone == pre and hash(clone) == hash(pre)
    assert pre.size == (224, 224) and pre.std == (0.5, 0.5, 0.5)
    d = pre.describe()
    assert d["size"] == [224, 224] and d["mean"] == [0.1, 0.2, 0.3] and d["resize_mode"] == "shortest"
    p = tmp_path / "x.png"
    gradient(50, 40).save(p)
    assert np.array_equal(clone(p), pre(p))
    with pytest.raises(ValueError):
        ImagePreprocessor.from_open_clip({"interpolation": "lanczos"})
    with pytest.raises(ValueError):
        ImagePreprocessor.from_open_clip({"resize_mode": "stretch"})
