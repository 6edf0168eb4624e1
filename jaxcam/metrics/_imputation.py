"""ROAD's noisy linear imputation (Rong et al. 2022), solved matrix-free in JAX.

Each removed pixel takes the weighted mean of its in-image neighbours (weights 1/6 for
the four sides, 1/12 for the diagonals; the weights of neighbours outside the image are
dropped), where known neighbours contribute their values and removed ones the unknowns.
For the removed pixels u this is the linear system

    s_i x_i - sum_{j in N(i), j removed} w_ij x_j = sum_{j in N(i), j known} w_ij v_j,

s_i = sum_{j in N(i) in the image} w_ij: a weighted graph Laplacian with Dirichlet
values at the known pixels, symmetric and positive definite as soon as one pixel is
known. It is solved by Jacobi-preconditioned conjugate gradients on the 3 x 3 stencil,
every image and channel at once (``vmap`` over the systems, one ``while_loop``), to a
relative residual ``tol``; no matrix is formed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
              (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))


def neighbour_sum(v: Array) -> Array:
    """sum_j w_ij v_j over each pixel's in-image neighbours, for v (..., H, W)."""
    h, w = v.shape[-2:]
    p = jnp.pad(v, [(0, 0)] * (v.ndim - 2) + [(1, 1), (1, 1)])
    return sum(weight * p[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w]
               for di, dj, weight in NEIGHBOURS)


class Solve(NamedTuple):
    """The imputed images and the relative residual each system reached."""

    images: Array      # (B, H, W, C)
    residual: Array    # (B, C): ||b - A x|| / ||b|| (0 where nothing is removed)


def _cg(apply, b: Array, precondition, tol: float, maxiter: int) -> tuple[Array, Array]:
    """Preconditioned conjugate gradients for one SPD system on (H, W) arrays."""
    b_norm = jnp.sqrt(jnp.sum(b * b))
    x = jnp.zeros_like(b)
    r = b
    z = precondition(r)
    p = z
    rz = jnp.sum(r * z)

    def running(state):
        _, r, _, _, i = state
        return (jnp.sqrt(jnp.sum(r * r)) > tol * b_norm) & (i < maxiter)

    def step(state):
        x, r, p, rz, i = state
        ap = apply(p)
        alpha = rz / jnp.sum(p * ap)
        x = x + alpha * p
        r = r - alpha * ap
        z = precondition(r)
        rz_new = jnp.sum(r * z)
        p = z + (rz_new / rz) * p
        return x, r, p, rz_new, i + 1

    x, r, *_ = jax.lax.while_loop(running, step, (x, r, p, rz, jnp.zeros((), jnp.int32)))
    residual = jnp.where(b_norm > 0, jnp.sqrt(jnp.sum(r * r)) / jnp.where(b_norm > 0, b_norm,
                                                                          1.0), 0.0)
    return x, residual


def linear_imputation(x: Array, known: Array, *, tol: float = 1e-6,
                      maxiter: int | None = None) -> Solve:
    """Removed pixels (``known`` False) of x (B, H, W, C) filled by ROAD's linear
    imputation; known pixels unchanged.

    Args:
      known: (B, H, W) booleans, at least one True per image (else the system is
        singular: the caller checks).
      tol: relative residual at which conjugate gradients stop.
      maxiter: iterations at most (default 20 (H + W)).
    """
    h, w = x.shape[1:3]
    maxiter = 20 * (h + w) if maxiter is None else maxiter
    removed = (~known).astype(x.dtype)[:, None]                      # (B, 1, H, W)
    v = jnp.moveaxis(x, -1, 1)                                       # (B, C, H, W)
    weights = neighbour_sum(jnp.ones((h, w), x.dtype))               # s_i
    b = removed * neighbour_sum((1 - removed) * v)

    def one(b, u):                                                   # (H, W) each
        def apply(z):          # identity on the known pixels keeps the operator SPD
            return u * (weights * z - neighbour_sum(u * z)) + (1 - u) * z

        def precondition(r):
            return r / jnp.where(u > 0, weights, 1.0)

        return _cg(apply, b, precondition, tol, maxiter)

    u = jnp.broadcast_to(removed, b.shape)
    flat = lambda a: a.reshape(-1, h, w)  # noqa: E731
    z, residual = jax.vmap(one)(flat(b), flat(u))
    z = z.reshape(v.shape)
    filled = jnp.where(removed > 0, z, v)
    return Solve(jnp.moveaxis(filled, 1, -1), residual.reshape(v.shape[:2]))
