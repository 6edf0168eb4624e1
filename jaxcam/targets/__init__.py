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

from jaxcam.targets._base import Target
from jaxcam.targets._classes import (CLASS_LINKS, ClassScore, class_logit, class_probability,
                                     rest)
from jaxcam.targets._detection import BoxScore, box_iou, box_score
from jaxcam.targets._embedding import COSINE_EPS, EmbeddingSimilarity, embedding_similarity
from jaxcam.targets._segmentation import Segmentation, segmentation

__all__ = ["BoxScore", "CLASS_LINKS", "COSINE_EPS", "ClassScore", "EmbeddingSimilarity",
           "Segmentation", "Target", "box_iou", "box_score", "class_logit",
           "class_probability", "embedding_similarity", "rest", "segmentation"]
