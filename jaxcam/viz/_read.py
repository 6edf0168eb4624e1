"""Reading photos: the header is read and checked (size, truncation) before any pixel is
decoded, a file is never read past what an image of the allowed size can take, and the
decoded pixels become RGB uint8 (EXIF orientation applied, alpha composited)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from jaxcam.viz._headers import ImageError, ImageHeader, image_format, image_header

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image :func:`read_image` decodes by default (width x height); 100 MP is 300 MB
as RGB uint8. ``$JAXCAM_MAX_IMAGE_PIXELS`` or ``max_pixels=`` changes it."""


_MAX_PIXELS_ENV = "JAXCAM_MAX_IMAGE_PIXELS"


# Rows/columns of EXIF orientations 2..8 as NumPy views (OpenCV applies the same ones to
# the images it decodes in colour; alpha images must be read unchanged, so jaxcam does it).
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: a.swapaxes(0, 1)[:, ::-1],
           7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: a.swapaxes(0, 1)[::-1]}


ROWS_PER_BLOCK_PIXELS = 1 << 20  # pixels per block of the row-wise loops (bounds memory)


def _max_pixels(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get(_MAX_PIXELS_ENV)
    if not env:
        return DEFAULT_MAX_PIXELS
    try:
        return int(float(env))
    except ValueError:
        raise ValueError(f"${_MAX_PIXELS_ENV}={env!r} is not a number of pixels; set it to "
                         f"e.g. {DEFAULT_MAX_PIXELS}") from None


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None,
               background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Reads a PNG, JPEG, WebP, BMP or TIFF photo as an RGB uint8 array (H, W, 3).

    - Grayscale becomes RGB; 16-bit samples are scaled to 8 bits (v -> round(v / 257),
      so 65535 -> 255), not truncated.
    - Transparency is composited: an RGBA (or gray + alpha) image is drawn over
      ``background``, opaque white by default, as ``(a c + (255 - a) b) / 255``; fully
      transparent pixels become the background, whatever colour they store.
    - The EXIF orientation is applied, as cameras intend.
    - The size is read from the header first: an image of more than ``max_pixels``
      (width x height) is refused before it is decoded, so a few hundred bytes that
      declare a gigapixel image cost nothing. A truncated or corrupt file is refused too,
      never half-decoded.
    - Reading is bounded: a file whose first bytes name no supported format is refused
      after reading 16 bytes, and one larger than :func:`max_file_bytes` of the limit
      before it is read; the header parser reads only the fields it needs.

    Args:
      path: the image file.
      max_pixels: the largest width x height to decode; None: ``$JAXCAM_MAX_IMAGE_PIXELS``
        if set, else :data:`DEFAULT_MAX_PIXELS` (100 MP).
      background: RGB uint8 colour under transparent pixels.

    Raises:
      FileNotFoundError: no file at ``path``.
      ImageError: (a ``ValueError``) not one of the formats above, larger than
        ``max_pixels``, truncated, corrupt, or with samples that are not 8 or 16 bits.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {str(path)!r}")
    limit = _max_pixels(max_pixels)
    try:
        data = _read_bounded(path, limit)  # decoded from these bytes: what was checked is read
        header = image_header(data)
        if header.pixels > limit:
            raise ImageError(
                f"{header.width} x {header.height} pixels ({header.pixels / 1e6:.1f} MP) is "
                f"more than the limit of {limit} pixels; pass max_pixels= to read_image or "
                f"set ${_MAX_PIXELS_ENV} to read it")
        image = _decode(data, header)
        return _to_rgb8(image, background)
    except ImageError as e:
        raise ImageError(f"cannot read {str(path)!r}: {e}") from None


_HEAD_BYTES = 16             # enough to tell the five formats apart


_BYTES_PER_PIXEL = 8         # the most a supported pixel takes stored: RGBA, 16 bits each


_METADATA_BYTES = 64 << 20   # room for profiles, text and EXIF beside the pixels


def max_file_bytes(max_pixels: int) -> int:
    """The largest image file :func:`read_image` reads for a limit of ``max_pixels``:
    8 bytes a pixel (16-bit RGBA stored raw) plus 64 MiB of metadata (908 MB for the
    default 100 MP)."""
    return max_pixels * _BYTES_PER_PIXEL + _METADATA_BYTES


def _read_bounded(path: Path, limit: int) -> bytes:
    """The file's bytes, read only once its first bytes name an image format and its size
    fits the pixel limit: a large file that is not an image costs 16 bytes of reading, and
    no file (sparse, growing or huge) costs more than :func:`max_file_bytes`."""
    cap = max_file_bytes(limit)
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
        image_format(head)                      # refuses a non-image before reading it
        size = os.fstat(f.fileno()).st_size
        if size > cap:
            raise ImageError(
                f"the file is {size:,} bytes, more than an image of the {limit:,}-pixel "
                f"limit can take ({cap:,} bytes); pass max_pixels= to read_image or set "
                f"${_MAX_PIXELS_ENV} to read it")
        rest = f.read(cap + 1 - len(head))      # a file growing meanwhile stops at the cap
    if len(head) + len(rest) > cap:
        raise ImageError(f"the file grew past {cap:,} bytes while it was read")
    return head + rest


def _decode(data: bytes, header: ImageHeader) -> np.ndarray:
    """Decodes with OpenCV: (H, W) or (H, W, C) in the file's channel order and depth."""
    buffer = np.frombuffer(data, np.uint8)
    if header.format == "jpeg":  # 8-bit, no alpha: OpenCV converts CMYK and orients
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    else:  # keeps alpha and 16 bits; EXIF orientation applied below (TIFF: by libtiff)
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        if image is not None and header.format in ("png", "webp") and header.orientation > 1:
            image = np.ascontiguousarray(_ORIENT[header.orientation](image))
    if image is None:
        raise ImageError(f"OpenCV could not decode this {header.format.upper()} file "
                         "(corrupt image data, or a variant OpenCV does not support)")
    if image.shape[0] * image.shape[1] != header.pixels:
        raise ImageError(f"corrupt: decoded {image.shape[1]} x {image.shape[0]} pixels, but "
                         f"the header declares {header.width} x {header.height}")
    return image


def _to_rgb8(image: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """OpenCV's gray / BGR / BGRA, 8 or 16 bits -> RGB uint8, alpha composited."""
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1.0 / 257.0)  # round(v / 257): 65535 -> 255
    elif image.dtype != np.uint8:
        raise ImageError(f"its samples are {image.dtype}; jaxcam reads 8- and 16-bit images "
                         "(convert it to 8 or 16 bits, e.g. as PNG)")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place: one photo in memory
    if channels == 2:  # gray + alpha
        return _composite(image[..., [0, 0, 0]], image[..., 1], background)
    if channels == 4:
        return _composite(image[..., 2::-1], image[..., 3], background)
    raise ImageError(f"it has {channels} channels; jaxcam reads gray, RGB and RGBA images")


def _composite(rgb: np.ndarray, alpha: np.ndarray, background) -> np.ndarray:
    """``round((a c + (255 - a) b) / 255)`` per channel, in uint16, a block of rows at a
    time (memory stays a small multiple of the photo)."""
    bg = np.asarray(background, np.uint16).reshape(1, 1, 3)
    if bg.shape != (1, 1, 3) or (bg > 255).any():
        raise ValueError(f"background must be an RGB uint8 colour, got {background!r}")
    out = np.empty(rgb.shape[:2] + (3,), np.uint8)
    step = max(1, ROWS_PER_BLOCK_PIXELS // max(1, rgb.shape[1]))
    for r in range(0, rgb.shape[0], step):
        a = alpha[r:r + step, :, None].astype(np.uint16)
        mixed = rgb[r:r + step] * a + (255 - a) * bg  # at most 255 * 255: fits uint16
        out[r:r + step] = (mixed + 127) // 255
    return out
