"""Exact versus closed-form Grad-CAM++: the same inputs through both, side by side."""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import struct

from jaxcam import _weighting as W
from jaxcam.derivatives._kinks import kink_shares
from jaxcam.methods._measures import HeadDerivatives
from jaxcam.methods._gradient import GradCAMPPMap, build_grad_cam_pp
from jaxcam.methods._pipeline import check_inputs, run
from jaxcam.splitting._split import Split

Array = jax.Array


@struct.dataclass
class DerivativeComparison:
    """Exact and closed-form Grad-CAM++ on the same inputs (a pytree; leading axis B).

    Attributes:
      d2_exact, d3_exact, d2_approx, d3_approx: (B, h, w, K) pure derivatives.
      alpha_exact, alpha_approx: (B, h, w, K) eq. 10 coefficients.
      weights_exact, weights_approx: (B, K) channel weights.
      maps_exact, maps_approx: (B, H, W) upsampled maps in [0, 1].
      spearman: (B,) rank correlation of the two maps (ties share their mean rank).
      relative_l2: (B,) ||exact - approx|| / ||approx|| of the maps (0 if both are zero).
      iou_top20: (B,) intersection over union of each map's top 20 % pixels.
      max_alpha_diff: (B,) max |alpha_exact - alpha_approx|.
      kink_activations: (B,) share of the activations that sit exactly on a kink of the
        head (tied for a max-pool window's maximum, at a ReLU threshold): their pure
        derivatives do not exist and both forms return JAX's tie-break there
        (:func:`jaxcam.pure_derivatives`).
      kink_head_units: (B,) share of the head's ReLU / max-pool units exactly on a kink.
    """

    d2_exact: Array
    d3_exact: Array
    d2_approx: Array
    d3_approx: Array
    alpha_exact: Array
    alpha_approx: Array
    weights_exact: Array
    weights_approx: Array
    maps_exact: Array
    maps_approx: Array
    spearman: Array
    relative_l2: Array
    iou_top20: Array
    max_alpha_diff: Array
    kink_activations: Array
    kink_head_units: Array

    def summary(self) -> dict[str, list[float]]:
        """The statistics as plain floats, one per image (for JSON)."""
        return {name: [float(v) for v in getattr(self, name)]
                for name in ("spearman", "relative_l2", "iou_top20", "max_alpha_diff",
                             "kink_activations", "kink_head_units")}


def _average_ranks(v: Array) -> Array:
    """Ranks 0..n-1 of a flat array; tied values share their mean rank."""
    s = jnp.sort(v)
    lo = jnp.searchsorted(s, v, side="left")
    hi = jnp.searchsorted(s, v, side="right")
    return (lo + hi - 1) / 2.0


def spearman(x: Array, y: Array) -> Array:
    """Spearman rank correlation of two maps (any shape); 1 if both are constant and
    equal, 0 if exactly one is constant (no rank order to compare)."""
    rx, ry = _average_ranks(x.ravel()), _average_ranks(y.ravel())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    dot = lambda u, v: jnp.dot(u, v, precision=jax.lax.Precision.HIGHEST)  # noqa: E731
    den = jnp.sqrt(dot(rx, rx)) * jnp.sqrt(dot(ry, ry))
    both_flat = jnp.where(jnp.all(x == y), 1.0, 0.0)
    return jnp.where(den > 0, dot(rx, ry) / jnp.where(den > 0, den, 1.0), both_flat)


def top_iou(x: Array, y: Array, fraction: float = 0.2) -> Array:
    """IoU of the pixels at or above each map's (1 - fraction) quantile."""
    tx = x >= jnp.quantile(x, 1.0 - fraction)
    ty = y >= jnp.quantile(y, 1.0 - fraction)
    union = jnp.sum(tx | ty)
    return jnp.where(union > 0, jnp.sum(tx & ty) / jnp.maximum(union, 1), 1.0)


def relative_l2(x: Array, y: Array) -> Array:
    den = jnp.linalg.norm(y.ravel())
    num = jnp.linalg.norm((x - y).ravel())
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.where(num > 0, jnp.inf, 0.0))


def compare_maps(x, y) -> dict[str, float]:
    """How two maps of one image (h, w) agree: Spearman rank correlation, relative L2
    difference ``|x - y| / |y|`` and IoU of their top 20 % pixels, as plain floats.

    Example::

        jaxcam.compare_maps(maps_exact[0], maps_approx[0])  # {"spearman": 0.98, ...}
    """
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"compare_maps takes two maps (h, w) of the same shape; got "
                         f"{x.shape} and {y.shape}")
    return {"spearman": float(spearman(x, y)), "relative_l2": float(relative_l2(x, y)),
            "iou_top20": float(top_iou(x, y))}


@struct.dataclass
class _Compare:
    exact: HeadDerivatives
    weighting: GradCAMPPMap

    def __call__(self, split: Split, x: Array, classes: Array, key=None) -> DerivativeComparison:
        a = split.activations(x)
        split = split.given(x)
        d_exact = self.exact.at(split, a, classes)
        d_approx = self.exact.replace(derivatives="approx").at(split, a, classes)
        out = {}
        for name, d in (("exact", d_exact), ("approx", d_approx)):
            alpha = W.grad_cam_pp_alphas(a, d[1], d[2], eps=self.weighting.eps,
                                         variant=self.weighting.variant)
            weights = W.grad_cam_pp_weights(a, *d, eps=self.weighting.eps,
                                            variant=self.weighting.variant)
            maps = W.normalize(W.upsample(W.weighted_map(a, weights), x.shape[1:3]))
            out.update({f"d2_{name}": d[1], f"d3_{name}": d[2], f"alpha_{name}": alpha,
                        f"weights_{name}": weights, f"maps_{name}": maps})
        me, ma = out["maps_exact"], out["maps_approx"]
        kinks = kink_shares(split.logits_from, a)
        return DerivativeComparison(
            **out,
            spearman=jax.vmap(spearman)(me, ma),
            relative_l2=jax.vmap(relative_l2)(me, ma),
            iou_top20=jax.vmap(top_iou)(me, ma),
            max_alpha_diff=jnp.max(jnp.abs(out["alpha_exact"] - out["alpha_approx"]),
                                   axis=(1, 2, 3)),
            kink_activations=kinks.activations,
            kink_head_units=kinks.head_units)


def compare_derivatives(split: Split, x: Array, target=None, *, link: str = "softmax",
                        engine: str = "auto", chunk_size: int | None = None,
                        variant: str = "paper", eps: float = 0.0) -> DerivativeComparison:
    """Exact versus closed-form (g, g^2, g^3) Grad-CAM++ on the same inputs.

    Both use the same activations, target and link; only D2 and D3 differ (D1 = g in
    both). Returns the derivatives, alphas, channel weights and maps of each, and per-image
    statistics: Spearman rank correlation of the maps, relative L2 difference, IoU of the
    top 20 % pixels, max |alpha_exact - alpha_approx|, and the share of activations (and
    of the head's ReLU / max-pool units) that sit exactly on a kink, where neither form
    is a derivative (:mod:`jaxcam.derivatives._kinks`; common in VGG's head, whose max-pool sees
    all-zero windows of post-ReLU activations).

    With the "exp" link on a piecewise-linear head the two agree (the closed form is
    exact there); they part with "softmax", "log_softmax" and smooth heads.

    Example::

        cmp = jaxcam.compare_derivatives(split, x, 282, link="softmax")
        print(cmp.summary())
    """
    x = check_inputs(split, x)
    built = build_grad_cam_pp(
        split, x, target, link=link, derivatives="exact", engine=engine,
        chunk_size=chunk_size, variant=variant, eps=eps)
    program = built.program
    return run(_Compare(program.measure, program.to_map), split, x, built.classes)
