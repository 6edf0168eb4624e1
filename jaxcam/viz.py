"""Reading photos and drawing CAMs onto them (OpenCV and NumPy, outside jit).

A map computed on the model's centre crop is drawn back onto the ORIGINAL photo: the
resize and the crop of the model's :class:`jaxcam.Preprocess` are undone exactly (an
affine map from map pixels to photo pixels); the part of the photo the model never saw
is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from jaxcam._io import (ImageError, ImageHeader, atomic_write, atomic_write_all, image_format,
                        image_header)
from jaxcam._preprocess import Preprocess

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO,
             "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
             "magma": cv2.COLORMAP_MAGMA, "hot": cv2.COLORMAP_HOT}


DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image :func:`read_image` decodes by default (width x height); 100 MP is 300 MB
as RGB uint8. ``$JAXCAM_MAX_IMAGE_PIXELS`` or ``max_pixels=`` changes it."""

_MAX_PIXELS_ENV = "JAXCAM_MAX_IMAGE_PIXELS"
# Rows/columns of EXIF orientations 2..8 as NumPy views (OpenCV applies the same ones to
# the images it decodes in colour; alpha images must be read unchanged, so jaxcam does it).
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: a.swapaxes(0, 1)[:, ::-1],
           7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: a.swapaxes(0, 1)[::-1]}
_ROWS_PER_BLOCK_PIXELS = 1 << 20  # pixels per block of the row-wise loops (bounds memory)


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
    step = max(1, _ROWS_PER_BLOCK_PIXELS // max(1, rgb.shape[1]))
    for r in range(0, rgb.shape[0], step):
        a = alpha[r:r + step, :, None].astype(np.uint16)
        mixed = rgb[r:r + step] * a + (255 - a) * bg  # at most 255 * 255: fits uint16
        out[r:r + step] = (mixed + 127) // 255
    return out


def _check_map(cam) -> np.ndarray:
    cam = np.asarray(cam, np.float32)
    if cam.ndim != 2:
        raise ValueError(f"expected one map of shape (h, w), got shape {cam.shape}; "
                         "pass maps[i] for image i of a batch")
    if not np.all(np.isfinite(cam)):
        raise ValueError("the map contains NaN or infinite values")
    return cam


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 photo (H, W, 3), got dtype {image.dtype} "
                         f"and shape {image.shape}")
    return image


def _photo_affine(cam_shape: tuple[int, int], image_shape: tuple[int, ...],
                  preprocess: Preprocess | None) -> np.ndarray:
    """The affine map (2, 3) from map pixels to photo pixels (pixel centres at +0.5)."""
    height, width = image_shape[:2]
    hc, wc = cam_shape
    if preprocess is None:
        top = left = 0
        rh, rw, size_y, size_x = height, width, height, width
    else:
        top, left, rh, rw = preprocess.crop_box(height, width)
        size_y = size_x = preprocess.size
    # map pixel (x_c) -> resized-photo pixel -> photo pixel
    ax, ay = size_x / wc * width / rw, size_y / hc * height / rh
    bx = (left + 0.5 * size_x / wc) * width / rw - 0.5
    by = (top + 0.5 * size_y / hc) * height / rh - 0.5
    return np.array([[ax, 0.0, bx], [0.0, ay, by]])


def _inside(m: np.ndarray, cam_shape: tuple[int, int], image_shape: tuple[int, ...]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Photo rows and columns (bool (H,), (W,)) whose centre falls on the map's extent
    [-0.5, size - 0.5]: the model's crop, a rectangle."""
    (ax, _, bx), (_, ay, by) = m
    yc = (np.arange(image_shape[0]) - by) / ay
    xc = (np.arange(image_shape[1]) - bx) / ax
    return ((yc >= -0.5) & (yc <= cam_shape[0] - 0.5),
            (xc >= -0.5) & (xc <= cam_shape[1] - 0.5))


def _warp(cam: np.ndarray, m: np.ndarray, top: int, left: int, height: int, width: int
          ) -> np.ndarray:
    """Rows [top, top + height) and columns [left, left + width) of the map drawn on the
    photo (bilinear, edges replicated).

    Each photo pixel's map position is computed from its own coordinates, so a block of
    rows equals the same rows of the whole photo's map (an offset ``warpAffine`` would
    round its incremental positions differently).
    """
    (ax, _, bx), (_, ay, by) = m
    xs = ((np.arange(left, left + width) - bx) / ax).astype(np.float32)
    ys = ((np.arange(top, top + height) - by) / ay).astype(np.float32)
    map_x, map_y = np.broadcast_to(xs, (height, width)), np.broadcast_to(ys[:, None],
                                                                          (height, width))
    return cv2.remap(cam, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y),
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def to_original(cam, image_shape: tuple[int, ...], preprocess: Preprocess | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Maps a CAM of the model's input back onto the original photo's pixel grid.

    Args:
      cam: one map (h, w) over the model's input (any resolution).
      image_shape: the original photo's shape (H, W, ...).
      preprocess: the transform that made the input; None if the input was the whole
        photo resized.

    Returns:
      (map (H, W) float32, inside (H, W) bool): the map on the photo, and where the
      model's crop lies (the map is 0 outside).
    """
    cam = _check_map(cam)
    height, width = image_shape[:2]
    m = _photo_affine(cam.shape, image_shape, preprocess)
    rows, cols = _inside(m, cam.shape, image_shape)
    inside = rows[:, None] & cols[None, :]
    on_photo = _warp(cam, m, 0, 0, height, width)
    return np.where(inside, on_photo, np.float32(0.0)), inside


def heatmap(cam, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] map as an RGB uint8 colour image (values are clipped to [0, 1])."""
    cam = _check_map(cam)
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; expected one of {tuple(COLORMAPS)}")
    gray = np.uint8(np.round(np.clip(cam, 0.0, 1.0) * 255))
    return cv2.cvtColor(cv2.applyColorMap(gray, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def overlay(image, cam, alpha: float = 0.4, colormap: str = "jet",
            preprocess: Preprocess | None = None) -> np.ndarray:
    """Blends a [0, 1] map onto the original photo: (1 - alpha) photo + alpha heatmap.

    The blend runs a block of rows at a time in float32, so memory stays about twice the
    photo (the photo and the result) whatever its size.

    Args:
      image: the ORIGINAL photo, RGB uint8 (H, W, 3).
      cam: one map (h, w) in [0, 1] computed on ``preprocess(image)``.
      alpha: weight of the heatmap.
      colormap: an OpenCV colormap name (see ``COLORMAPS``).
      preprocess: the model's transform (``split.preprocess``), undone exactly; outside
        the model's centre crop the photo is left unchanged.

    Returns:
      RGB uint8 (H, W, 3).
    """
    image = _check_image(image)
    cam = _check_map(cam)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; expected one of {tuple(COLORMAPS)}")
    m = _photo_affine(cam.shape, image.shape, preprocess)
    rows, cols = (np.flatnonzero(inside) for inside in _inside(m, cam.shape, image.shape))
    out = image.copy()
    if rows.size == 0 or cols.size == 0:
        return out
    (top, bottom), (left, right) = (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)
    step = max(1, _ROWS_PER_BLOCK_PIXELS // (right - left))
    for r in range(top, bottom, step):
        n = min(step, bottom - r)
        heat = heatmap(_warp(cam, m, r, left, n, right - left), colormap)
        photo = image[r:r + n, left:right]
        blended = np.float32(1.0 - alpha) * photo + np.float32(alpha) * heat
        out[r:r + n, left:right] = np.clip(np.rint(blended), 0, 255)
    return out


def _label(text: str, width: int, height: int) -> np.ndarray:
    """A white strip (height, width, 3) with ``text`` centred in black, shrunk to fit."""
    strip = np.full((height, width, 3), 255, np.uint8)
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1
    (w, h), _ = cv2.getTextSize(text, font, scale, thick)
    if w > width - 8:
        scale *= (width - 8) / w
        (w, h), _ = cv2.getTextSize(text, font, scale, thick)
    cv2.putText(strip, text, ((width - w) // 2, (height + h) // 2), font, scale, (0, 0, 0),
                thick, cv2.LINE_AA)
    return strip


def grid(cells, column_titles, row_titles=None, *, height: int = 224) -> np.ndarray:
    """A figure: rows of images side by side, each scaled to ``height`` pixels, with a
    title above each column and, when given, one left of each row.

    Args:
      cells: rows (a list per row) of RGB uint8 images; every row as long as the titles.
      column_titles: one per column (e.g. the methods).
      row_titles: one per row (e.g. the layers), or None.

    Returns:
      RGB uint8 (rows * (height + 28) + 28 ... , W, 3): white background, black titles.
    """
    rows = [[_check_image(c) for c in row] for row in cells]
    if not rows or any(len(row) != len(column_titles) for row in rows):
        raise ValueError(f"grid needs rows of {len(column_titles)} images (one per column "
                         f"title); got rows of {[len(r) for r in rows]}")
    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"grid got {len(row_titles)} row titles for {len(rows)} rows")
    width = max(round(c.shape[1] * height / c.shape[0]) for row in rows for c in row)
    pad, title = 4, 28
    def cell(img):
        w = round(img.shape[1] * height / img.shape[0])
        out = np.full((height, width, 3), 255, np.uint8)
        left = (width - w) // 2
        out[:, left:left + w] = cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)
        return np.pad(out, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
    header = [_label(t, width + 2 * pad, title) for t in column_titles]
    body = [np.concatenate([cell(c) for c in row], 1) for row in rows]
    parts = [np.concatenate(header, 1)]
    for r, row in enumerate(body):
        if row_titles is not None:
            parts.append(_label(row_titles[r], row.shape[1], title))
        parts.append(row)
    return np.concatenate(parts, 0)


def encode_png(image) -> bytes:
    """An RGB uint8 image (H, W, 3) as the bytes of a PNG file."""
    image = _check_image(image)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {image.shape}")
    return data.tobytes()


def write_png(path: str | os.PathLike, image) -> Path:
    """Writes an RGB uint8 image as PNG, atomically (never a half-written file)."""
    return atomic_write(Path(path), encode_png(image))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes a text file atomically."""
    return atomic_write(Path(path), text.encode())


def write_all(files: dict[str | os.PathLike, bytes | str | np.ndarray]) -> list[Path]:
    """Writes several files all or none (see :func:`jaxcam._io.atomic_write_all`): an
    RGB uint8 array becomes a PNG, a string UTF-8 text, bytes are written as they are."""
    encoded = {}
    for path, content in files.items():
        if isinstance(content, str):
            content = content.encode()
        elif not isinstance(content, bytes):
            content = encode_png(content)
        encoded[path] = content
    return atomic_write_all(encoded)
