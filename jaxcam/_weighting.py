"""The maths of gradient-weighted CAMs, on plain arrays (model-free).

Every function takes activations ``a`` of shape (..., h, w, K) and derivatives of the
explained score with respect to them of the same shape, so each formula can be checked on
a hand-made example. Leading batch dimensions are free.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
SPATIAL = (-3, -2)


def grad_cam_weights(d1: Array) -> Array:
    """Grad-CAM channel weights: alpha_k = (1/Z) sum_ij dY/dA^k_ij  (Selvaraju et al., 2017)."""
    return jnp.mean(d1, axis=SPATIAL)


def grad_cam_pp_alphas(a: Array, d2: Array, d3: Array, *, eps: float = 0.0) -> Array:
    """Grad-CAM++ pixel coefficients (Chattopadhyay et al., 2018, eq. 10).

    alpha^k_ij = D2 / (2 D2 + (sum_ab A^k_ab) D3 + eps), with D2, D3 the pure second and
    third derivatives of the score in A^k_ij. alpha = 0 where D2 = 0 (no curvature, or g = 0
    in the closed form) or where the denominator vanishes: never NaN.
    """
    total = jnp.sum(a, axis=SPATIAL, keepdims=True)
    denominator = 2.0 * d2 + total * d3 + eps
    defined = (d2 != 0) & (denominator != 0)
    return jnp.where(defined, d2 / jnp.where(defined, denominator, 1.0), 0.0)


def grad_cam_pp_weights(a: Array, d1: Array, d2: Array, d3: Array, *, eps: float = 0.0) -> Array:
    """Grad-CAM++ channel weights w_k = sum_ij alpha^k_ij ReLU(dY/dA^k_ij) (eq. 5)."""
    return jnp.sum(grad_cam_pp_alphas(a, d2, d3, eps=eps) * jax.nn.relu(d1), axis=SPATIAL)


def channel_sum(a: Array, weights: Array) -> Array:
    """sum_k w_k A^k: (..., h, w, K) and (..., K) -> (..., h, w)."""
    return jnp.einsum("...hwk,...k->...hw", a, weights)


def weighted_map(a: Array, weights: Array) -> Array:
    """The class activation map ReLU(sum_k w_k A^k)."""
    return jax.nn.relu(channel_sum(a, weights))


def upsample(maps: Array, size: tuple[int, int]) -> Array:
    """Bilinear resize (half-pixel centres, as OpenCV) of (B, h, w) maps to (B, *size)."""
    if maps.shape[-2:] == tuple(size):
        return maps
    return jax.image.resize(maps, maps.shape[:-2] + tuple(size), method="bilinear",
                            antialias=False)


def normalize(maps: Array) -> Array:
    """Min-max scales each (h, w) map to [0, 1]; a constant map (all zero) becomes zero."""
    lo = jnp.min(maps, axis=(-2, -1), keepdims=True)
    span = jnp.max(maps, axis=(-2, -1), keepdims=True) - lo
    return jnp.where(span > 0, (maps - lo) / jnp.where(span > 0, span, 1.0), 0.0)
