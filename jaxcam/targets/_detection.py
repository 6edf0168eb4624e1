"""Detection: the score of a detector's predictions that match reference boxes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxcam.targets._base import (Target, _array, _batched, _describe, _hint, _ints, _leaf,
                                  _per_example, _select)

Array = jax.Array


def box_iou(a: Array, b: Array) -> Array:
    """Intersection over union of boxes ``a`` (..., 4) and ``b`` (..., 4) in
    (x0, y0, x1, y1), of equal rank, broadcast against each other.

    Differentiable in the coordinates of both (a box's extent below zero counts as
    zero area; the IoU of two boxes with no area is 0 rather than 0 / 0)."""
    lo = jnp.maximum(a[..., :2], b[..., :2])
    hi = jnp.minimum(a[..., 2:], b[..., 2:])
    inter = jnp.prod(jnp.clip(hi - lo, 0.0), axis=-1)

    def area(v):
        return jnp.prod(jnp.clip(v[..., 2:] - v[..., :2], 0.0), axis=-1)

    union = area(a) + area(b) - inter
    positive = union > 0
    return jnp.where(positive, inter / jnp.where(positive, union, 1.0), 0.0)


@struct.dataclass
class BoxScore(Target):
    """The score of a detector's predictions that match reference boxes.

    The (selected) outputs are a dict with predicted boxes (B, N, 4) in (x0, y0, x1, y1)
    under ``boxes_key`` and either per-class scores (B, N, C) under ``scores_key`` (the
    score of reference box m is taken at its label), or scores (B, N) with predicted
    labels (B, N) int under ``labels_key`` (a prediction is compatible with reference
    box m only when its label equals m's).

    For each valid reference box m, among the compatible predictions the one of highest
    IoU is taken; if that IoU is above ``iou_threshold`` (strictly), its score (plus,
    with ``add_iou``, its IoU, differentiable in the predicted box) is added. The
    example's score is the sum over m (0 when nothing matches). The choice of the
    prediction is held fixed (``stop_gradient``); the score and IoU are differentiated.
    As pytorch-grad-cam's FasterRCNNBoxScoreTarget, except that pytorch-grad-cam takes
    the highest IoU among all predictions and then drops it when its label differs.

    Attributes:
      boxes: reference boxes (B, M, 4), float.
      labels: their labels (B, M), int32.
      valid: which reference boxes count (B, M), bool (padding for varying M).
      iou_threshold: (B,), float.
      boxes_key, scores_key, labels_key: static: the keys of the detector outputs.
      add_iou: static: add the matched IoU to the matched score.
      output: static: which output holds the detector's dict (None: the outputs).
    """

    boxes: Array
    labels: Array
    valid: Array
    iou_threshold: Array
    boxes_key: str = struct.field(pytree_node=False, default="boxes")
    scores_key: str = struct.field(pytree_node=False, default="scores")
    labels_key: str = struct.field(pytree_node=False, default="labels")
    add_iou: bool = struct.field(pytree_node=False, default=True)
    output: Any = struct.field(pytree_node=False, default=None)

    def __call__(self, outputs) -> Array:
        det = _select(outputs, self.output)
        pred = _select(det, self.boxes_key)                              # (B, N, 4)
        scores = _select(det, self.scores_key)                           # (B, N[, C])
        batch, n = pred.shape[:2]
        refs = _per_example(self.boxes, (batch, jnp.shape(self.boxes)[-2], 4), pred.dtype)
        m = refs.shape[1]
        labels = _per_example(self.labels, (batch, m), jnp.int32)
        valid = _per_example(self.valid, (batch, m)) != 0
        threshold = _per_example(self.iou_threshold, (batch,), pred.dtype)
        if n == 0 or m == 0:
            return jnp.zeros((batch,), scores.dtype)
        ious = box_iou(refs[:, :, None, :], pred[:, None, :, :])         # (B, M, N)
        if scores.ndim == 3:
            # score of each prediction at reference m's label: (B, M, N)
            s = jnp.take_along_axis(scores[:, None, :, :], labels[:, :, None, None],
                                    axis=-1)[..., 0]
            compatible = jnp.ones(ious.shape, bool)
        else:
            s = jnp.broadcast_to(scores[:, None, :], ious.shape)
            pred_labels = _select(det, self.labels_key)
            compatible = pred_labels[:, None, :] == labels[:, :, None]
        held = jax.lax.stop_gradient(jnp.where(compatible, ious, -1.0))
        best = jnp.argmax(held, axis=-1)[..., None]                      # (B, M, 1)

        def pick(v):                                                    # (B, M, N) -> (B, M)
            return jnp.take_along_axis(v, best, axis=-1)[..., 0]

        matched = (pick(compatible) & (pick(held) > threshold[:, None]) & valid)
        value = pick(s) + pick(ious) if self.add_iou else pick(s)
        return jnp.sum(jnp.where(matched, value, jnp.zeros((), value.dtype)), axis=-1)

    def prepare(self, outputs) -> BoxScore:
        det = _select(outputs, self.output)
        want = (f"a dict with predicted boxes {self.boxes_key!r} (B, N, 4) and per-class "
                f"scores {self.scores_key!r} (B, N, C), or scores (B, N) with labels "
                f"{self.labels_key!r} (B, N)")
        if not isinstance(det, Mapping):
            raise ValueError(f"box_score needs detector outputs, {want}; the head returns "
                             f"{_describe(det)}{_hint(det)}")
        for key in (self.boxes_key, self.scores_key):
            if key not in det:
                raise ValueError(f"the detector outputs have no key {key!r}; available "
                                 f"keys: {', '.join(map(repr, det))}. box_score needs "
                                 f"{want}; pass boxes_key= / scores_key= / labels_key=")
        pred, scores = det[self.boxes_key], det[self.scores_key]
        shape = tuple(getattr(pred, "shape", ()))
        if len(shape) != 3 or shape[-1] != 4:
            raise ValueError(f"outputs[{self.boxes_key!r}] must be predicted boxes (B, N, 4) "
                             f"in (x0, y0, x1, y1); got {_describe(pred)}")
        if not jnp.issubdtype(pred.dtype, jnp.floating):
            raise TypeError(f"outputs[{self.boxes_key!r}] must be float boxes; got "
                            f"{_describe(pred)}")
        batch, n = shape[:2]
        sshape = tuple(getattr(scores, "shape", ()))
        if len(sshape) not in (2, 3) or sshape[:2] != (batch, n):
            raise ValueError(f"outputs[{self.scores_key!r}] must be scores (B, N) = "
                             f"{(batch, n)} or per-class scores (B, N, C) = "
                             f"{(batch, n)} + (C,); got {_describe(scores)}")
        if not jnp.issubdtype(scores.dtype, jnp.floating):
            raise TypeError(f"outputs[{self.scores_key!r}] must be float scores; got "
                            f"{_describe(scores)}")
        if len(sshape) == 2:
            if self.labels_key not in det:
                raise ValueError(
                    f"scores (B, N) need the predicted labels, but the detector outputs "
                    f"have no key {self.labels_key!r}; available keys: "
                    f"{', '.join(map(repr, det))}. Pass labels_key=, or return per-class "
                    "scores (B, N, C)")
            pl = det[self.labels_key]
            if tuple(getattr(pl, "shape", ())) != (batch, n):
                raise ValueError(f"outputs[{self.labels_key!r}] must be predicted labels "
                                 f"(B, N) = {(batch, n)}; got {_describe(pl)}")
            if pl.dtype == bool or not jnp.issubdtype(pl.dtype, jnp.integer):
                raise TypeError(f"outputs[{self.labels_key!r}] must be int labels; got "
                                f"{_describe(pl)}")
        boxes = _array(self.boxes)
        if boxes.ndim not in (2, 3) or boxes.shape[-1] != 4:
            raise ValueError(f"reference boxes have shape {tuple(boxes.shape)}; expected "
                             f"(M, 4) or (B, M, 4) = ({batch}, M, 4) in (x0, y0, x1, y1)")
        m = boxes.shape[-2]
        dtype = pred.dtype
        classes = (sshape[2], "the detector scores") if len(sshape) == 3 else (None, "")
        return self.replace(
            boxes=_batched(boxes, (m, 4), batch, dtype, "the reference boxes",
                           f"(M, 4) or (B, M, 4) = ({batch}, M, 4)"),
            labels=_ints(self.labels, (m,), batch, "box label", *classes),
            valid=_batched(self.valid, (m,), batch, bool, "valid",
                           f"(M,) = ({m},) or (B, M) = {(batch, m)}, one per reference box",
                           scalar=True),
            iou_threshold=_batched(self.iou_threshold, (), batch, dtype, "iou_threshold",
                                   f"a number or (B,) = ({batch},)", scalar=True))


def box_score(boxes, labels, *, iou_threshold=0.5, valid=None, add_iou: bool = True,
              boxes_key: str = "boxes", scores_key: str = "scores",
              labels_key: str = "labels", output=None) -> BoxScore:
    """The score of the predictions matching reference ``boxes`` ((M, 4) or (B, M, 4),
    x0 y0 x1 y1) of ``labels`` (an int, (M,) or (B, M)).

    Args:
      iou_threshold: a number or one per image (B,); a match needs IoU above it.
      valid: which reference boxes count ((M,) or (B, M), bool or 0/1), to pad a
        varying number of boxes per image to one M; default: all.
      add_iou: add the matched IoU to the matched score (pytorch-grad-cam does).
      boxes_key, scores_key, labels_key: the keys of the detector's dict.
      output: where the detector's dict is in the head's outputs (None: the outputs).
    """
    boxes, labels = _leaf(boxes), _leaf(labels)
    m = np.shape(boxes)[-2] if np.ndim(boxes) >= 2 else 0
    if valid is None:
        valid = np.ones(np.shape(labels) or (m,), bool)
    return BoxScore(boxes, labels, _leaf(valid), _leaf(iou_threshold), boxes_key,
                    scores_key, labels_key, bool(add_iou), output)
