"""Image preprocessing: the model's own uint8 photo -> input transform, and its geometry."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Resize the short side to ``resize``, centre-crop ``size`` x ``size``, normalise.

    ``mean`` and ``std`` are on the 0..255 scale: ``(pixel - mean) / std``.

    Example::

        x = jaxcam.models.load("efficientnet_lite0").preprocess(image_uint8)  # (224, 224, 3)
    """

    size: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    std: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after resizing the short side to ``resize`` (torchvision's rule)."""
        if height <= width:
            return self.resize, int(self.resize * width / height)
        return int(self.resize * height / width), self.resize

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, resized_height, resized_width) of the centre crop."""
        rh, rw = self.resized_shape(height, width)
        top = int(round((rh - self.size) / 2.0))
        left = int(round((rw - self.size) / 2.0))
        return top, left, rh, rw

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Transforms one RGB uint8 image (H, W, 3) into a float32 input (size, size, 3)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an RGB uint8 image of shape (H, W, 3), got dtype {image.dtype} and "
                f"shape {image.shape}; read photos with jaxcam.viz.read_image(path)")
        h, w = image.shape[:2]
        top, left, rh, rw = self.crop_box(h, w)
        if min(rh, rw) < self.size:
            raise ValueError(f"resize={self.resize} is smaller than the crop size {self.size}")
        resized = cv2.resize(image, (rw, rh), interpolation=_INTERPOLATION[self.interpolation])
        crop = resized[top:top + self.size, left:left + self.size].astype(np.float32)
        return (crop - np.float32(self.mean)) / np.float32(self.std)


IMAGENET = Preprocess()
TF_LITE = Preprocess(interpolation="bicubic", mean=(127.0, 127.0, 127.0),
                     std=(128.0, 128.0, 128.0))
