"""The models' preprocessing (jaxcam/viz/_preprocess.py): the resize of the crop alone
equals resizing the whole photo with OpenCV and cropping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from jaxcam import viz
from jaxcam.viz._preprocess import IMAGENET, TF_LITE, WHOLE_RESIZE_MAX_PIXELS, resize_crop

RNG = np.random.default_rng(0)


_INTER = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@pytest.mark.parametrize("shape", [(300, 451), (400, 600), (512, 600), (1000, 700),
                                   (224, 224), (50, 60), (17, 1000), (2, 3)])
@pytest.mark.parametrize("pre", [IMAGENET, TF_LITE], ids=["bilinear", "bicubic"])
def test_crop_only_resize_equals_resizing_the_whole_photo(shape, pre, assets):
    image = RNG.integers(0, 256, shape + (3,), dtype=np.uint8)
    for photo in (image, viz.read_image(assets / "chelsea.png")):
        h, w = photo.shape[:2]
        top, left, rh, rw = pre.crop_box(h, w)
        whole = cv2.resize(photo, (rw, rh), interpolation=_INTER[pre.interpolation])
        expected = whole[top:top + pre.size, left:left + pre.size]
        crop = resize_crop(photo, (rh, rw), (top, left, pre.size, pre.size), pre.interpolation)
        used = expected if rh * rw <= WHOLE_RESIZE_MAX_PIXELS else crop  # (17, 1000): crop
        np.testing.assert_array_equal(
            pre(photo), (used.astype(np.float32) - np.float32(pre.mean)) / np.float32(pre.std))
        levels = np.abs(crop.astype(np.float32) - expected)
        # Bilinear repeats OpenCV's fixed-point arithmetic (equal on this build; one level
        # allowed for builds whose vector paths round otherwise); bicubic blends with
        # float weights where OpenCV rounds them to 11 bits.
        assert levels.max() < 1 + 1e-3
        assert levels.mean() < (0.01 if pre.interpolation == "bilinear" else 0.05)
