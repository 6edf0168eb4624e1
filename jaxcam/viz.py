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

from jaxcam._io import atomic_write
from jaxcam._preprocess import Preprocess

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO,
             "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
             "magma": cv2.COLORMAP_MAGMA, "hot": cv2.COLORMAP_HOT}


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads a photo as an RGB uint8 array (H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {str(path)!r}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{str(path)!r} is not an image OpenCV can read (PNG, JPEG, ...)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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
    hc, wc = cam.shape
    if preprocess is None:
        top = left = 0
        rh, rw, size_y, size_x = height, width, height, width
    else:
        top, left, rh, rw = preprocess.crop_box(height, width)
        size_y = size_x = preprocess.size
    # map pixel (x_c) -> resized-photo pixel -> photo pixel, with pixel centres at +0.5
    ax, ay = size_x / wc * width / rw, size_y / hc * height / rh
    bx = (left + 0.5 * size_x / wc) * width / rw - 0.5
    by = (top + 0.5 * size_y / hc) * height / rh - 0.5
    m = np.float32([[ax, 0, bx], [0, ay, by]])
    on_photo = cv2.warpAffine(cam, m, dsize=(width, height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    # photo pixels whose centre falls on the map's extent [-0.5, size - 0.5]
    xc = (np.arange(width) - bx) / ax
    yc = (np.arange(height) - by) / ay
    inside = (((yc >= -0.5) & (yc <= hc - 0.5))[:, None]
              & ((xc >= -0.5) & (xc <= wc - 0.5))[None, :])
    return np.where(inside, on_photo, 0.0).astype(np.float32), inside


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
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    on_photo, inside = to_original(cam, image.shape, preprocess)
    blended = (1.0 - alpha) * image + alpha * heatmap(on_photo, colormap)
    out = np.where(inside[..., None], blended, image)
    return np.uint8(np.clip(np.round(out), 0, 255))


def write_png(path: str | os.PathLike, image) -> Path:
    """Writes an RGB uint8 image as PNG, atomically (never a half-written file)."""
    image = _check_image(image)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {image.shape}")
    return atomic_write(Path(path), data.tobytes())


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes a text file atomically."""
    return atomic_write(Path(path), text.encode())
