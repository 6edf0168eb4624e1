"""Reading photos and drawing CAMs onto them (OpenCV, outside jit)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads a photo as an RGB uint8 array (H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {str(path)!r}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{str(path)!r} is not an image OpenCV can read (PNG, JPEG, ...)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
