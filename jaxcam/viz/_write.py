"""Writing images and text: whole files or none (:mod:`pretrained_ports._atomic`)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from jaxcam.viz._overlay import check_image
from pretrained_ports._atomic import atomic_write, atomic_write_all

def encode_png(image) -> bytes:
    """An RGB uint8 image (H, W, 3) as the bytes of a PNG file."""
    image = check_image(image)
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
    """Writes several files all or none (see :func:`pretrained_ports._atomic.atomic_write_all`): an
    RGB uint8 array becomes a PNG, a string UTF-8 text, bytes are written as they are."""
    encoded = {}
    for path, content in files.items():
        if isinstance(content, str):
            content = content.encode()
        elif not isinstance(content, bytes):
            content = encode_png(content)
        encoded[path] = content
    return atomic_write_all(encoded)
