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


GRAD_CAM_PP_VARIANTS = ("paper", "torchcam", "renormalized")


def safe_ratio(num: Array, den: Array) -> Array:
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
    alpha = safe_ratio(d2, 2.0 * d2 + total * d3 + eps)
    if variant == "renormalized":
        return safe_ratio(alpha, jnp.sum(alpha, axis=SPATIAL, keepdims=True))
    if variant != "paper":
        raise ValueError(f"unknown variant {variant!r}; expected one of {GRAD_CAM_PP_VARIANTS}")
    return alpha


def mixed_index_alphas(a: Array, d2: Array, d3: Array, *, eps: float = 0.0) -> Array:
    """alpha^k_ij = D2_ij / (2 D2_ij + sum_ab A^k_ab D3_ab + eps): torch-cam 0.5.0's
    ``SmoothGradCAMpp`` coefficients, whose denominator sums A D3 over the positions
    (eq. 10 has (sum_ab A_ab) D3_ij). There D2 and D3 are g^2 and g^3 averaged over the
    noisy passes, A the clean image's activations, and eps = 1e-8.

    alpha = 0 where D2 = 0 or the denominator vanishes: never NaN.
    """
    mixed = jnp.sum(a * d3, axis=SPATIAL, keepdims=True)
    return safe_ratio(d2, 2.0 * d2 + mixed + eps)


def grad_cam_pp_weights(a: Array, d1: Array, d2: Array, d3: Array, *, eps: float = 0.0,
                        variant: str = "paper") -> Array:
    """Grad-CAM++ channel weights w_k = sum_ij alpha^k_ij ReLU(D1_ij) (eq. 5)."""
    alpha = grad_cam_pp_alphas(a, d2, d3, eps=eps, variant=variant)
    return pixel_weighted_sum(alpha, d1)


def pixel_weighted_sum(alpha: Array, d1: Array) -> Array:
    """sum_ij alpha^k_ij ReLU(D1_ij) (..., K): eq. 5 for any coefficients alpha."""
    return jnp.sum(alpha * jax.nn.relu(d1), axis=SPATIAL)


def channel_weighted(a: Array, weights: Array) -> Array:
    """The weighted activations w_k A^k: (..., h, w, K) and (..., K) -> (..., h, w, K)."""
    return a * weights[..., None, None, :]


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


# --- the rest of the gradient family (Jiang et al. 2021, Fu et al. 2020, Draelos & Carin
# 2020, Cai 2025) and the decompositions (Muhammad & Yeasin 2020)

def xgrad_cam_weights(a: Array, d1: Array, *, eps: float = 0.0) -> Array:
    """XGrad-CAM channel weights (Fu et al., BMVC 2020, arXiv 2008.02312):
    w_k = sum_ij (A^k_ij / (sum_ab A^k_ab + eps)) dY/dA^k_ij.

    A channel whose activations sum to 0 (a dead channel, with eps = 0) weighs 0, never
    NaN. pytorch-grad-cam 1.5.7 uses eps = 1e-7, torch-cam 0.5.0 eps = 1e-8.
    """
    total = jnp.sum(a, axis=SPATIAL)
    return safe_ratio(jnp.sum(a * d1, axis=SPATIAL), total + eps)


def layer_cam_weights(d1: Array) -> Array:
    """LayerCAM's element-wise weights ReLU(dY/dA^k_ij) (Jiang et al., IEEE TIP 2021)."""
    return jax.nn.relu(d1)


def shapley_cam_weights(d1: Array, hvp: Array) -> Array:
    """ShapleyCAM channel weights (Cai, arXiv 2501.06261; pytorch-grad-cam 1.5.7):
    w_k = (1/Z) sum_ij (g - (1/2) H A)^k_ij, with g = dY/dA and H A the Hessian of Y in A
    applied to A itself: the second-order Taylor estimate of removing the activations."""
    return jnp.mean(d1 - 0.5 * hvp, axis=SPATIAL)


def ablation_weights(score: Array, ablated: Array) -> Array:
    """Ablation-CAM channel weights (Desai & Ramaswamy, WACV 2020):
    w_k = (Y - Y_k) / Y, with Y_k the score with channel k ablated; score (..., ) and
    ablated (..., K). Where Y = 0 the weights are 0, never NaN or infinite."""
    y = score[..., None]
    return safe_ratio(y - ablated, jnp.broadcast_to(y, ablated.shape))


def first_component(weighted: Array) -> Array:
    """The projection of the centred activations on their first principal component
    (Eigen-CAM, Muhammad & Yeasin, IJCNN 2020, arXiv 2008.00299): (..., h, w, K) ->
    (..., h, w).

    With X the (h w, K) matrix of the (weighted) activations and X_c = X - mean over the
    positions, the map is X_c v, v the first right singular vector of X_c, as
    pytorch-grad-cam 1.5.7's ``get_2d_projection``. The sign of v is not defined by the
    decomposition (LAPACK returns either); jaxcam fixes it so that sum_k v_k >= 0, i.e. the
    map correlates non-negatively with the total activation sum_k X_c[:, k]: the map is
    high where the activations are, on the whole, large. NaN activations count as 0.
    """
    shape = weighted.shape
    x = jnp.nan_to_num(weighted, nan=0.0).reshape(*shape[:-3], shape[-3] * shape[-2], shape[-1])
    xc = x - jnp.mean(x, axis=-2, keepdims=True)
    _, _, vt = jnp.linalg.svd(xc, full_matrices=False)
    v = vt[..., 0, :]                                                     # (..., K)
    v = jnp.where(jnp.sum(v, axis=-1, keepdims=True) < 0, -v, v)
    return jnp.einsum("...nk,...k->...n", xc, v).reshape(shape[:-1])
