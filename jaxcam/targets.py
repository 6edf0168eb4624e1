"""Ready-made explained scores for heads with any output.

A CAM explains one score per example, ``Y_b = target(outputs)_b``, where
``outputs = head(A)`` is any pytree: class logits (B, C), per-pixel logits
(B, H, W, C), detector outputs (a dict of boxes and scores), embeddings (B, D).

Every target here is a ``flax.struct`` dataclass, that is, a pytree. Its per-example
arrays (classes, masks, boxes, reference embeddings, thresholds) are leaves: the method
passes the target to its compiled program as a traced argument, so a new target never
recompiles. Its configuration (which output, flags) is static. ``prepare`` checks a
target against the outputs' shapes and broadcasts every leaf to the batch.

Example::

    from jaxcam import targets
    maps = jaxcam.grad_cam(split, x, targets.segmentation(7, mask))      # a mask (H, W)
    maps = jaxcam.grad_cam(split, x, targets.embedding_similarity(ref))  # cosine to ref
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array

__all__ = ["BoxScore", "ClassScore", "EmbeddingSimilarity", "Segmentation", "Target",
           "box_iou", "box_score", "class_logit", "class_probability",
           "embedding_similarity", "rest", "segmentation"]


class Target:
    """The protocol of a target (subclasses are ``@struct.dataclass`` pytrees).

    ``__call__(outputs) -> (B,)``: the explained score of each example, differentiable in
    the outputs. ``prepare(outputs) -> Target``: given the outputs' shapes (a pytree of
    ``jax.ShapeDtypeStruct``), the checked target with every leaf batched (B, ...).
    Write your own the same way: a ``struct.dataclass`` subclass with both methods.
    """

    def __call__(self, outputs) -> Array:
        raise NotImplementedError

    def prepare(self, outputs) -> "Target":
        raise NotImplementedError


def _concrete(v) -> bool:
    return not isinstance(v, jax.core.Tracer)


def _select(outputs, output):
    """The output a target reads: the outputs themselves (None), a dict key, or an index."""
    if output is None:
        return outputs
    if isinstance(outputs, dict):
        if output not in outputs:
            raise ValueError(f"the head's outputs have no key {output!r}; available keys: "
                             f"{', '.join(map(repr, outputs))}")
        return outputs[output]
    if isinstance(outputs, (tuple, list)) and isinstance(output, int):
        if not -len(outputs) <= output < len(outputs):
            raise ValueError(f"output index {output} is out of range: the head returns "
                             f"{len(outputs)} outputs")
        return outputs[output]
    raise ValueError(f"output={output!r} selects nothing in outputs of type "
                     f"{type(outputs).__name__}: use a dict key or a tuple index")


def _batch(outputs) -> int:
    return jax.tree_util.tree_leaves(outputs)[0].shape[0]


def _classes(classes, batch: int, n: int, what: str) -> Array:
    if isinstance(classes, bool) or (hasattr(classes, "dtype") and classes.dtype == bool):
        raise TypeError(f"{what}: classes must be ints, got a bool")
    arr = classes if isinstance(classes, jax.Array) else np.asarray(classes)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"{what}: classes must be ints (one, or one per image), got dtype "
                        f"{arr.dtype}")
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape != (batch,)):
        raise ValueError(f"{what}: classes have shape {arr.shape}; expected one class or "
                         f"({batch},), one per image")
    if _concrete(arr):
        bad = np.asarray(arr).reshape(-1)
        bad = bad[(bad < 0) | (bad >= n)]
        if bad.size:
            raise ValueError(f"{what}: class {int(bad[0])} is out of range: the outputs have "
                             f"{n} classes, so classes must lie in [0, {n - 1}]")
    return jnp.broadcast_to(jnp.asarray(arr, jnp.int32), (batch,))


def _batched(value, batch: int, shape: tuple, dtype, what: str) -> Array:
    """``value`` of ``shape`` or (batch, *shape), broadcast to (batch, *shape)."""
    arr = value if isinstance(value, jax.Array) else np.asarray(value)
    if tuple(arr.shape) not in (tuple(shape), (batch, *shape)):
        raise ValueError(f"{what} has shape {tuple(arr.shape)}; expected {tuple(shape)} or "
                         f"{(batch, *shape)} (one per image)")
    return jnp.broadcast_to(jnp.asarray(arr, dtype), (batch, *shape))


def _float_dtype(out):
    return out.dtype if jnp.issubdtype(out.dtype, jnp.floating) else jnp.float32


# --- class scores

CLASS_LINKS = ("logit", "softmax", "log_softmax", "rest")


@struct.dataclass
class ClassScore(Target):
    """link(S)[b, c_b] of class logits S (B, C). With ``output`` None the methods use
    jaxcam's float32-accurate closed forms of the link; this is the reference definition.

    Attributes:
      classes: (B,) int.
      link: "logit", "softmax", "log_softmax" or "rest" (S_c + log_softmax(S)_c,
        pytorch-grad-cam's ClassifierOutputReST).
      output: which output holds the logits (None: the outputs themselves).
    """

    classes: Array
    link: str = struct.field(pytree_node=False, default="logit")
    output: Any = struct.field(pytree_node=False, default=None)

    def __call__(self, outputs) -> Array:
        s = _select(outputs, self.output)
        linked = {"logit": lambda s: s, "softmax": lambda s: jax.nn.softmax(s, axis=-1),
                  "log_softmax": lambda s: jax.nn.log_softmax(s, axis=-1),
                  "rest": lambda s: s + jax.nn.log_softmax(s, axis=-1)}[self.link](s)
        return jnp.take_along_axis(linked, self.classes[:, None], axis=-1)[:, 0]

    def prepare(self, outputs) -> "ClassScore":
        s = _select(outputs, self.output)
        if len(getattr(s, "shape", ())) != 2:
            raise ValueError(f"a class target needs class logits (B, C); the output has "
                             f"shape {getattr(s, 'shape', None)}: use targets.segmentation "
                             "for per-pixel logits")
        return self.replace(classes=_classes(self.classes, s.shape[0], s.shape[1],
                                             "class target"))


def _class(c, link: str, output) -> ClassScore:
    return ClassScore(c, link, output)


def class_logit(c, output=None) -> ClassScore:
    """The logit S_c of class ``c`` (an int, or one per image)."""
    return _class(c, "logit", output)


def class_probability(c, output=None) -> ClassScore:
    """softmax(S)_c."""
    return _class(c, "softmax", output)


def rest(c, output=None) -> ClassScore:
    """ReST, S_c + log_softmax(S)_c: the logit minus the cross-entropy of class c
    (pytorch-grad-cam's ClassifierOutputReST, ShapleyCAM's default)."""
    return _class(c, "rest", output)


# --- segmentation

@struct.dataclass
class Segmentation(Target):
    """A class's per-pixel score summed over a mask: sum_ij m_ij P[b, i, j, c_b], with P
    the per-pixel logits (B, H, W, C) or, with ``softmax``, their softmax over C.

    With ``predicted`` the mask is the pixels predicted as the class,
    ``argmax_C(outputs) == c``, held fixed (``stop_gradient``: a piecewise-constant
    selection), as pytorch-grad-cam's SemanticSegmentationTarget with a mask made from
    the prediction.
    """

    classes: Array
    mask: Array | None = None
    predicted: bool = struct.field(pytree_node=False, default=False)
    softmax: bool = struct.field(pytree_node=False, default=False)
    output: Any = struct.field(pytree_node=False, default=None)

    def __call__(self, outputs) -> Array:
        s = _select(outputs, self.output)
        p = jax.nn.softmax(s, axis=-1) if self.softmax else s
        score = jnp.take_along_axis(p, self.classes[:, None, None, None], axis=-1)[..., 0]
        if self.predicted:
            mask = (jnp.argmax(jax.lax.stop_gradient(s), axis=-1)
                    == self.classes[:, None, None]).astype(s.dtype)
        else:
            mask = self.mask
        return jnp.sum(mask * score, axis=(1, 2))

    def prepare(self, outputs) -> "Segmentation":
        s = _select(outputs, self.output)
        shape = getattr(s, "shape", ())
        if len(shape) != 4:
            raise ValueError(f"segmentation needs per-pixel logits (B, H, W, C); the output "
                             f"has shape {shape}: for class logits (B, C) use an int target")
        batch, h, w, n = shape
        classes = _classes(self.classes, batch, n, "segmentation")
        mask = None if self.predicted else _batched(self.mask, batch, (h, w), _float_dtype(s),
                                                    "the segmentation mask")
        return self.replace(classes=classes, mask=mask)


def segmentation(c, mask=None, *, softmax: bool = False, output=None) -> Segmentation:
    """Class ``c``'s score summed over ``mask`` ((H, W) or (B, H, W), the outputs'
    resolution), or over the pixels predicted as ``c`` when ``mask`` is None."""
    return Segmentation(c, mask, mask is None, bool(softmax), output)


# --- detection

def box_iou(a: Array, b: Array) -> Array:
    """Intersection over union of boxes (..., 4) in (x0, y0, x1, y1), broadcast;
    differentiable in both (0 for boxes with no area)."""
    lo = jnp.maximum(a[..., :2], b[..., :2])
    hi = jnp.minimum(a[..., 2:], b[..., 2:])
    inter = jnp.prod(jnp.clip(hi - lo, 0.0), axis=-1)
    area = lambda v: jnp.prod(jnp.clip(v[..., 2:] - v[..., :2], 0.0), axis=-1)  # noqa: E731
    union = area(a) + area(b) - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


@struct.dataclass
class BoxScore(Target):
    """Detector outputs: for each valid reference box m (label l_m), among the predicted
    boxes compatible with l_m the one of highest IoU; if that IoU exceeds the threshold,
    its score of l_m (and, with ``add_iou``, the IoU) is added. The matching itself is
    held fixed; the score and IoU are differentiated. pytorch-grad-cam 1.5.7's
    FasterRCNNBoxScoreTarget, for fixed-size outputs.

    The outputs are a dict with predicted boxes (B, N, 4) and either per-class scores
    (B, N, C), or scores (B, N) with predicted labels (B, N) (then only a box of the same
    label matches).
    """

    boxes: Array
    labels: Array
    valid: Array
    iou_threshold: Array
    boxes_key: str = struct.field(pytree_node=False, default="boxes")
    scores_key: str = struct.field(pytree_node=False, default="scores")
    labels_key: str = struct.field(pytree_node=False, default="labels")
    add_iou: bool = struct.field(pytree_node=False, default=True)

    def __call__(self, outputs) -> Array:
        pred = _select(outputs, self.boxes_key)                         # (B, N, 4)
        scores = _select(outputs, self.scores_key)
        ious = box_iou(self.boxes[:, :, None], pred[:, None])          # (B, M, N)
        if scores.ndim == 3:                                            # per-class scores
            s = jnp.take_along_axis(scores[:, None], self.labels[:, :, None, None],
                                    axis=-1)[..., 0]                    # (B, M, N)
            compatible = jnp.ones(ious.shape, bool)
        else:
            s = jnp.broadcast_to(scores[:, None], ious.shape)
            compatible = _select(outputs, self.labels_key)[:, None] == self.labels[:, :, None]
        held = jnp.where(compatible, jax.lax.stop_gradient(ious), -1.0)
        best = jnp.argmax(held, axis=-1)[..., None]                     # (B, M, 1)
        iou = jnp.take_along_axis(ious, best, axis=-1)[..., 0]
        threshold = jnp.reshape(self.iou_threshold, (-1, 1))            # (B, 1) or (1, 1)
        ok = jnp.take_along_axis(held, best, axis=-1)[..., 0] > threshold
        ok = ok & (self.valid > 0)
        value = jnp.take_along_axis(s, best, axis=-1)[..., 0] + (iou if self.add_iou else 0.0)
        return jnp.sum(jnp.where(ok, value, 0.0), axis=-1)

    def prepare(self, outputs) -> "BoxScore":
        if not isinstance(outputs, dict):
            raise ValueError(f"box_score needs detector outputs, a dict with boxes "
                             f"{self.boxes_key!r} and scores {self.scores_key!r}; the head "
                             f"returns {type(outputs).__name__}")
        pred, scores = _select(outputs, self.boxes_key), _select(outputs, self.scores_key)
        if len(pred.shape) != 3 or pred.shape[-1] != 4:
            raise ValueError(f"outputs[{self.boxes_key!r}] must be boxes (B, N, 4), got "
                             f"{pred.shape}")
        batch, n = pred.shape[:2]
        if scores.shape[:2] != (batch, n) or len(scores.shape) not in (2, 3):
            raise ValueError(f"outputs[{self.scores_key!r}] must be scores (B, N) or (B, N, C) "
                             f"with (B, N) = {(batch, n)}, got {scores.shape}")
        if len(scores.shape) == 2:
            _select(outputs, self.labels_key)
        boxes = self.boxes if isinstance(self.boxes, jax.Array) else np.asarray(self.boxes)
        if boxes.ndim not in (2, 3) or boxes.shape[-1] != 4:
            raise ValueError(f"reference boxes must be (M, 4) or (B, M, 4), got {boxes.shape}")
        m = boxes.shape[-2]
        dtype = _float_dtype(pred)
        labels = _batched(self.labels, batch, (m,), jnp.int32, "the box labels")
        if len(scores.shape) == 3 and _concrete(labels):
            bad = np.asarray(labels)[(np.asarray(labels) < 0)
                                     | (np.asarray(labels) >= scores.shape[-1])]
            if bad.size:
                raise ValueError(f"box label {int(bad[0])} is out of range: the detector "
                                 f"scores {scores.shape[-1]} classes")
        return self.replace(boxes=_batched(boxes, batch, (m, 4), dtype, "the reference boxes"),
                            labels=labels,
                            valid=_batched(self.valid, batch, (m,), dtype, "valid"),
                            iou_threshold=_batched(self.iou_threshold, batch, (), dtype,
                                                   "iou_threshold"))


def box_score(boxes, labels, *, iou_threshold: float = 0.5, valid=None, add_iou: bool = True,
              boxes_key: str = "boxes", scores_key: str = "scores",
              labels_key: str = "labels") -> BoxScore:
    """The score of the predictions matching reference ``boxes`` ((M, 4) or (B, M, 4),
    x0 y0 x1 y1) of ``labels`` ((M,) or (B, M)); ``valid`` marks the real ones among
    padded reference boxes (default: all)."""
    m = np.shape(boxes)[-2]
    valid = np.ones(np.shape(labels) or (m,), np.float32) if valid is None else valid
    return BoxScore(boxes, labels, valid, jnp.asarray(iou_threshold, jnp.float32),
                    boxes_key, scores_key, labels_key, bool(add_iou))


# --- embeddings

@struct.dataclass
class EmbeddingSimilarity(Target):
    """Cosine similarity of the embeddings (B, D) to a reference, as
    ``torch.nn.functional.cosine_similarity`` (each norm clamped to at least 1e-8):
    pytorch-grad-cam's SimilarityToConceptTarget."""

    reference: Array
    output: Any = struct.field(pytree_node=False, default=None)

    def __call__(self, outputs) -> Array:
        e = _select(outputs, self.output)
        # max(||v||, eps) as sqrt(max(||v||^2, eps^2)): the same value, and a finite
        # gradient at v = 0 (the norm's own gradient there is 0 / 0)
        norm = lambda v: jnp.sqrt(jnp.maximum(jnp.sum(v * v, axis=-1), 1e-16))  # noqa: E731
        return jnp.sum(e * self.reference, axis=-1) / (norm(e) * norm(self.reference))

    def prepare(self, outputs) -> "EmbeddingSimilarity":
        e = _select(outputs, self.output)
        if len(getattr(e, "shape", ())) != 2:
            raise ValueError(f"embedding_similarity needs embeddings (B, D); the output has "
                             f"shape {getattr(e, 'shape', None)}")
        batch, d = e.shape
        return self.replace(reference=_batched(self.reference, batch, (d,), _float_dtype(e),
                                               "the reference embedding"))


def embedding_similarity(reference, output=None) -> EmbeddingSimilarity:
    """Cosine similarity to ``reference`` ((D,) or (B, D))."""
    return EmbeddingSimilarity(reference, output)
