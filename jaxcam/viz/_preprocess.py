"""Image preprocessing: the model's own uint8 photo -> input transform, and its geometry.

Resizing the short side then cropping the centre is ``cv2.resize`` of the whole photo
while the resized photo is small (at most ``WHOLE_RESIZE_MAX_PIXELS``: every photo up to
an aspect ratio of about 50:1). Beyond that, the resize is computed for the kept pixels
only: each output pixel of the crop is interpolated from the few source pixels
``cv2.resize`` would use (same sampling positions, same kernels, edges replicated), so
the result equals resizing the whole photo and cropping (bit for bit for bilinear on this
OpenCV build, to 1 uint8 level for bicubic) while memory stays proportional to the crop.
That matters for extreme aspect ratios: resizing a 40000 x 1 photo's short side to 256
makes 10 million columns (7.9 GB) of which the crop keeps 224.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# Above this many pixels the resized photo is not made (3 MP, 9.4 MB as RGB uint8).
WHOLE_RESIZE_MAX_PIXELS = 3 * 2**20
_CV2_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}

_TAPS = {"bilinear": 2, "bicubic": 4}
_CUBIC_A = -0.75  # OpenCV's bicubic kernel (Keys with a = -0.75)


def _kernel(t: np.ndarray, interpolation: str) -> np.ndarray:
    """Weights (n, taps) of the source pixels at offsets (0, 1) (bilinear) or (-1, 0, 1, 2)
    (bicubic) from floor(position), for fractional positions ``t`` (n,)."""
    t = t[:, None]
    if interpolation == "bilinear":
        return np.concatenate([1.0 - t, t], axis=1)
    a = _CUBIC_A
    d = np.abs(np.concatenate([t + 1.0, t, 1.0 - t, 2.0 - t], axis=1))  # distances
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return np.where(d <= 1.0, near, far)


def _axis_taps(src: int, dst: int, start: int, count: int, interpolation: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights (count, taps) of output pixels [start, start + count) of
    a 1-D resize from ``src`` to ``dst`` pixels, as ``cv2.resize`` samples them.

    OpenCV maps output pixel d to source position (d + 0.5) * src / dst - 0.5, in float32,
    and replicates the edge pixels for taps outside the image.
    """
    scale = 1.0 / (dst / src)  # OpenCV's scale_x = 1 / inv_scale_x
    position = ((np.arange(start, start + count) + 0.5) * scale - 0.5).astype(np.float32)
    base = np.floor(position)
    weights = _kernel((position - base).astype(np.float64), interpolation)
    first = -1 if interpolation == "bicubic" else 0
    taps = base.astype(np.int64)[:, None] + np.arange(first, first + _TAPS[interpolation])
    return np.clip(taps, 0, src - 1), weights


def _bilinear_fixed_point(patch: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """Bilinear blend in OpenCV's uint8 arithmetic: 11-bit weights, integer row sums, and
    its vectorised column step (>> 4, high 16 bits of the product, rounding >> 2), so the
    result is bit-identical to ``cv2.resize``'s."""
    patch = patch.astype(np.int32)
    wx = np.rint(wx * 2048).astype(np.int32)[:, :, None]
    wy = np.rint(wy * 2048).astype(np.int32)[:, :, None, None]
    rows = patch[:, 0::2] * wx[:, 0] + patch[:, 1::2] * wx[:, 1]
    out = ((rows[0::2] >> 4) * wy[:, 0] >> 16) + ((rows[1::2] >> 4) * wy[:, 1] >> 16)
    return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)


def _blend_float(patch: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """Separable blend in float32, rounded to uint8 (within 1 level of OpenCV's, which
    rounds its weights to 11 bits)."""
    ky, kx = wy.shape[1], wx.shape[1]
    patch = patch.astype(np.float32)
    wx, wy = wx.astype(np.float32)[:, :, None], wy.astype(np.float32)[:, :, None, None]
    rows = sum(patch[:, j::kx] * wx[:, j] for j in range(kx))  # (height * ky, width, C)
    out = sum(rows[i::ky] * wy[:, i] for i in range(ky))        # (height, width, C)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_crop(image: np.ndarray, resized: tuple[int, int], box: tuple[int, int, int, int],
                interpolation: str) -> np.ndarray:
    """The (top, left, height, width) ``box`` of ``image`` resized to ``resized`` (h, w),
    without making the resized image: uint8 (height, width, C).

    Equals ``cv2.resize(image, resized[::-1])[top:top+height, left:left+width]``: exactly
    for bilinear, within 1 uint8 level for bicubic. Memory and time are proportional to
    the box, whatever the photo's aspect ratio.
    """
    (rh, rw), (top, left, height, width) = resized, box
    rows, wy = _axis_taps(image.shape[0], rh, top, height, interpolation)
    cols, wx = _axis_taps(image.shape[1], rw, left, width, interpolation)
    # only the source pixels the box needs: (height * taps, width * taps, C)
    patch = image[np.ix_(rows.ravel(), cols.ravel())]
    if interpolation == "bilinear":
        return _bilinear_fixed_point(patch, wy, wx)
    return _blend_float(patch, wy, wx)


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
        if self.interpolation not in _TAPS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; expected one of "
                             f"{tuple(_TAPS)}")
        if rh * rw <= WHOLE_RESIZE_MAX_PIXELS:  # OpenCV's own resize, 10-20x faster
            resized = cv2.resize(image, (rw, rh),
                                 interpolation=_CV2_INTERPOLATION[self.interpolation])
            crop = resized[top:top + self.size, left:left + self.size]
        else:
            crop = resize_crop(image, (rh, rw), (top, left, self.size, self.size),
                               self.interpolation)
        crop = crop.astype(np.float32)
        return (crop - np.float32(self.mean)) / np.float32(self.std)


IMAGENET = Preprocess()
TF_LITE = Preprocess(interpolation="bicubic", mean=(127.0, 127.0, 127.0),
                     std=(128.0, 128.0, 128.0))
