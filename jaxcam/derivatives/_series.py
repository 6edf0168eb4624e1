"""Truncated Taylor series x(t) = x0 + x1 t + .. + xK t^K: their arithmetic (coefficient k
of t^k, k = 1..K; None is an exact zero), and :func:`taylor_along`, the derivatives of
any function along a line by nested ``jax.jvp`` (the reference and the fallback)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
Series = tuple  # (x1, .., xK), each an array or None (exactly zero)


# --------------------------------------------------------------------------------------
# Truncated Taylor series: coefficient k of t^k, k = 1..K; None is an exact zero.


def add_terms(x, y):
    if x is None:
        return y
    if y is None:
        return x
    return x + y


def _scale(c, x):
    return None if x is None else c * x


def series_product(a0: Array, a: Series, b0: Array, b: Series,
                   product: Callable[[Array, Array], Array]) -> Series:
    """Coefficients of (a0 + a(t)) * (b0 + b(t)) for a bilinear ``product``:
    y_k = sum_(j=0..k) product(a_j, b_(k-j)), skipping exact zeros."""
    order = max(len(a), len(b))
    full_a, full_b = (a0, *a), (b0, *b)
    out = []
    for k in range(1, order + 1):
        total = None
        for j in range(k + 1):
            if full_a[j] is None or full_b[k - j] is None:
                continue
            total = add_terms(total, product(full_a[j], full_b[k - j]))
        out.append(total)
    return tuple(out)


def series_power_terms(s: Series) -> list[Series]:
    """[s, s^2, .., s^K] of a series with zero constant term, truncated at order K
    (coefficients k = 1..K; s^m starts at t^m)."""
    order = len(s)
    powers = [tuple(s)]
    for _ in range(1, order):
        prev = powers[-1]
        nxt = []
        for k in range(1, order + 1):
            total = None
            for j in range(1, k):
                if s[j - 1] is None or prev[k - j - 1] is None:
                    continue
                total = add_terms(total, s[j - 1] * prev[k - j - 1])
            nxt.append(total)
        powers.append(tuple(nxt))
    return powers


def series_compose(derivatives: Sequence[Array], s: Series) -> Series:
    """Coefficients of f(x0 + s(t)) from f^(m)(x0), m = 1..K (Faa di Bruno):
    y_k = sum_m f^(m)(x0) / m! [s^m]_k."""
    out = [None] * len(s)
    for m, power in enumerate(series_power_terms(s), start=1):
        factor = derivatives[m - 1] / math.factorial(m)
        for k, coeff in enumerate(power):
            if coeff is not None:
                out[k] = add_terms(out[k], factor * coeff)
    return tuple(out)


def series_quotient(z0: Array, a: Series | None, b0: Array, b: Series) -> Series:
    """Coefficients of z = a / b from z0 = a0 / b0: z_k = (a_k - sum_(j>=1) b_j z_(k-j)) / b0."""
    order = len(b)
    a = a or (None,) * order
    z = [z0]
    for k in range(1, order + 1):
        total = a[k - 1]
        for j in range(1, k + 1):
            if b[j - 1] is None or z[k - j] is None:
                continue
            term = b[j - 1] * z[k - j]
            total = -term if total is None else total - term
        z.append(None if total is None else total / b0)
    return tuple(z[1:])


def horner(t: Array, x0: Array, s: Series) -> Array:
    """x0 + s_1 t + .. + s_K t^K, by Horner's rule."""
    acc = None
    for coeff in reversed(s):
        inner = add_terms(coeff, acc)
        acc = None if inner is None else t * inner
    return x0 if acc is None else x0 + acc


def taylor_along(fn: Callable[[Array], Array], a: Array, v: Array, order: int) -> Array:
    """[d^k/dt^k fn(a + t v) at t = 0 for k = 1..order], by nested ``jax.jvp``.

    ``fn`` may return any shape (or pytree); the result has a leading axis of length
    ``order`` (on every leaf).
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
    return jax.tree_util.tree_map(lambda *d: jnp.stack(d),
                                  *(values[2**k - 1] for k in range(1, order + 1)))
