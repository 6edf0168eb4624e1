"""Class scores: link(S)[b, c_b] of class logits S (B, C)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxcam._checks import check_choice
from jaxcam.targets._base import Target, _float_output, _ints, _leaf, _per_example, _select
from jaxcam.targets._links import LINKS, link_names

Array = jax.Array

# The links a class target's value is defined with: every link of jaxcam.LINKS whose
# value is the score's ("exp" gives derivatives only; pass link="exp" to the method).
CLASS_LINKS = link_names(value=True)




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
