"""What a CAM explains: the target (which class, or any objective) and the link.

The explained score of example b is ``Y_b = link(S_b)[c_b]`` with ``S_b`` the logits and
``c_b`` its target class, ``Y_b = link(target(O)_b)`` for a target of
:mod:`jaxcam.targets` or a callable applied to the head's outputs O (any pytree), or
FinerCAM's contrast of the target class with its most similar classes
(:class:`Contrast`).

A target of :mod:`jaxcam.targets` is a pytree: it is passed to the compiled program as a
traced argument (in the place of the classes), so a new mask, box or reference embedding
never recompiles. A plain callable is static: a new function compiles anew.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flax import struct

from jaxcam._checks import check_class_range
from jaxcam.targets._links import LINKS, bell, check_link, link_names, class_gradient, class_taylor
from jaxcam.splitting._split import describe, split_shapes
from jaxcam.derivatives._series import taylor_along
from jaxcam.targets import ClassScore, Target

Array = jax.Array


@struct.dataclass
class Contrast:
    """The traced parameters of a FinerCAM objective, per example.

    Attributes:
      classes: the target class c (B,).
      alpha: how much of the compared classes' logits is subtracted (B,).
      others: the compared classes (B, M), chosen on the clean image's logits; None until
        :meth:`Objective.classes` has chosen them.
    """

    classes: Array
    alpha: Array
    others: Array | None = None


def finer_score(logits: Array, params: Contrast) -> Array:
    """FinerCAM's score (pytorch-grad-cam 1.5.7's ``FinerWeightedTarget``), (B,):
    sum_j p_j (S_c - alpha S_j) / (sum_j p_j + 1e-9) over the compared classes j, with
    p = softmax(S) differentiated too."""
    p = jax.nn.softmax(logits, axis=-1)
    s_c = jnp.take_along_axis(logits, params.classes[:, None], axis=-1)
    s_j = jnp.take_along_axis(logits, params.others, axis=-1)
    p_j = jnp.take_along_axis(p, params.others, axis=-1)
    num = jnp.sum(p_j * (s_c - params.alpha[:, None] * s_j), axis=-1)
    return num / (jnp.sum(p_j, axis=-1) + 1e-9)


# --- what an objective scores (static, hashable descriptors)

@dataclasses.dataclass(frozen=True)
class ByClass:
    """The score of one class per example, link(S)[c]: the classes given (the traced
    argument), or with ``predicted`` each example's top class at the clean logits."""

    predicted: bool = False


@dataclasses.dataclass(frozen=True)
class Contrasted:
    """FinerCAM: the target class contrasted with the classes of these ``ranks`` (1 = the
    most similar) by |S_j - S_c| on the clean image; its traced parameters are a
    :class:`Contrast`. ``predicted``: the target class is each example's top class."""

    ranks: tuple[int, ...]
    predicted: bool = False


@dataclasses.dataclass(frozen=True)
class TracedTarget:
    """A :class:`jaxcam.targets.Target` applied to the outputs; the target itself is the
    traced argument (in the place of the classes)."""


@dataclasses.dataclass(frozen=True)
class Scores:
    """A callable target ``outputs -> scores (B,)`` (static: a new function compiles anew)."""

    fn: Callable[[Array], Array]


@dataclasses.dataclass(frozen=True)
class Objective:
    """The explained score: what is scored and the link applied to it (static, hashable).

    Attributes:
      target: :class:`ByClass`, :class:`Contrasted`, :class:`TracedTarget` or
        :class:`Scores`.
      link: a key of :data:`jaxcam.LINKS`.
    """

    target: ByClass | Contrasted | TracedTarget | Scores
    link: str

    @property
    def by_class(self) -> bool:
        """The score is link(S)_c of one class (the closed forms of :mod:`jaxcam.targets._links`)."""
        return isinstance(self.target, ByClass)

    def contrasted(self, ranks: tuple[int, ...]) -> Objective:
        """This class objective as FinerCAM's contrast with the classes of ``ranks``."""
        if not isinstance(self.target, ByClass):
            raise ValueError("only a class score can be contrasted with other classes")
        return dataclasses.replace(self, target=Contrasted(ranks, self.target.predicted))

    def resolved(self) -> Objective:
        """This objective once its classes are chosen (:meth:`classes`): the predicted
        class, if it was one, is now given."""
        if getattr(self.target, "predicted", False):
            return dataclasses.replace(
                self, target=dataclasses.replace(self.target, predicted=False))
        return self

    def classes(self, logits: Array, given):
        """The target of each example at these (clean) logits: the classes (B,), or for
        FinerCAM the :class:`Contrast` with its compared classes chosen; a resolved
        Contrast is returned as it is. Unused for callable targets."""
        predicted = getattr(self.target, "predicted", False)
        if isinstance(given, Contrast):
            if given.others is not None:
                return given
            c = jnp.argmax(logits, axis=-1) if predicted else given.classes
            s_c = jnp.take_along_axis(logits, c[:, None], axis=-1)
            # stable order by |S_j - S_c|, the target itself (distance 0) first
            order = jnp.argsort(jnp.abs(jax.lax.stop_gradient(logits - s_c)), axis=-1,
                                stable=True)
            ranks = jnp.asarray(self.target.ranks)
            return given.replace(classes=c, others=order[:, ranks])
        return jnp.argmax(logits, axis=-1) if predicted else given

    def __call__(self, logits: Array, classes) -> Array:
        """The explained scores Y (B,)."""
        link = LINKS[self.link].vector
        if isinstance(self.target, Contrasted):
            return link(finer_score(logits, classes))
        if isinstance(self.target, TracedTarget):
            return link(classes(logits))
        if isinstance(self.target, Scores):
            return link(self.target.fn(logits))
        return jnp.take_along_axis(link(logits), classes[:, None], axis=-1)[:, 0]

    def gradient(self, logits: Array, classes) -> Array:
        """dY_b/dS_b (B, C), accurate in float32 for confident predictions
        (:func:`jaxcam.targets._links.class_gradient`)."""
        if self.by_class:
            return class_gradient(self.link, logits, classes)
        return jax.grad(lambda s: jnp.sum(self(s, classes)))(logits)

    def taylor(self, logits: Array, c: Array, coeffs: Array) -> Array:
        """Derivatives (order,) of ONE example's score along a curve of its logits.

        Args:
          logits: S (C,) at t = 0, or one example's outputs (any pytree).
          c: the example's target (class, contrast or target; unused for callables).
          coeffs: (order, C), the derivatives s1, s2, ... of the curve S(t) at t = 0 (for
            pytree outputs, the same pytree with a leading ``order`` axis).

        Class targets use the closed forms of :mod:`jaxcam.targets._links` (accurate in float32
        for confident predictions); any other score is differentiated along the curve
        by nested ``jax.jvp``, then its link applied.
        """
        if self.by_class:
            return class_taylor(self.link, logits, c, coeffs)
        tree = jax.tree_util.tree_map
        order = jax.tree_util.tree_leaves(coeffs)[0].shape[0]
        dtype = jax.tree_util.tree_leaves(coeffs)[0].dtype
        raw = dataclasses.replace(self, link="logit")
        one = tree(lambda v: v[None], c)

        def along(t):  # S + t s1 + t^2/2 s2 + ..., by Horner's rule (products only)
            def point(s, ds):
                step = jnp.zeros_like(s)
                for k in range(order, 0, -1):
                    step = t * (ds[k - 1] / math.factorial(k) + step)
                return (s + step)[None]
            return raw(tree(point, logits, coeffs), one)[0]

        d = taylor_along(along, jnp.zeros((), dtype), jnp.ones((), dtype), order)
        return self.link_along(d)

    def raw_score(self, c) -> Callable:
        """For a score that is not by class: ONE example's raw score (before a scalar link)
        as a function of its outputs, ``outputs -> ()``."""
        raw = dataclasses.replace(self, link="logit")
        one = jax.tree_util.tree_map(lambda v: v[None], c)
        return lambda out: raw(jax.tree_util.tree_map(lambda v: v[None], out), one)[0]

    def link_along(self, d: Array) -> Array:
        """A scalar link ("logit" or "exp") applied to the derivatives (order,) of a raw
        score along a curve: the derivatives of the linked score."""
        if self.link != "exp":
            return d
        order = d.shape[0]
        return jnp.stack(bell(*(d[k] if k < order else 0.0 * d[0] for k in range(3)))[:order])

    def log_factor(self, logits: Array, classes: Array) -> Array:
        """log of the positive factor the link leaves out of its derivatives (B,).

        The "exp" link differentiates exp(S - S0) with S0 = S held constant, so its
        derivatives are those of exp(S) divided by exp(S0): this returns S0. Zero for the
        other links. A sum over several points (Smooth Grad-CAM++'s noisy copies) weights
        each point by exp(S0 - max S0) to keep the true proportions of exp(S).
        """
        if self.link != "exp":
            leaf = next(v for v in jax.tree_util.tree_leaves(logits)
                        if jnp.issubdtype(v.dtype, jnp.floating))
            return jnp.zeros(leaf.shape[:1], leaf.dtype)
        return dataclasses.replace(self, link="logit")(logits, classes)


# --- targets

def _outputs_text(outputs) -> str:
    leaves = jax.tree_util.tree_leaves(outputs)
    if len(leaves) == 1 and hasattr(outputs, "shape"):
        return f"logits of shape {outputs.shape}"
    return f"outputs {describe(outputs)}"


def _check_scores(what: str, fn: Callable, outputs, batch: int) -> None:
    """``fn(outputs)`` must be float scores (B,)."""
    try:
        out = jax.eval_shape(fn, outputs)
    except Exception as e:  # a user's function: report it with the shapes
        raise ValueError(f"the {what} failed on {_outputs_text(outputs)}: "
                         f"{type(e).__name__}: {e}") from e
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != (batch,) or not jnp.issubdtype(dtype, jnp.floating):
        got = f"shape {shape} ({dtype})" if shape is not None else type(out).__name__
        raise ValueError(f"a {what} must return one float score per image, shape "
                         f"({batch},), from {_outputs_text(outputs)}; it returned {got}")


_KINDS = ("None, an int, an int array (B,), a target of jaxcam.targets, or a callable "
          "outputs -> scores (B,)")


def _class_targets(target, batch: int, n: int) -> Array:
    """Class targets as int32 (B,), range-checked BEFORE the cast: int32 would silently
    wrap 2**32 + 1 to class 1. Traced targets cannot be range-checked."""
    if isinstance(target, int) and not isinstance(target, bool):
        check_class_range(target, n, "target class", "this model has")
        return jnp.full((batch,), target, jnp.int32)
    classes = target if isinstance(target, jax.Array) else np.asarray(target)
    if classes.dtype == bool or not jnp.issubdtype(classes.dtype, jnp.integer):
        got = (f"an array of dtype {classes.dtype}" if classes.ndim
               else f"{target!r} ({type(target).__name__})")
        raise TypeError(f"target must be {_KINDS}; got {got}")
    if classes.ndim > 1 or (classes.ndim == 1 and classes.shape != (batch,)):
        raise ValueError(f"target array has shape {classes.shape}; expected ({batch},), one "
                         "class per image of the batch")
    check_class_range(classes, n, "target class", "this model has")
    return jnp.broadcast_to(jnp.asarray(classes, jnp.int32), (batch,))


def resolve(split, x: Array, target, link: str) -> tuple[Objective, Array]:
    """Checks ``target`` and ``link`` and returns the static objective and its traced
    parameters: the classes (B,), or the prepared target of :mod:`jaxcam.targets`.

    Shapes are static, so every check but the range of traced class indices also runs
    under a caller's ``jit`` or ``vmap``.

    Raises:
      ValueError: unknown link, a link that needs class scores with a scalar target, a
        target that does not return scores (B,), a class target on a head that does not
        return logits (B, C), a class index out of range, or a target array of the wrong
        shape.
      TypeError: a target that is not an int (a bool, a float, a string).
    """
    shapes = split_shapes(split, x)
    where = f" for activations of shape {tuple(shapes.activations.shape)}"
    return resolve_for(shapes.outputs, target, link, where)


def _batch(outputs) -> int:
    return jax.tree_util.tree_leaves(outputs)[0].shape[0]


def _scalar_link(link: str, what: str) -> None:
    if not LINKS[link].scalar:
        scalar = " or ".join(map(repr, link_names(scalar=True)))
        raise ValueError(
            f"link={link!r} needs the scores of every class, but {what} returns one score "
            f"per example; use link={scalar} (or a class target of jaxcam.targets, which "
            "carries its own link)")


def resolve_for(outputs, target, link: str, where: str = "") -> tuple[Objective, Array]:
    """:func:`resolve` given the shapes of the head's outputs the target applies to."""
    check_link(link)
    batch = _batch(outputs)
    if isinstance(target, ClassScore) and target.output is None:
        target, link = target.classes, target.link        # the closed forms apply
    if isinstance(target, Target):
        _scalar_link(link, f"a {type(target).__name__} target")
        prepared = target.prepare(outputs)
        _check_scores(f"{type(target).__name__} target", prepared, outputs, batch)
        return Objective(TracedTarget(), link), prepared
    if callable(target):
        _scalar_link(link, "a callable target")
        _check_scores("callable target", target, outputs, batch)
        return Objective(Scores(target), link), jnp.zeros((batch,), jnp.int32)
    if (not hasattr(outputs, "shape") or len(outputs.shape) != 2
            or not jnp.issubdtype(outputs.dtype, jnp.floating) or outputs.shape[1] < 1):
        raise ValueError(
            f"split.head must return float logits (B, C) = ({batch}, C) for a class target"
            f"{where}; it returned {describe(outputs)}. To explain other outputs pass a "
            "target of jaxcam.targets (segmentation, box_score, embedding_similarity) or a "
            "callable outputs -> scores (B,)")
    n = outputs.shape[1]
    if target is None:
        return Objective(ByClass(predicted=True), link), jnp.zeros((batch,), jnp.int32)
    return Objective(ByClass(), link), _class_targets(target, batch, n)
