"""Reading images: formats, transparency, 16 bits, size limits, truncation; memory of the
resize-and-crop and of the overlay on huge or extreme photos."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from jaxcam import models, viz
from jaxcam.viz import image_header

ASSETS = Path(__file__).resolve().parents[1] / "jaxcam" / "assets"

RNG = np.random.default_rng(0)
IMAGENET = models.info("resnet50").preprocess           # bilinear, ImageNet's mean and std
TF_LITE = models.info("efficientnet_lite0").preprocess  # bicubic, 127 and 128
PHOTO = RNG.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)  # RGB


def _write(path, array_bgr, params=()):
    assert cv2.imwrite(str(path), array_bgr, list(params))
    return path


@pytest.mark.parametrize("ext", ["png", "webp", "bmp", "tiff"])
def test_lossless_formats_round_trip(tmp_path, ext):
    params = (cv2.IMWRITE_WEBP_QUALITY, 101) if ext == "webp" else ()  # > 100: lossless
    path = _write(tmp_path / f"a.{ext}", PHOTO[..., ::-1], params)
    np.testing.assert_array_equal(viz.read_image(path), PHOTO)


def test_jpeg_reads_as_opencv_decodes_it(tmp_path):
    path = _write(tmp_path / "a.jpg", PHOTO[..., ::-1])
    expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(viz.read_image(path), expected)


@pytest.mark.parametrize("ext", ["png", "jpg", "tiff"])
def test_grayscale_becomes_rgb(tmp_path, ext):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (4, 1))
    image = viz.read_image(_write(tmp_path / f"g.{ext}", gray))
    assert image.shape == (4, 25, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    if ext != "jpg":
        np.testing.assert_array_equal(image[..., 0], gray)


@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_16_bit_is_scaled_not_truncated(tmp_path, ext):
    values = np.array([0, 128, 129, 385, 32767, 65279, 65535], np.uint16)
    bgr = np.stack([values, values // 2, 65535 - values], axis=-1)[None]
    image = viz.read_image(_write(tmp_path / f"d.{ext}", bgr))
    expected = np.floor(bgr[..., ::-1] / 257 + 0.5).astype(np.uint8)  # round(v * 255/65535)
    np.testing.assert_array_equal(image, expected)
    blue = image[0, :, 2]  # the values themselves: 128 -> 0, 129 -> 1, 65535 -> 255
    assert blue[1] == 0 and blue[2] == 1 and blue[-1] == 255


@pytest.mark.parametrize("ext", ["png", "webp", "tiff"])
def test_transparency_is_composited_over_white(tmp_path, ext):
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[0, 0] = (10, 20, 200, 0)     # fully transparent red: the background shows
    bgra[0, 1] = (10, 20, 200, 255)   # opaque: its own colour
    bgra[0, 2] = (0, 0, 0, 128)       # half transparent black
    bgra[1] = (255, 0, 0, 51)         # 20 % blue
    params = (cv2.IMWRITE_WEBP_QUALITY, 101) if ext == "webp" else ()
    path = _write(tmp_path / f"t.{ext}", bgra, params)
    image = viz.read_image(path)
    np.testing.assert_array_equal(image[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(image[0, 1], (200, 20, 10))
    np.testing.assert_array_equal(image[0, 2], (127, 127, 127))  # round(127 * 255 / 255)
    np.testing.assert_array_equal(image[1, 0], (204, 204, 255))  # 0.8 * 255 = 204
    black = viz.read_image(path, background=(0, 0, 0))
    np.testing.assert_array_equal(black[0, 0], (0, 0, 0))
    np.testing.assert_array_equal(black[1, 0], (0, 0, 51))


def test_16_bit_rgba(tmp_path):
    bgra = np.array([[[65535, 0, 0, 65535], [0, 0, 65535, 0]]], np.uint16)
    image = viz.read_image(_write(tmp_path / "t16.png", bgra))
    np.testing.assert_array_equal(image[0], [(0, 0, 255), (255, 255, 255)])


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_as_opencv_applies_it(tmp_path, orientation, fmt):
    from PIL import Image

    path = tmp_path / f"o.{fmt.lower()}"
    exif = Image.Exif()
    exif[274] = orientation
    options = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(PHOTO).save(path, fmt, exif=exif, **options)
    expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(viz.read_image(path), expected)


def _png_declaring(width: int, height: int) -> bytes:
    """A real 1 x 1 PNG whose IHDR chunk (and CRC) is patched to declare another size."""
    data = bytearray(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_a_huge_declared_size_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(100_000, 100_000))
    assert path.stat().st_size < 100
    with pytest.raises(viz.ImageError, match=r"100000 x 100000.*max_pixels"):
        viz.read_image(path)
    with pytest.raises(viz.ImageError, match=r"bomb\.png"):
        viz.read_image(path)


def test_the_pixel_limit_is_adjustable(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.png", PHOTO)
    with pytest.raises(viz.ImageError, match="more than the limit of 599 pixels"):
        viz.read_image(path, max_pixels=599)
    assert viz.read_image(path, max_pixels=600).shape == (20, 30, 3)
    monkeypatch.setenv("JAXCAM_MAX_IMAGE_PIXELS", "599")
    with pytest.raises(viz.ImageError, match="JAXCAM_MAX_IMAGE_PIXELS"):
        viz.read_image(path)
    assert viz.read_image(path, max_pixels=600).shape == (20, 30, 3)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "bmp", "tiff"])
def test_headers_give_the_size(tmp_path, ext):
    path = _write(tmp_path / f"a.{ext}", RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    header = image_header(path.read_bytes())
    assert (header.width, header.height) == (53, 37)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "bmp", "tiff"])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_files_are_refused_with_their_name(tmp_path, ext, keep):
    photo = cv2.imread(str(ASSETS / "chelsea.png"))
    data = cv2.imencode(f".{ext}", photo)[1].tobytes()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(viz.ImageError, match=rf"cut\.{ext}.*truncated"):
        viz.read_image(path)


def test_jpeg_without_its_end_marker_is_refused(tmp_path):
    data = cv2.imencode(".jpg", PHOTO)[1].tobytes()
    assert data.endswith(b"\xff\xd9")
    path = tmp_path / "noeoi.jpg"
    path.write_bytes(data[:-2])
    with pytest.raises(viz.ImageError, match="end-of-image"):
        viz.read_image(path)
    path.write_bytes(data + b"trailing bytes a camera appended")  # still a whole JPEG
    assert viz.read_image(path).shape == PHOTO.shape


def test_corrupt_and_unknown_files_are_refused(tmp_path):
    data = bytearray(cv2.imencode(".png", PHOTO)[1].tobytes())
    data[40] ^= 0xFF
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(viz.ImageError, match="CRC"):
        viz.read_image(tmp_path / "bad.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(viz.ImageError, match="PNG, JPEG, WebP, BMP, TIFF"):
        viz.read_image(tmp_path / "notes.txt")
    (tmp_path / "empty.png").write_bytes(_png_declaring(0, 5))
    with pytest.raises(viz.ImageError, match="empty"):
        viz.read_image(tmp_path / "empty.png")


# --- the crop-only resize equals resizing everything and cropping ---------------------


@pytest.mark.parametrize("shape", [(1, 40000), (40000, 1), (3, 9000)])
def test_extreme_aspect_ratios_give_the_crop(shape):
    image = RNG.integers(0, 256, shape + (3,), dtype=np.uint8)
    for pre in (IMAGENET, TF_LITE):
        x = pre(image)
        assert x.shape == (224, 224, 3) and np.isfinite(x).all()


# --- memory, measured in a fresh interpreter ------------------------------------------

def _peak_rss_mb(code: str, tmp_path) -> float:
    """Peak resident memory (MB) of a fresh Python running ``code`` after the imports."""
    script = textwrap.dedent("""
        import resource, sys, json
        import numpy as np, cv2
        from jaxcam import viz
        from jaxcam import models
        IMAGENET = models.info("resnet50").preprocess
        TF_LITE = models.info("efficientnet_lite0").preprocess
        """) + textwrap.dedent(code) + textwrap.dedent("""
        def peak_mb():
            # VmHWM is this process's own peak; ru_maxrss can carry the parent's across
            # fork + exec (pytest's, which may be larger than this whole run)
            try:
                with open("/proc/self/status") as f:
                    return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
            except (OSError, StopIteration):
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(peak_mb()))
        """)
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.slow
def test_extreme_aspect_ratio_preprocess_memory(tmp_path):
    for shape in ((1, 40000), (40000, 1)):
        _write(tmp_path / f"{shape[0]}x{shape[1]}.png",
               RNG.integers(0, 256, shape + (3,), dtype=np.uint8))
    _write(tmp_path / "small.png", RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    run = """
        for pre in (IMAGENET, TF_LITE):
            assert pre(viz.read_image("{name}")).shape == (224, 224, 3)
        """
    baseline = _peak_rss_mb(run.format(name="small.png"), tmp_path)
    for name in ("1x40000.png", "40000x1.png"):
        peak = _peak_rss_mb(run.format(name=name), tmp_path)
        assert peak < baseline + 50, (name, peak, baseline)  # was 7.9 GB


@pytest.mark.slow
def test_overlay_memory_is_a_small_multiple_of_the_photo(tmp_path):
    size = 5000  # 25 MP: 75 MB as RGB uint8
    _write(tmp_path / "big.png", np.zeros((size, size, 3), np.uint8))
    run = """
        image = viz.read_image("big.png")
        out = viz.overlay(image, np.random.default_rng(0).random((7, 7)), preprocess=IMAGENET)
        assert out.shape == image.shape
        """
    baseline = _peak_rss_mb("image = np.zeros((8, 8, 3), np.uint8)", tmp_path)
    photo_mb = size * size * 3 / 2**20
    peak = _peak_rss_mb(run, tmp_path)
    assert peak - baseline < 3.5 * photo_mb, (peak, baseline, photo_mb)  # was ~20 x
