"""The batch runner's files (jaxcam/batch/): any failure of one photo, an unexpected one
included, is that photo's error (hardening defect 2); an output folder's leftover
temporaries are removed, and a failed write names its target (pretrained_ports/_atomic.py).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from jaxcam import batch, viz
from jaxcam.batch._inputs import load_photos
from pretrained_ports._atomic import atomic_write, remove_temporaries

OPTIONS = {"model": "resnet18", "methods": [["grad_cam", []]], "top": 1}


def test_an_unexpected_error_of_one_photo_is_its_record(tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((8, 8, 3), np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes())
    real = viz.read_image

    def read(path, **kw):
        if Path(path).name == "bad.png":
            raise IndexError("tuple index out of range")
        return real(path, **kw)

    monkeypatch.setattr(viz, "read_image", read)
    loaded = load_photos(batch.find_images([tmp_path]), lambda im: im)
    errors = {item.photo.name: item.error for item in loaded}
    assert errors["good"] is None
    assert "bad.png" in errors["bad"] and "IndexError" in errors["bad"]


def test_leftover_temporaries_are_removed_and_errors_name_the_target(tmp_path):
    out = tmp_path / "o"
    (out / "sub").mkdir(parents=True)
    left = [out / ".a.png.0123456789ab.tmp", out / "sub" / ".b.npy.ba9876543210.old"]
    keep = [out / ".hidden", out / "a.png", out / ".a.png.tmp"]
    for p in left + keep:
        p.write_bytes(b"x")
    with batch.OutputFolder(out, OPTIONS, resume=True):
        pass
    assert not any(p.exists() for p in left) and all(p.exists() for p in keep)
    assert remove_temporaries(out) == []
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(OSError, match=r"cannot write .*blocker.x\.png") as info:
        atomic_write(tmp_path / "blocker" / "x.png", b"data")
    assert ".tmp" not in str(info.value)
