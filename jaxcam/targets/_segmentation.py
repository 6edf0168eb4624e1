"""Segmentation: a class's per-pixel score summed over a mask."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxcam.targets._base import (Target, _batched, _float_output, _ints, _leaf,
                                  _per_example, _select)

Array = jax.Array


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
