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


def cam_weights(d1: Array) -> Array:
    """CAM's class weights W[c, k] of a global-average-pool + linear head, read off the
    head's gradient: W[c, k] = sum_ij dS^c/dA^k_ij (Zhou et al., 2016)."""
    return jnp.sum(d1, axis=SPATIAL)


VARIANTS = ("paper", "torchcam", "renormalized")


def _safe_ratio(num: Array, den: Array) -> Array:
    """num / den, and 0 where num = 0 (no curvature, or g = 0) or den = 0: never NaN."""
    defined = (num != 0) & (den != 0)
    return jnp.where(defined, num / jnp.where(defined, den, 1.0), 0.0)


def grad_cam_pp_alphas(a: Array, d2: Array, d3: Array, *, eps: float = 0.0,
                       variant: str = "paper") -> Array:
    """Grad-CAM++ pixel coefficients alpha^k_ij from the pure derivatives D2, D3.

    Variants, each named by what it reproduces:
      "paper" (Chattopadhyay et al., 2018, eq. 10; pytorch-grad-cam 1.5.7 with
        ``eps=1e-6``):
        alpha^k_ij = D2_ij / (2 D2_ij + (sum_ab A^k_ab) D3_ij + eps).
      "torchcam" (what torch-cam 0.5.0's ``GradCAMpp`` returns):
        alpha^k_ij = D2_ij, so the weights are sum_ij g^2 ReLU(g) in the closed form.
        torch-cam forms the ratio D2 / (2 D2 + sum_ab A_ab D3_ab + 1e-8), with mixed
        indices, but divides a copy (PyTorch's boolean-mask indexing copies), so its
        alpha stays g^2; ``eps`` has no effect here. (Its ``SmoothGradCAMpp`` divides for
        real: :func:`mixed_index_alphas`.)
      "renormalized" (the authors' TensorFlow code, tf-keras-vis): the paper's alpha
        divided, per channel, by its sum over the positions (alpha = 0 where g = 0).

    alpha = 0 where D2 = 0 (no curvature, or g = 0 in the closed form) or where the
    denominator vanishes: never NaN.
    """
    if variant == "torchcam":
        return d2
    total = jnp.sum(a, axis=SPATIAL, keepdims=True)
    alpha = _safe_ratio(d2, 2.0 * d2 + total * d3 + eps)
    if variant == "renormalized":
        return _safe_ratio(alpha, jnp.sum(alpha, axis=SPATIAL, keepdims=True))
    if variant != "paper":
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return alpha


def mixed_index_alphas(a: Array, d2: Array, d3: Array, *, eps: float = 0.0) -> Array:
    """alpha^k_ij = D2_ij / (2 D2_ij + sum_ab A^k_ab D3_ab + eps): torch-cam 0.5.0's
    ``SmoothGradCAMpp`` coefficients, whose denominator sums A D3 over the positions
    (eq. 10 has (sum_ab A_ab) D3_ij). There D2 and D3 are g^2 and g^3 averaged over the
    noisy passes, A the clean image's activations, and eps = 1e-8.

    alpha = 0 where D2 = 0 or the denominator vanishes: never NaN.
    """
    mixed = jnp.sum(a * d3, axis=SPATIAL, keepdims=True)
    return _safe_ratio(d2, 2.0 * d2 + mixed + eps)


def grad_cam_pp_weights(a: Array, d1: Array, d2: Array, d3: Array, *, eps: float = 0.0,
                        variant: str = "paper") -> Array:
    """Grad-CAM++ channel weights w_k = sum_ij alpha^k_ij ReLU(D1_ij) (eq. 5)."""
    alpha = grad_cam_pp_alphas(a, d2, d3, eps=eps, variant=variant)
    return pixel_weighted_sum(alpha, d1)


def pixel_weighted_sum(alpha: Array, d1: Array) -> Array:
    """sum_ij alpha^k_ij ReLU(D1_ij) (..., K): eq. 5 for any coefficients alpha."""
    return jnp.sum(alpha * jax.nn.relu(d1), axis=SPATIAL)


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
    """Min-max scales each (h, w) map to [0, 1]; a constant map (all zero) becomes zero.

    Exact at the ends by construction, whatever the rounding or fusion order of the
    division: each non-constant map is exactly 1.0 where it attains its maximum and exactly
    0.0 where it attains its minimum, and in [0, 1] everywhere (maps can be thresholded).
    """
    lo = jnp.min(maps, axis=(-2, -1), keepdims=True)
    hi = jnp.max(maps, axis=(-2, -1), keepdims=True)
    # XLA may divide by multiplying with 1 / span, which flushes to zero when span is near
    # float's maximum; such maps (and spans that overflow) are scaled down first.
    huge = ~(hi - lo < 2.0**100)
    scale = jnp.where(huge, 2.0**-8, 1.0).astype(maps.dtype)
    span = scale * hi - scale * lo
    varies = span > 0
    scaled = (scale * maps - scale * lo) / jnp.where(varies, span, 1.0)
    scaled = jnp.where(maps == hi, 1.0, jnp.where(maps == lo, 0.0, jnp.clip(scaled, 0.0, 1.0)))
    return jnp.where(varies, scaled, 0.0).astype(maps.dtype)
