"""Ready-made explained scores for heads with any output.

A CAM explains one score per example, ``Y_b = target(outputs)_b``, where
``outputs = head(A)`` is any pytree: class logits (B, C), per-pixel logits (B, H, W, C),
detector outputs (a dict of boxes and scores), embeddings (B, D).

Design: traced arrays, static configuration
-------------------------------------------
Every target is a ``flax.struct`` dataclass, that is, a pytree:

* its per-example arrays (classes, masks, reference boxes and labels, validity,
  thresholds, reference embeddings) are **leaves**. A method passes the target to its
  compiled program as a traced argument, so a new class, mask, box set or reference
  never recompiles;
* its configuration (which output it reads, the link, ``softmax``, the detector's keys,
  ``add_iou``) is **static** (``struct.field(pytree_node=False)``): part of the pytree
  structure, so a new configuration compiles anew.

``prepare(shapes)``, given the shapes of the head's outputs (a pytree of
``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``), checks a target and returns a
copy whose every leaf has the leading batch axis B (one class, mask, box set or
reference given without it is broadcast to every example), in its final dtype (int32
classes and labels, bool validity, floats in the outputs' float dtype). Shapes are
static, so every shape check also runs under a caller's ``jax.jit``; value checks (a
class out of range) run only on concrete arrays. A target is callable unprepared too:
``__call__`` broadcasts its leaves itself.

Every target has a static ``output`` field: None reads the outputs themselves, a str
reads that key of a dict, an int that item of a tuple or list.

The targets
-----------
:class:`ClassScore`: ``link(S)[b, c_b]`` of class logits S (B, C)::

    targets.class_logit(3)                  # S_3
    targets.class_probability(np.array([3, 1]))   # softmax(S)_c, a class per image
    targets.rest(3, output="logits")        # S_3 + log_softmax(S)_3 of outputs["logits"]

:class:`Segmentation`: a class's per-pixel score summed over a mask (or over the pixels
predicted as that class), per-pixel logits (B, H, W, C), channels last::

    targets.segmentation(2, mask)           # mask (H, W) or (B, H, W)
    targets.segmentation(2)                 # where class 2 is predicted
    targets.segmentation(2, mask, softmax=True)   # sum of the class probabilities

:class:`BoxScore`: detector outputs ``{"boxes": (B, N, 4), "scores": (B, N, C)}`` or
``{"boxes": (B, N, 4), "scores": (B, N), "labels": (B, N)}``; per reference box, the
score (and IoU) of the best-overlapping prediction of its label above the threshold::

    targets.box_score(np.array([[10, 20, 50, 60]]), [7], iou_threshold=0.5)

:class:`EmbeddingSimilarity`: cosine similarity of embeddings (B, D) to a reference::

    targets.embedding_similarity(reference)     # reference (D,) or (B, D)

Write your own target the same way: a ``@struct.dataclass`` subclass of :class:`Target`
with ``__call__`` and (optionally) ``prepare``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxcam._checks import check_choice, check_class_range, is_concrete
from jaxcam._links import LINKS, link_names

Array = jax.Array

__all__ = ["BoxScore", "ClassScore", "EmbeddingSimilarity", "Segmentation", "Target",
           "box_iou", "box_score", "class_logit", "class_probability",
           "embedding_similarity", "rest", "segmentation"]

# The links a class target's value is defined with: every link of jaxcam.LINKS whose
# value is the score's ("exp" gives derivatives only; pass link="exp" to the method).
CLASS_LINKS = link_names(value=True)
COSINE_EPS = 1e-8       # torch.nn.functional.cosine_similarity's default eps


class Target:
    """The protocol of a target; subclasses are ``@struct.dataclass`` pytrees.

    ``__call__(outputs) -> Array (B,)``: the explained score of each example,
    differentiable in the outputs (any pytree).

    ``prepare(outputs) -> Target``: given the outputs' shapes (a pytree of
    ``jax.ShapeDtypeStruct``, or of arrays), a checked copy whose every leaf has the
    leading batch axis B, in its final dtype. Raises ValueError or TypeError naming
    the problem, the expected shape and the fix. Works under a caller's ``jit`` (then
    only the shapes are checked). The default returns the target unchanged.

    Per-example arrays are pytree leaves (traced: a new value never recompiles), the
    configuration is static (``struct.field(pytree_node=False)``).
    """

    def __call__(self, outputs) -> Array:
        raise NotImplementedError(f"{type(self).__name__} must define __call__(outputs)")

    def prepare(self, outputs) -> Target:
        return self


# --- helpers

def _describe(tree) -> str:
    """The kind and shapes of (a part of) the outputs, for messages."""
    if isinstance(tree, Mapping):
        return f"a dict with keys {', '.join(map(repr, tree))}"
    if isinstance(tree, (tuple, list)):
        return f"a {type(tree).__name__} of {len(tree)} outputs"
    shape = getattr(tree, "shape", None)
    if shape is not None:
        return f"shape {tuple(shape)} ({getattr(tree, 'dtype', '?')})"
    return type(tree).__name__


def _select(outputs, output):
    """The output a target reads: the outputs themselves (None), a dict key (str), or a
    tuple or list item (int). Works on arrays and on ``ShapeDtypeStruct`` alike."""
    if output is None:
        return outputs
    if isinstance(output, str):
        if not isinstance(outputs, Mapping):
            raise ValueError(f"output={output!r} selects a dict key, but the head returns "
                             f"{_describe(outputs)}; use output=None (or an int index for a "
                             "tuple of outputs)")
        if output not in outputs:
            raise ValueError(f"the head's outputs have no key {output!r}; available keys: "
                             f"{', '.join(map(repr, outputs))}. Pass output= one of them")
        return outputs[output]
    if isinstance(output, int) and not isinstance(output, bool):
        if not isinstance(outputs, (tuple, list)):
            raise ValueError(f"output={output} selects an item of a tuple of outputs, but "
                             f"the head returns {_describe(outputs)}; use output=None (or a "
                             "str key for a dict)")
        if not -len(outputs) <= output < len(outputs):
            raise ValueError(f"output index {output} is out of range: the head returns "
                             f"{len(outputs)} outputs; use an index in [0, "
                             f"{len(outputs) - 1}]")
        return outputs[output]
    raise TypeError(f"output must be None, a str (a dict key) or an int (a tuple index); "
                    f"got {output!r} ({type(output).__name__})")


def _array(value):
    """A jax array (or tracer) as it is, anything else as a NumPy array."""
    return value if isinstance(value, jax.Array) else np.asarray(value)


def _hint(s) -> str:
    """How to reach the right output when the head returns a container."""
    if isinstance(s, Mapping):
        return ": select the right output with output='key'"
    if isinstance(s, (tuple, list)):
        return ": select the right output with output=index"
    return ""


def _float_output(s, ndim: int, what: str, expected: str, fix: str) -> tuple:
    """``s`` must be a float array of rank ``ndim``; returns its shape."""
    shape = getattr(s, "shape", None)
    if shape is None or len(shape) != ndim:
        raise ValueError(f"{what} needs {expected}; the head returns {_describe(s)}"
                         f"{fix or _hint(s)}")
    if not jnp.issubdtype(s.dtype, jnp.floating):
        raise TypeError(f"{what} needs float {expected}; the head returns {_describe(s)}: "
                        "return float scores from the head")
    return tuple(shape)


def _ints(value, shape: tuple, batch: int, what: str, n: int | None = None,
          n_text: str = "") -> Array:
    """Integers of shape (), ``shape`` or (batch, *shape), range-checked against [0, n)
    when concrete (BEFORE the int32 cast, which would wrap 2**32 + 1 to 1), broadcast to
    (batch, *shape) int32."""
    if isinstance(value, int) and not isinstance(value, bool):
        if n is not None:
            check_class_range(value, n, what, n_text)
        return jnp.full((batch, *shape), value, jnp.int32)
    arr = _array(value)
    if arr.dtype == bool or not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"{what} must be ints (one, or one per image); got "
                        f"{'an array of dtype ' + str(arr.dtype) if arr.ndim else repr(value)}")
    full = (batch, *shape)
    if tuple(arr.shape) not in {(), tuple(shape), full}:
        raise ValueError(f"{what} has shape {tuple(arr.shape)}; expected "
                         + " or ".join(str(s) for s in dict.fromkeys([(), tuple(shape), full]))
                         + " (one for every image, or one per image)")
    if n is not None:
        check_class_range(arr, n, what, n_text)
    return jnp.broadcast_to(jnp.asarray(arr, jnp.int32), full)


def _batched(value, shape: tuple, batch: int, dtype, what: str, expected: str,
             fix: str = "", scalar: bool = False) -> Array:
    """``value`` of ``shape`` or (batch, *shape) (or () with ``scalar``), numbers (bool
    allowed), broadcast to (batch, *shape) in ``dtype``."""
    arr = _array(value)
    if not (arr.dtype == bool or jnp.issubdtype(arr.dtype, jnp.number)):
        raise TypeError(f"{what} must be numbers; got an array of dtype {arr.dtype}")
    full = (batch, *shape)
    allowed = {tuple(shape), full} | ({()} if scalar else set())
    if tuple(arr.shape) not in allowed:
        raise ValueError(f"{what} has shape {tuple(arr.shape)}; expected {expected}{fix}")
    _finite(arr, what)
    if dtype is bool:
        arr = arr != 0 if arr.dtype != bool else arr
    return jnp.broadcast_to(jnp.asarray(arr, dtype), full)


def _finite(arr, what: str) -> None:
    """Refuses NaN and Inf in a concrete float array (they would silently zero the map)."""
    if not is_concrete(arr) or not jnp.issubdtype(arr.dtype, jnp.inexact):
        return
    values = np.asarray(arr)
    bad = ~np.isfinite(values)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} holds {values[where]} at index {where}: a target's arrays "
                         "must be finite numbers (replace NaN and Inf, e.g. with "
                         "np.nan_to_num, or mark boxes invalid with valid=)")


def _leaf(value):
    """A constructor's argument as one pytree leaf: a list or tuple of numbers becomes one
    NumPy array (as a list, each number would be a leaf of its own, and the pytree
    structure would depend on the length). Python ints stay as they are (range-checked
    at any size by ``prepare``)."""
    if value is None or isinstance(value, (int, float, jax.Array, np.ndarray, np.generic)):
        return value
    return np.asarray(value)


def _per_example(value, shape: tuple, dtype=None) -> Array:
    """In ``__call__``: a leaf broadcast to its batched shape (a no-op once prepared)."""
    arr = jnp.asarray(value, dtype)
    return jnp.broadcast_to(arr, shape) if arr.shape != shape else arr


# --- class scores



@struct.dataclass
class ClassScore(Target):
    """``link(S)[b, c_b]`` of class logits S (B, C).

    This ``__call__`` is the reference definition; with ``output`` None the methods use
    jaxcam's float32-accurate closed forms of the link instead.

    Attributes:
      classes: the class of each example, (B,) int (an int, or (B,), before ``prepare``).
      link: static: one of ``CLASS_LINKS``, the links of :data:`jaxcam.LINKS` that give
        the score's value: "logit", "softmax", "log_softmax" or "rest" (S_c +
        log_softmax(S)_c, pytorch-grad-cam's ClassifierOutputReST).
      output: static: which output holds the logits (None: the outputs themselves).
    """

    classes: Array
    link: str = struct.field(pytree_node=False, default="logit")
    output: Any = struct.field(pytree_node=False, default=None)

    def __post_init__(self):
        check_choice("link", self.link, CLASS_LINKS)

    def __call__(self, outputs) -> Array:
        s = _select(outputs, self.output)
        c = _per_example(self.classes, s.shape[:1], jnp.int32)
        return jnp.take_along_axis(LINKS[self.link].vector(s), c[:, None], axis=-1)[:, 0]

    def prepare(self, outputs) -> ClassScore:
        s = _select(outputs, self.output)
        fix = (": use targets.segmentation(c) for per-pixel logits (B, H, W, C)"
               if len(getattr(s, "shape", ())) == 4 else "")
        batch, n = _float_output(s, 2, "a class target", "class logits (B, C)", fix)
        return self.replace(classes=_ints(self.classes, (), batch, "target class", n,
                                          "the logits have"))


def class_logit(c, output=None) -> ClassScore:
    """The logit S_c of class ``c`` (an int, or an int array (B,), one per image)."""
    return ClassScore(_leaf(c), "logit", output)


def class_probability(c, output=None) -> ClassScore:
    """The probability softmax(S)_c of class ``c``."""
    return ClassScore(_leaf(c), "softmax", output)


def rest(c, output=None) -> ClassScore:
    """ReST, S_c + log_softmax(S)_c: the logit minus the cross-entropy of class ``c``
    (pytorch-grad-cam's ClassifierOutputReST, ShapleyCAM's default)."""
    return ClassScore(_leaf(c), "rest", output)


# --- segmentation

@struct.dataclass
class Segmentation(Target):
    """A class's per-pixel score summed over a mask:
    ``sum_ij mask[b, i, j] * P[b, i, j, c_b]``, with P the per-pixel logits
    (B, H, W, C) (channels last) or, with ``softmax``, their softmax over C.

    ``mask`` None means the pixels predicted as the class, ``argmax_C(outputs) == c_b``,
    recomputed from the outputs the target is called on and held fixed
    (``stop_gradient``: a piecewise-constant selection), as pytorch-grad-cam's
    SemanticSegmentationTarget with a mask made from the prediction. Whether a mask is
    given is thus part of the pytree structure (None has no leaves), fixed by the
    configuration: every target of ``segmentation(c)`` shares one structure, every
    target of ``segmentation(c, mask)`` another.

    Attributes:
      classes: (B,) int.
      mask: (B, H, W) float in the outputs' dtype, or None (predicted pixels).
      softmax: static: sum the class probabilities rather than the logits.
      output: static: which output holds the per-pixel logits.
    """

    classes: Array
    mask: Array | None = None
    softmax: bool = struct.field(pytree_node=False, default=False)
    output: Any = struct.field(pytree_node=False, default=None)

    @property
    def predicted(self) -> bool:
        """The mask is the pixels predicted as the class."""
        return self.mask is None

    def __call__(self, outputs) -> Array:
        s = _select(outputs, self.output)
        c = _per_example(self.classes, s.shape[:1], jnp.int32)
        p = jax.nn.softmax(s, axis=-1) if self.softmax else s
        score = jnp.take_along_axis(p, c[:, None, None, None], axis=-1)[..., 0]  # (B, H, W)
        if self.mask is None:
            mask = jax.lax.stop_gradient(
                (jnp.argmax(s, axis=-1) == c[:, None, None]).astype(s.dtype))
        else:
            mask = _per_example(self.mask, score.shape, s.dtype)
        return jnp.sum(mask * score, axis=(1, 2))

    def prepare(self, outputs) -> Segmentation:
        s = _select(outputs, self.output)
        shape = getattr(s, "shape", None)
        fix = (": use an int class target (or targets.class_logit(c))"
               if shape is not None and len(shape) == 2 else "")
        batch, h, w, n = _float_output(s, 4, "segmentation",
                                       "per-pixel logits (B, H, W, C)", fix)
        classes = _ints(self.classes, (), batch, "segmentation class", n, "the logits have")
        if self.mask is None:
            return self.replace(classes=classes)
        mask = _batched(self.mask, (h, w), batch, s.dtype, "the segmentation mask",
                        f"(H, W) = {(h, w)} or (B, H, W) = {(batch, h, w)}, the resolution "
                        f"of the per-pixel logits {tuple(shape)} (channels last)",
                        f": resize the mask to {(h, w)}")
        return self.replace(classes=classes, mask=mask)


def segmentation(c, mask=None, *, softmax: bool = False, output=None) -> Segmentation:
    """Class ``c``'s per-pixel score (logit, or probability with ``softmax``) summed over
    ``mask`` ((H, W) or (B, H, W) at the outputs' resolution, bool or float weights), or
    over the pixels predicted as ``c`` when ``mask`` is None."""
    return Segmentation(_leaf(c), _leaf(mask), bool(softmax), output)


# --- detection

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


# --- embeddings

def _norm(v: Array) -> Array:
    """||v|| over the last axis, with gradient 0 (not 0 / 0) at v = 0."""
    sq = jnp.sum(v * v, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


@struct.dataclass
class EmbeddingSimilarity(Target):
    """Cosine similarity of the embeddings (B, D) to a reference (B, D), as
    ``torch.nn.functional.cosine_similarity`` (torch 2.13): each vector is divided by its
    norm clamped to at least eps = 1e-8, then the products summed,
    ``sum((o / max(||o||, eps)) * (r / max(||r||, eps)))``; pytorch-grad-cam's
    SimilarityToConceptTarget. 0 at a zero embedding.

    The gradient is that of this value (below eps the clamped norm is a constant); torch
    instead differentiates the unclamped norm there (its clamp runs under no_grad), which
    differs only for norms below 1e-8.

    Attributes:
      reference: (B, D) float in the outputs' dtype.
      output: static: which output holds the embeddings.
    """

    reference: Array
    output: Any = struct.field(pytree_node=False, default=None)

    def __call__(self, outputs) -> Array:
        e = _select(outputs, self.output)
        r = _per_example(self.reference, e.shape, e.dtype)
        eps = jnp.asarray(COSINE_EPS, e.dtype)
        ne = jnp.maximum(_norm(e), eps)[:, None]
        nr = jnp.maximum(_norm(r), eps)[:, None]
        return jnp.sum((e / ne) * (r / nr), axis=-1)

    def prepare(self, outputs) -> EmbeddingSimilarity:
        e = _select(outputs, self.output)
        batch, d = _float_output(e, 2, "embedding_similarity", "embeddings (B, D)", "")
        ref = _array(self.reference)
        if tuple(ref.shape) not in {(d,), (batch, d)}:
            got = ref.shape[-1] if ref.ndim else "()"
            raise ValueError(f"the reference embedding has shape {tuple(ref.shape)} "
                             f"(dimension {got}), but the head returns embeddings (B, D) = "
                             f"{(batch, d)}: pass a reference of shape ({d},) or "
                             f"{(batch, d)}")
        return self.replace(reference=_batched(ref, (d,), batch, e.dtype,
                                               "the reference embedding", ""))


def embedding_similarity(reference, output=None) -> EmbeddingSimilarity:
    """Cosine similarity of the embeddings to ``reference`` ((D,) for every image, or
    (B, D), one per image)."""
    return EmbeddingSimilarity(_leaf(reference), output)
