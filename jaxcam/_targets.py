"""What a CAM explains: the target (which class, or any objective) and the link.

The explained score of example b is ``Y_b = link(S_b)[c_b]`` with ``S_b`` the logits and
``c_b`` its target class, ``Y_b = link(target(S)_b)`` for a callable target, or FinerCAM's
contrast of the target class with its most similar classes (:class:`Contrast`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flax import struct

from jaxcam._checks import check_choice
from jaxcam._links import bell, class_gradient, class_taylor
from jaxcam._split import split_shapes
from jaxcam._taylor import taylor_along

Array = jax.Array


def _exp(s: Array) -> Array:
    # exp(S - S0) with S0 = S held constant: every derivative equals that of exp(S) up to
    # the positive factor exp(S0), which cancels in Grad-CAM++'s alpha and only rescales
    # the map, and nothing overflows in float32 (exp(89) would).
    return jnp.exp(s - jax.lax.stop_gradient(s))


# Links acting on the whole logit vector (B, C) -> (B, C).
VECTOR_LINKS: dict[str, Callable[[Array], Array]] = {
    "logit": lambda s: s,
    "exp": _exp,
    "softmax": lambda s: jax.nn.softmax(s, axis=-1),
    "log_softmax": lambda s: jax.nn.log_softmax(s, axis=-1),
    # ReST (pytorch-grad-cam's ClassifierOutputReST, for ShapleyCAM): S_c - CE(S, c)
    "rest": lambda s: s + jax.nn.log_softmax(s, axis=-1),
}
# Links that also make sense on one scalar score (a callable target's output).
SCALAR_LINKS = ("logit", "exp")


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


@dataclasses.dataclass(frozen=True)
class Objective:
    """The explained score as a function of the logits (static, hashable).

    Attributes:
      link: a key of ``VECTOR_LINKS``.
      fn: a callable target ``logits (B, C) -> scores (B,)``, or None for class targets.
      predicted: explain each example's predicted class (top logit).
      contrast: FinerCAM: the ranks (1 = the most similar) of the classes the target is
        contrasted with, by |S_j - S_c| on the clean image; its traced parameters are a
        :class:`Contrast`. None: not a FinerCAM objective.
    """

    link: str
    fn: Callable[[Array], Array] | None = None
    predicted: bool = False
    contrast: tuple[int, ...] | None = None

    @property
    def by_class(self) -> bool:
        """The score is link(S)_c of one class (the closed forms of :mod:`jaxcam._links`)."""
        return self.fn is None and self.contrast is None

    def classes(self, logits: Array, given):
        """The target of each example at these (clean) logits: the classes (B,), or for
        FinerCAM the :class:`Contrast` with its compared classes chosen; a resolved
        Contrast is returned as it is. Unused for callable targets."""
        if isinstance(given, Contrast):
            if given.others is not None:
                return given
            c = jnp.argmax(logits, axis=-1) if self.predicted else given.classes
            s_c = jnp.take_along_axis(logits, c[:, None], axis=-1)
            # stable order by |S_j - S_c|, the target itself (distance 0) first
            order = jnp.argsort(jnp.abs(jax.lax.stop_gradient(logits - s_c)), axis=-1,
                                stable=True)
            return given.replace(classes=c, others=order[:, jnp.asarray(self.contrast)])
        return jnp.argmax(logits, axis=-1) if self.predicted else given

    def __call__(self, logits: Array, classes) -> Array:
        """The explained scores Y (B,)."""
        if self.contrast is not None:
            return VECTOR_LINKS[self.link](finer_score(logits, classes))
        if self.fn is not None:
            return VECTOR_LINKS[self.link](self.fn(logits))
        linked = VECTOR_LINKS[self.link](logits)
        return jnp.take_along_axis(linked, classes[:, None], axis=-1)[:, 0]

    def gradient(self, logits: Array, classes) -> Array:
        """dY_b/dS_b (B, C), accurate in float32 for confident predictions
        (:func:`jaxcam._links.class_gradient`)."""
        if self.by_class:
            return class_gradient(self.link, logits, classes)
        return jax.grad(lambda s: jnp.sum(self(s, classes)))(logits)

    def taylor(self, logits: Array, c: Array, coeffs: Array) -> Array:
        """Derivatives (order,) of ONE example's score along a curve of its logits.

        Args:
          logits: S (C,) at t = 0.
          c: the example's target class (unused for callable targets).
          coeffs: (order, C), the derivatives s1, s2, ... of the curve S(t) at t = 0.

        Class targets use the closed forms of :mod:`jaxcam._links` (accurate in float32
        for confident predictions); a callable target is differentiated along the curve
        by nested ``jax.jvp``, then its link applied.
        """
        if self.by_class:
            return class_taylor(self.link, logits, c, coeffs)
        order = coeffs.shape[0]
        raw = dataclasses.replace(self, link="logit")
        one = jax.tree_util.tree_map(lambda v: v[None], c)

        def along(t):  # S + t s1 + t^2/2 s2 + ..., by Horner's rule (products only)
            step = jnp.zeros_like(logits)
            for k in range(order, 0, -1):
                step = t * (coeffs[k - 1] / math.factorial(k) + step)
            return raw((logits + step)[None], one)[0]

        d = taylor_along(along, jnp.zeros((), coeffs.dtype), jnp.ones((), coeffs.dtype), order)
        if self.link == "exp":
            d = jnp.stack(bell(*(d[k] if k < order else 0.0 * d[0] for k in range(3)))[:order])
        return d

    def log_factor(self, logits: Array, classes: Array) -> Array:
        """log of the positive factor the link leaves out of its derivatives (B,).

        The "exp" link differentiates exp(S - S0) with S0 = S held constant, so its
        derivatives are those of exp(S) divided by exp(S0): this returns S0. Zero for the
        other links. A sum over several points (Smooth Grad-CAM++'s noisy copies) weights
        each point by exp(S0 - max S0) to keep the true proportions of exp(S).
        """
        if self.link != "exp":
            return jnp.zeros(logits.shape[:1], logits.dtype)
        return dataclasses.replace(self, link="logit")(logits, classes)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


# --- targets

def _check_target_fn(fn: Callable, logits: jax.ShapeDtypeStruct) -> None:
    """A callable target must map logits (B, C) to float scores (B,)."""
    try:
        out = jax.eval_shape(fn, logits)
    except Exception as e:  # a user's function: report it with the shapes
        raise ValueError(f"the callable target failed on logits of shape {logits.shape}: "
                         f"{type(e).__name__}: {e}") from e
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != logits.shape[:1] or not jnp.issubdtype(dtype, jnp.floating):
        got = f"shape {shape} ({dtype})" if shape is not None else type(out).__name__
        raise ValueError(f"a callable target must return one float score per image, shape "
                         f"({logits.shape[0]},), from logits {logits.shape}; it returned {got}")


_KINDS = "None, an int, an int array (B,) or a callable logits (B, C) -> scores (B,)"


def _check_range(classes: np.ndarray, n: int) -> None:
    bad = classes[(classes < 0) | (classes >= n)]
    if bad.size:
        raise ValueError(f"target class {int(bad[0])} is out of range: this model has {n} "
                         f"classes, so targets must lie in [0, {n - 1}]")


def _class_targets(target, batch: int, n: int) -> Array:
    """Class targets as int32 (B,), range-checked BEFORE the cast: int32 would silently
    wrap 2**32 + 1 to class 1. Traced targets cannot be range-checked."""
    if isinstance(target, int) and not isinstance(target, bool):
        _check_range(np.asarray([target], dtype=object), n)     # a Python int of any size
        return jnp.full((batch,), target, jnp.int32)
    classes = target if isinstance(target, jax.Array) else np.asarray(target)
    if classes.dtype == bool or not jnp.issubdtype(classes.dtype, jnp.integer):
        got = (f"an array of dtype {classes.dtype}" if classes.ndim
               else f"{target!r} ({type(target).__name__})")
        raise TypeError(f"target must be {_KINDS}; got {got}")
    if classes.ndim > 1 or (classes.ndim == 1 and classes.shape != (batch,)):
        raise ValueError(f"target array has shape {classes.shape}; expected ({batch},), one "
                         "class per image of the batch")
    if _is_concrete(classes):
        _check_range(np.asarray(classes).reshape(-1), n)
    return jnp.broadcast_to(jnp.asarray(classes, jnp.int32), (batch,))


def resolve(split, x: Array, target, link: str) -> tuple[Objective, Array]:
    """Checks ``target`` and ``link`` and returns the static objective and the classes (B,).

    Shapes are static, so every check but the range of traced class indices also runs
    under a caller's ``jit`` or ``vmap``.

    Raises:
      ValueError: unknown link, a link that needs class scores with a callable target, a
        callable target that does not return scores (B,), a class index out of range, or
        a target array of the wrong shape.
      TypeError: a target that is not an int (a bool, a float, a string).
    """
    return resolve_for(split_shapes(split, x).logits, target, link)


def resolve_for(logits: jax.ShapeDtypeStruct, target, link: str) -> tuple[Objective, Array]:
    """:func:`resolve` given the shape of the logits (B, C) the target applies to."""
    check_choice("link", link, VECTOR_LINKS)
    batch, n = logits.shape
    placeholder = jnp.zeros((batch,), jnp.int32)
    if target is None:
        return Objective(link, predicted=True), placeholder
    if callable(target):
        if link not in SCALAR_LINKS:
            raise ValueError(
                f"link={link!r} needs the scores of every class, but a callable target returns "
                f"one score per example; use link='logit' or 'exp', or apply {link} inside "
                "your target function")
        _check_target_fn(target, logits)
        return Objective(link, fn=target), placeholder
    return Objective(link), _class_targets(target, batch, n)
