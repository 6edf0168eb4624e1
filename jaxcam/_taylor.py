"""The generic exact engine: pure derivatives of a function along every basis direction.

For every element a_i of the point a, the Taylor coefficients of t -> fn(a + t e_i) at
t = 0 up to ``order``, by nested ``jax.jvp`` (every primitive has a JVP rule, max-pool
included), ``vmap``-ed over chunks of directions under ``lax.map``, so memory is bounded by
the chunk, not by the element count. ``reduce`` turns the coefficients of ``fn``'s output
into one number per order inside the chunk (for instance a link applied to the logits'
coefficients), so only (n, order) numbers are ever stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def taylor_along(fn: Callable[[Array], Array], a: Array, v: Array, order: int) -> Array:
    """[d^k/dt^k fn(a + t v) at t = 0 for k = 1..order], by nested ``jax.jvp``.

    ``fn`` may return any shape; the result has a leading axis of length ``order``.
    One nesting level per order: level j turns every value into (value, derivative along
    v), so after ``order`` levels the entry at index 2^k - 1 is the k-th derivative.
    """
    def lift(f):
        def lifted(x):
            primals, tangents = jax.jvp(f, (x,), (v,))
            return (*primals, *tangents)
        return lifted

    g = lambda x: (fn(x),)  # noqa: E731
    for _ in range(order):
        g = lift(g)
    values = g(a)
    return jnp.stack([values[2**k - 1] for k in range(1, order + 1)])


def map_chunks(f: Callable[[Array], Array], n: int, chunk: int) -> Array:
    """Stacks f(indices) over consecutive chunks of range(n): (n, ...) from (chunk, ...)."""
    chunk = max(1, min(chunk, n))
    count = math.ceil(n / chunk)
    out = jax.lax.map(lambda start: f(start + jnp.arange(chunk)), jnp.arange(count) * chunk)
    return out.reshape(count * chunk, *out.shape[2:])[:n]


def _identity(coefficients: Array) -> Array:
    return coefficients


def basis_derivatives(fn: Callable[[Array], Array], a: Array, order: int, chunk: int,
                      reduce: Callable[[Array], Array] = _identity) -> tuple[Array, ...]:
    """(D1, .., D_order), each shaped like ``a``: D_k[i] = reduce(coefficients along e_i)[k-1].

    Args:
      fn: a function of an array shaped like ``a`` (any output shape).
      a: the point.
      order: the highest derivative.
      chunk: directions evaluated together (``vmap``); memory grows with it.
      reduce: maps the coefficients (order, *fn's output shape) of one direction to
        (order,). Default: the identity, for a scalar ``fn``.
    """
    n = a.size

    def directions(idx):
        basis = (idx[:, None] == jnp.arange(n)[None, :]).astype(a.dtype)
        return jax.vmap(lambda v: reduce(taylor_along(fn, a, v.reshape(a.shape), order)))(basis)

    d = map_chunks(directions, n, chunk)  # (n, order); padded indices give zero directions
    return tuple(d[:, k].reshape(a.shape) for k in range(order))
