"""Every registered method on EfficientNet-Lite0 (the bundled ImageNet weights) with the
project's real photos: faithfulness, and localisation against hand-drawn boxes.

Two groups of 224 x 224 images, both built deterministically from ``chelsea.png`` (tiger
cat, 282) and ``coffee.png`` (espresso, 967) with the boxes of ``photos.json``:

- ``photos``: square views of each photo (whole, shifted, zoomed, mirrored; the two
  photos alternate), the photo's class explained, its object's box the ground truth;
- ``mosaics``: 2 x 2 grids of the two photos in eight arrangements, each class present
  explained in turn; the ground truth is that class's boxes in its tiles (the grid
  pointing game: a map that points at the other photo's tiles misses).

The maps are each method's at the default layer (``_swish``, 7 x 7, upsampled to 224);
perturbation methods (a forward per each of 1,280 channels, or more) are scored on the
first :data:`PERTURBATION_IMAGES` images of each group. ROAD runs at
:data:`ROAD_PERCENTILES` with its imputation solved to :data:`ROAD_TOL` (at 224 x 224 it
costs more than everything else together).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from jaxcam import batch, models

from benchmarks.study import scoring
from benchmarks.study.methods import method_specs, score_unit

NETWORK = "efficientnet_lite0"
GROUPS = ("photos", "mosaics")
SIZE = 224
PERTURBATION_IMAGES = 1
# Faster Score-CAM: the Score-CAM family scores the TOP_N channels of largest spatial
# variance (of 1,280; SS-CAM's 35 noisy copies of each would take 13 minutes per image).
TOP_N = 32
# ROAD at 224 x 224 is the costliest metric (a conjugate-gradient solve per percentile
# and order): three percentiles, solved to a relative residual of 1e-3.
ROAD_PERCENTILES = (20, 50, 80)
ROAD_TOL = 1e-3
BATCH = 8
ANNOTATIONS = Path(__file__).resolve().parent / "photos.json"
# (scale of the short side, centre x, centre y as shares of the photo, mirrored)
VIEWS = ((1.0, 0.5, 0.5, False), (1.0, 0.5, 0.5, True), (0.85, 0.4, 0.5, False),
         (0.85, 0.6, 0.5, False), (0.85, 0.5, 0.4, True), (0.85, 0.5, 0.6, True),
         (0.7, 0.5, 0.5, False), (0.7, 0.45, 0.45, True))
# which photo (0 chelsea, 1 coffee) fills each tile: top left, top right, bottom left,
# bottom right
ARRANGEMENTS = ((0, 1, 1, 0), (1, 0, 0, 1), (0, 0, 1, 1), (1, 1, 0, 0), (0, 1, 0, 1),
                (1, 0, 1, 0), (0, 1, 1, 1), (1, 0, 0, 0))


@dataclasses.dataclass(frozen=True)
class Images:
    """A group's images (N, 224, 224, 3) uint8, the explained classes (N,), and the
    ground truth (N, 224, 224) bool."""

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _photos() -> list[dict]:
    """The annotated photos, read from the package's assets (hostile-file checks
    included)."""
    notes = json.loads(ANNOTATIONS.read_text())["photos"]
    assets = Path(jaxcam.__file__).resolve().parent / "assets"
    return [{"image": jaxcam.viz.read_image(assets / name), **note}
            for name, note in notes.items()]


def view(photo: dict, scale: float, cx: float, cy: float, mirrored: bool,
         size: int) -> tuple[np.ndarray, np.ndarray]:
    """A square crop of ``photo`` resized to ``size`` (bicubic) and the object's box in it:
    ``(image (size, size, 3) uint8, box (size, size) bool)``."""
    image = photo["image"]
    h, w = image.shape[:2]
    side = int(round(scale * min(h, w)))
    x0 = int(np.clip(round(cx * w - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy * h - side / 2), 0, h - side))
    tile = cv2.resize(image[y0:y0 + side, x0:x0 + side], (size, size),
                      interpolation=cv2.INTER_CUBIC)
    bx0, by0, bx1, by1 = photo["box"]
    f = size / side
    cols = np.clip(np.round((np.array([bx0, bx1]) - x0) * f), 0, size).astype(int)
    rows = np.clip(np.round((np.array([by0, by1]) - y0) * f), 0, size).astype(int)
    box = np.zeros((size, size), bool)
    box[rows[0]:rows[1], cols[0]:cols[1]] = True
    if mirrored:
        tile, box = tile[:, ::-1], box[:, ::-1]
    return np.ascontiguousarray(tile), np.ascontiguousarray(box)


def group(name: str) -> Images:
    """The images of group ``name`` (``photos`` or ``mosaics``)."""
    photos = _photos()
    images, labels, boxes = [], [], []
    if name == "photos":
        for v in VIEWS:                              # the photos alternate
            for photo in photos:
                image, box = view(photo, *v, SIZE)
                images.append(image)
                labels.append(photo["class"])
                boxes.append(box)
    elif name == "mosaics":
        half = SIZE // 2
        for k, arrangement in enumerate(ARRANGEMENTS):
            image = np.zeros((SIZE, SIZE, 3), np.uint8)
            tile_boxes = np.zeros((len(photos), SIZE, SIZE), bool)
            for t, which in enumerate(arrangement):
                r, c = divmod(t, 2)
                tile, box = view(photos[which], 1.0, 0.5, 0.5, (k + t) % 2 == 1, half)
                image[r * half:(r + 1) * half, c * half:(c + 1) * half] = tile
                tile_boxes[which, r * half:(r + 1) * half, c * half:(c + 1) * half] = box
            for which in sorted(set(arrangement)):
                images.append(image)
                labels.append(photos[which]["class"])
                boxes.append(tile_boxes[which])
    else:
        raise ValueError(f"unknown group {name!r}; expected one of {GROUPS}")
    return Images(np.stack(images), np.asarray(labels, np.int32), np.stack(boxes))


def preprocess(images: np.ndarray) -> jax.Array:
    """The network's normalisation of 224 x 224 images (no resize or crop left to do)."""
    prep = dataclasses.replace(models.info(NETWORK).preprocess, resize=SIZE)
    return jnp.asarray(np.stack([prep(image) for image in images]))


def lite0_specs(methods: str | None = None) -> tuple:
    """The study's methods, the Score-CAM family as Faster Score-CAM (``top_n``)."""
    out = []
    for spec in method_specs(methods):
        if "top_n" in inspect.signature(jaxcam.method_info(spec.name).function).parameters:
            spec = batch.MethodSpec(spec.name, tuple(sorted((*spec.options, ("top_n", TOP_N)))),
                                    f"{spec.label}-top{TOP_N}")
        out.append(spec)
    return tuple(out)


def run(records: scoring.Records, *, images: int, methods: str | None = None,
        progress=print) -> None:
    """Scores every (group, method) unit the records lack, on the first ``images`` images
    of each group."""
    split = models.load(NETWORK)
    for name in GROUPS:
        data = group(name)
        n_all = min(images, len(data))
        x_all = preprocess(data.images[:n_all])
        labels_all = jnp.asarray(data.labels[:n_all])
        probs = np.asarray(jax.nn.softmax(split.logits(x_all), axis=-1))
        p_true = probs[np.arange(n_all), data.labels[:n_all]]
        for spec in lite0_specs(methods):
            score_unit(records, f"{NETWORK}/{name}/{spec.label}", split, spec, x_all,
                       labels_all, data.boxes, data.boxes,
                       perturbation_images=PERTURBATION_IMAGES,
                       fields={"network": NETWORK, "split": name},
                       per_image=lambda i: {"probability": float(p_true[i])}, tag="lite0",
                       progress=progress, batch=BATCH, road_percentiles=ROAD_PERCENTILES,
                       road_tol=ROAD_TOL)
