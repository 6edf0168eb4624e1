"""Drawing maps: heatmaps, overlays on the ORIGINAL photo (the model's resize and crop
undone exactly) and grids of overlays with titles."""

from __future__ import annotations

import cv2
import numpy as np

from jaxcam.viz._preprocess import Preprocess
from jaxcam.viz._read import ROWS_PER_BLOCK_PIXELS

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO,
             "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
             "magma": cv2.COLORMAP_MAGMA, "hot": cv2.COLORMAP_HOT}


def check_map(cam) -> np.ndarray:
    cam = np.asarray(cam, np.float32)
    if cam.ndim != 2:
        raise ValueError(f"expected one map of shape (h, w), got shape {cam.shape}; "
                         "pass maps[i] for image i of a batch")
    if not np.all(np.isfinite(cam)):
        raise ValueError("the map contains NaN or infinite values")
    return cam


def check_image(image) -> np.ndarray:
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
    cam = check_map(cam)
    height, width = image_shape[:2]
    m = _photo_affine(cam.shape, image_shape, preprocess)
    rows, cols = _inside(m, cam.shape, image_shape)
    inside = rows[:, None] & cols[None, :]
    on_photo = _warp(cam, m, 0, 0, height, width)
    return np.where(inside, on_photo, np.float32(0.0)), inside


def heatmap(cam, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] map as an RGB uint8 colour image (values are clipped to [0, 1])."""
    cam = check_map(cam)
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
    image = check_image(image)
    cam = check_map(cam)
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
    step = max(1, ROWS_PER_BLOCK_PIXELS // (right - left))
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
    rows = [[check_image(c) for c in row] for row in cells]
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
