"""Procedural shapes on clutter: images whose object masks and boxes are known exactly.

Each image is drawn with OpenCV from its own random stream (the seed, the split and the
image's index), so image i is the same whatever the number of images asked for:

* a background of a random base colour with Gaussian noise, random lines and blobs
  (ellipses) of distractor colours;
* one to four objects of the classes :data:`CLASSES` at random positions, sizes,
  rotations and colours, never overlapping (each object's mask is what is drawn of it).

Splits (:data:`SPLITS`):

* ``"single"``: one object; the label is its class;
* ``"multi_instance"``: two to four objects of one class (the Smooth Grad-CAM++ paper's
  case); the target mask is all of them;
* ``"multi_class"``: two objects of two classes; the label is one of them, chosen at
  random, and the target mask is that object's.

Example::

    data = jaxcam.datasets.shapes.generate(1000, split="single", size=64, seed=0)
    data.images        # (1000, 64, 64, 3) uint8
    data.labels        # (1000,) int32, the class to find
    data.target_masks  # (1000, 64, 64) bool, where it is
    data.boxes         # (1000, 4, 4) int32 (y0, x0, y1, x1) per object, -1 padded
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "cross", "ring", "star")
SPLITS = ("single", "multi_instance", "multi_class")
MAX_OBJECTS = 4
VERSION = 1                     # bumped whenever a drawing rule changes
_SHIFT = 4                      # sub-pixel bits of OpenCV's polygon coordinates


@dataclasses.dataclass(frozen=True)
class Shapes:
    """A generated set of N images (see the module docstring).

    Attributes:
      images: (N, S, S, 3) uint8 RGB.
      labels: (N,) int32: the class to explain.
      target_masks: (N, S, S) bool: the pixels of the labelled object(s).
      classes: (N, M) int32 per object (M = 4), -1 where there is none.
      masks: (N, M, S, S) bool per object.
      boxes: (N, M, 4) int32 (y0, x0, y1, x1), ends exclusive, the tight box of each
        object's mask; -1 where there is none.
      split, size, seed: how they were generated.
    """

    images: np.ndarray
    labels: np.ndarray
    target_masks: np.ndarray
    classes: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    split: str
    size: int
    seed: int

    def __len__(self) -> int:
        return len(self.labels)


def _polygon(name: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """The outline of a polygonal class, (n, 2) (x, y) in pixels."""
    if name == "square":
        radii, turns = [r] * 4, np.arange(4) / 4 + 1 / 8
    elif name == "triangle":
        radii, turns = [r] * 3, np.arange(3) / 3
    elif name == "star":
        radii, turns = [r, 0.45 * r] * 5, np.arange(10) / 10
    elif name == "cross":                         # a plus sign, arms of width 2 w
        w = 0.3 * r
        pts = np.array([(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r),
                        (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)])
        c, s = math.cos(angle), math.sin(angle)
        return pts @ np.array([[c, s], [-s, c]]) + (cx, cy)
    else:
        raise ValueError(name)
    a = angle + 2 * np.pi * np.asarray(turns)
    return np.stack([cx + np.asarray(radii) * np.sin(a), cy - np.asarray(radii) * np.cos(a)],
                    axis=1)


def draw(canvas: np.ndarray, name: str, cx: float, cy: float, r: float, angle: float,
         color) -> None:
    """Draws one object of class ``name`` into ``canvas`` (H, W) or (H, W, 3), in place."""
    color = tuple(int(c) for c in np.broadcast_to(color, (canvas.shape[-1],)
                                                  if canvas.ndim == 3 else (1,)))
    one = 1 << _SHIFT
    centre = (int(round(cx * one)), int(round(cy * one)))
    if name == "circle":
        cv2.circle(canvas, centre, int(round(r * one)), color, -1, cv2.LINE_8, _SHIFT)
    elif name == "ring":
        inner = 0.55 * r
        cv2.circle(canvas, centre, int(round((r + inner) / 2 * one)), color,
                   max(1, int(round(r - inner))), cv2.LINE_8, _SHIFT)
    else:
        pts = np.round(_polygon(name, cx, cy, r, angle) * one).astype(np.int32)
        cv2.fillPoly(canvas, [pts], color, cv2.LINE_8, _SHIFT)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(0, 256, 3)
    image = np.empty((size, size, 3), np.float32)
    image[:] = base
    image += rng.normal(0, rng.uniform(5, 20), image.shape)
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 5))):      # blobs of distractor colours
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(size // 16 + 1, size // 5 + 2, 2))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                    tuple(int(c) for c in rng.integers(0, 256, 3)), -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(3, 7))):      # lines
        p, q = (tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2))
        cv2.line(canvas, p, q, tuple(int(c) for c in rng.integers(0, 256, 3)),
                 int(rng.integers(1, max(2, size // 32) + 1)), cv2.LINE_AA)
    return canvas


def _place(rng, size: int, count: int, scale: tuple[float, float]):
    """Up to ``count`` (cx, cy, r) whose discs of radius r do not overlap (one margin
    pixel between them) and lie inside the image."""
    placed = []
    for _ in range(60 * count):
        if len(placed) == count:
            break
        r = rng.uniform(*scale) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        if all(math.hypot(cx - x, cy - y) > r + s + 2 for x, y, s in placed):
            placed.append((cx, cy, r))
    return placed


def _image(rng: np.random.Generator, split: str, size: int):
    canvas = _background(rng, size)
    if split == "single":
        kinds = [int(rng.integers(len(CLASSES)))]
        scale = (0.14, 0.26)
    elif split == "multi_instance":
        kinds = [int(rng.integers(len(CLASSES)))] * int(rng.integers(2, MAX_OBJECTS + 1))
        scale = (0.09, 0.16)
    else:
        kinds = [int(k) for k in rng.choice(len(CLASSES), 2, replace=False)]
        scale = (0.11, 0.2)
    placed = _place(rng, size, len(kinds), scale)
    minimum = 1 if split == "single" else 2
    while len(placed) < minimum:                 # crowded: try smaller objects
        scale = (scale[0] * 0.8, scale[1] * 0.8)
        placed = _place(rng, size, len(kinds), scale)
    kinds = kinds[:len(placed)]
    masks = np.zeros((MAX_OBJECTS, size, size), bool)
    for i, (kind, (cx, cy, r)) in enumerate(zip(kinds, placed)):
        angle = float(rng.uniform(0, 2 * np.pi))
        color = rng.integers(0, 256, 3)
        mask = np.zeros((size, size), np.uint8)
        draw(mask, CLASSES[kind], cx, cy, r, angle, 1)
        canvas[mask > 0] = color
        masks[i] = mask > 0
    label = kinds[int(rng.integers(len(kinds)))] if split == "multi_class" else kinds[0]
    return canvas, label, kinds, masks


def _boxes(masks: np.ndarray) -> np.ndarray:
    """(M, 4) tight boxes (y0, x0, y1, x1) of (M, S, S) masks, -1 for empty ones."""
    boxes = np.full((len(masks), 4), -1, np.int32)
    for i, m in enumerate(masks):
        rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        if rows.size:
            boxes[i] = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    return boxes


def generate(n: int, *, split: str = "single", size: int = 64, seed: int = 0,
             start: int = 0) -> Shapes:
    """Images ``start, ..., start + n - 1`` of the ``split`` at ``size`` x ``size``.

    Raises:
      ValueError: an unknown split, n < 0, or size below 32.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if not isinstance(n, int) or n < 0 or not isinstance(start, int) or start < 0:
        raise ValueError(f"n and start must be integers >= 0, got {n!r} and {start!r}")
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an integer of at least 32 pixels, got {size!r}")
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, MAX_OBJECTS, size, size), bool)
    classes = np.full((n, MAX_OBJECTS), -1, np.int32)
    labels = np.empty(n, np.int32)
    index = SPLITS.index(split)
    for i in range(n):
        rng = np.random.default_rng([seed, VERSION, index, size, start + i])
        images[i], labels[i], kinds, masks[i] = _image(rng, split, size)
        classes[i, :len(kinds)] = kinds
    target = (masks & (classes == labels[:, None])[:, :, None, None]).any(axis=1)
    boxes = np.stack([_boxes(m) for m in masks]) if n else np.zeros((0, MAX_OBJECTS, 4),
                                                                    np.int32)
    return Shapes(images, labels, target, classes, masks, boxes, split, size, seed)
