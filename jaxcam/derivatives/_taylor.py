"""The generic exact engine: pure derivatives of a function along every basis direction.

For every element a_i of the point a, the derivatives of t -> fn(a + t e_i) at t = 0 up to
``order``, for chunks of directions at a time (``vmap``) under ``lax.map``, so memory is
bounded by the chunk, not by the element count. ``reduce`` turns the coefficients of
``fn``'s output into one number per order inside the chunk (for instance a link applied
to the logits' coefficients), so only (n, order) numbers are ever stored.

Two propagations compute the same derivatives:

* "series" (default): ``fn``'s jaxpr is evaluated once at ``a``, then only the truncated
  Taylor series of the values that depend on the direction are propagated, ``order``
  coefficients per value, with convolutions computed as matrix products
  (:mod:`jaxcam.derivatives._lowering`). Primitives without a dedicated rule go through nested
  ``jax.jvp`` equation by equation.
* "nested_jvp": :func:`taylor_along`, ``order`` nested ``jax.jvp`` of the whole function
  (every primitive has a JVP rule), the reference the series propagation is tested
  against. Also used when ``fn`` does not return a single float array.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcam.derivatives import _lowering
from jaxcam.derivatives._series import taylor_along
from jaxcam._chunking import chunked_map

Array = jax.Array
PROPAGATIONS = ("series", "nested_jvp")


def _identity(coefficients: Array) -> Array:
    return coefficients


def basis_derivatives(fn: Callable[[Array], Array], a: Array, order: int, chunk: int,
                      reduce: Callable[[Array], Array] = _identity, *,
                      propagation: str = "series") -> tuple[Array, ...]:
    """(D1, .., D_order), each shaped like ``a``: D_k[i] = reduce(coefficients along e_i)[k-1].

    Args:
      fn: a function of an array shaped like ``a`` (any output shape).
      a: the point.
      order: the highest derivative.
      chunk: directions evaluated together (``vmap``); memory grows with it.
      reduce: maps the derivatives (order, *fn's output shape) of t -> fn(a + t e_i) at
        t = 0 to (order,). Default: the identity, for a scalar ``fn``.
      propagation: "series" (Taylor series of the values that depend on the direction,
        convolutions as matrix products) or "nested_jvp" (``order`` nested ``jax.jvp``
        of ``fn``); both are exact and agree to rounding.
    """
    if propagation not in PROPAGATIONS:
        raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {propagation!r}")
    closed = _lowering.trace(fn, a) if propagation == "series" else None
    if closed is not None:
        # one program, fn's constants as arguments (never embedded), even when called
        # outside jit (op-by-op evaluation of the primal pass would compile every op)
        run = functools.partial(_series_basis, closed.jaxpr, order, chunk, reduce)
        return jax.jit(run)(closed.consts, a)
    along = lambda v: taylor_along(fn, a, v, order)  # noqa: E731
    return _basis(along, a, order, chunk, reduce)


def _basis(along: Callable[[Array], Array], a: Array, order: int, chunk: int,
           reduce: Callable[[Array], Array]) -> tuple[Array, ...]:
    """basis_derivatives from ``along(v)``, the derivatives (order, ...) along v."""
    n = a.size

    def directions(idx):
        basis = (idx[:, None] == jnp.arange(n)[None, :]).astype(a.dtype)
        return jax.vmap(lambda v: reduce(along(v.reshape(a.shape))))(basis)

    d = chunked_map(directions, n=n, chunk=chunk)  # (n, order); padded: zero directions
    return tuple(d[:, k].reshape(a.shape) for k in range(order))


def _series_basis(jaxpr, order: int, chunk: int, reduce: Callable[[Array], Array],
                  consts, a: Array) -> tuple[Array, ...]:
    along = _lowering.jaxpr_directional_derivatives(jaxpr, consts, a, order)
    return _basis(along, a, order, chunk, reduce)
