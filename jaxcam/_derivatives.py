"""Derivatives of the explained score with respect to the activations A."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._targets import Objective

Array = jax.Array
DERIVATIVES = ("approx", "exact")


def head_gradient(split, a: Array, objective: Objective, classes: Array):
    """g = dY/dA through the head only (never the trunk, never the parameters).

    Returns:
      (g (B, h, w, K), logits (B, C), classes (B,)): the classes are resolved here when
      the objective explains the predicted class.
    """
    logits, head_vjp = jax.vjp(split.logits_from, a)
    classes = objective.classes(jax.lax.stop_gradient(logits), classes)
    dy_dlogits = jax.grad(lambda s: jnp.sum(objective(s, classes)))(logits)
    (g,) = head_vjp(dy_dlogits)
    return g, logits, classes


def cam_derivatives(split, a: Array, objective: Objective, classes: Array, *, order: int,
                    mode: str = "approx") -> tuple[Array, ...]:
    """The pure derivatives d^k Y / d(A_i)^k, k = 1..order, of every element of A.

    ``mode="approx"`` is the closed form of Grad-CAM++ (eq. 19): with g = dY/dA, the
    k-th derivative is taken as g^k, exact for the "exp" link on a piecewise-linear head.
    """
    if mode != "approx":
        raise ValueError(f"unknown derivatives mode {mode!r}; expected one of {DERIVATIVES}")
    g, _, _ = head_gradient(split, a, objective, classes)
    return tuple(g**k for k in range(1, order + 1))
