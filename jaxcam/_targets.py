"""What a CAM explains: the target (which class, or any objective) and the link.

The explained score of example b is ``Y_b = link(S_b)[c_b]`` with ``S_b`` the logits and
``c_b`` its target class, or ``Y_b = link(target(S)_b)`` for a callable target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

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
}
# Links that also make sense on one scalar score (a callable target's output).
SCALAR_LINKS = ("logit", "exp")


@dataclasses.dataclass(frozen=True)
class Objective:
    """The explained score as a function of the logits (static, hashable).

    Attributes:
      link: a key of ``VECTOR_LINKS``.
      fn: a callable target ``logits (B, C) -> scores (B,)``, or None for class targets.
      predicted: explain each example's predicted class (top logit).
    """

    link: str
    fn: Callable[[Array], Array] | None = None
    predicted: bool = False

    def classes(self, logits: Array, given: Array) -> Array:
        """The target class of each example (B,); unused for callable targets."""
        return jnp.argmax(logits, axis=-1) if self.predicted else given

    def __call__(self, logits: Array, classes: Array) -> Array:
        """The explained scores Y (B,)."""
        if self.fn is not None:
            return VECTOR_LINKS[self.link](self.fn(logits))
        linked = VECTOR_LINKS[self.link](logits)
        return jnp.take_along_axis(linked, classes[:, None], axis=-1)[:, 0]

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


_NUM_CLASSES: dict = {}  # (split structure, input shape) -> C


def num_classes(split, x: Array) -> int:
    """The number of logits of ``split`` for inputs shaped like ``x`` (no compute)."""
    leaves, treedef = jax.tree_util.tree_flatten(split)
    key = (treedef, tuple((np.shape(l), str(getattr(l, "dtype", None))) for l in leaves),
           tuple(x.shape), str(x.dtype))
    if key not in _NUM_CLASSES:
        if len(_NUM_CLASSES) > 256:  # many distinct user splits: keep the cache small
            _NUM_CLASSES.clear()
        out = jax.eval_shape(lambda s, x: s.logits(x), split, x)
        if out.ndim != 2:
            raise ValueError(f"the split's head must return logits (B, C); got shape {out.shape}")
        _NUM_CLASSES[key] = out.shape[-1]
    return _NUM_CLASSES[key]


def resolve(split, x: Array, target, link: str) -> tuple[Objective, Array]:
    """Checks ``target`` and ``link`` and returns the static objective and the classes (B,).

    Raises:
      ValueError: unknown link, a link that needs class scores with a callable target, a
        class index out of range, or a target array of the wrong shape.
    """
    if link not in VECTOR_LINKS:
        raise ValueError(f"unknown link {link!r}; expected one of {tuple(VECTOR_LINKS)}")
    batch = x.shape[0]
    placeholder = jnp.zeros((batch,), jnp.int32)
    if target is None:
        return Objective(link, predicted=True), placeholder
    if callable(target):
        if link not in SCALAR_LINKS:
            raise ValueError(
                f"link={link!r} needs the scores of every class, but a callable target returns "
                f"one score per example; use link='logit' or 'exp', or apply {link} inside "
                "your target function")
        return Objective(link, fn=target), placeholder
    classes = target if isinstance(target, jax.Array) else np.asarray(target)
    if not jnp.issubdtype(classes.dtype, jnp.integer):
        raise ValueError(f"target must be None, an int, an int array (B,) or a callable; got "
                         f"an array of dtype {classes.dtype}")
    if classes.ndim == 0:
        classes = jnp.broadcast_to(classes, (batch,))
    if classes.shape != (batch,):
        raise ValueError(f"target array has shape {classes.shape}; expected ({batch},), one "
                         "class per image of the batch")
    if _is_concrete(classes) and _is_concrete(x):
        n = num_classes(split, x)
        bad = np.asarray(classes)[(np.asarray(classes) < 0) | (np.asarray(classes) >= n)]
        if bad.size:
            raise ValueError(f"target class {int(bad[0])} is out of range: this model has {n} "
                             f"classes, so targets must lie in [0, {n - 1}]")
    return Objective(link), jnp.asarray(classes, jnp.int32)
