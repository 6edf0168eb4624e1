"""Faithfulness by the score of perturbed inputs: the input multiplied by its map
(average drop, increase in confidence, confidence change), and pixels deleted or inserted
in the map's order (RISE's deletion and insertion, batched forwards in chunks)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._checks import check_finite_nonneg, check_positive_int
from jaxcam._chunking import chunked_map
from jaxcam._weighting import safe_ratio
from jaxcam.metrics._inputs import Array, Predict, checked_inputs, class_score

def _with_map(predict: Predict, x, maps, classes) -> tuple[Array, Array]:
    """(Y, O): the class scores of x and of x * map."""
    x, maps, classes = checked_inputs(x, maps, classes)
    return class_score(predict, x, classes), class_score(predict, x * maps[..., None], classes)


def average_drop(predict: Predict, x, maps, classes, *, eps: float = 0.0) -> Array:
    """max(0, Y - O) / (Y + eps) per image, Y = p_c(x), O = p_c(x * map) (a fraction,
    not %); 0 where Y + eps = 0. torch-cam's ``ClassificationMetric`` uses eps = 1e-7."""
    eps = check_finite_nonneg("eps", eps)
    y, o = _with_map(predict, x, maps, classes)
    den = y + eps
    return safe_ratio(jnp.maximum(y - o, 0.0), jnp.where(den > 0, den, 0.0))


def increase_in_confidence(predict: Predict, x, maps, classes) -> Array:
    """1 where Y < O (strictly), else 0, per image (float)."""
    y, o = _with_map(predict, x, maps, classes)
    return (y < o).astype(y.dtype)


def confidence_change(predict: Predict, x, maps, classes, *, relative: bool = False) -> Array:
    """O - Y per image (pytorch-grad-cam's ``CamMultImageConfidenceChange``); with
    ``relative``, (O - Y) / Y (0 where Y = 0)."""
    y, o = _with_map(predict, x, maps, classes)
    if not relative:
        return o - y
    return safe_ratio(o - y, y)


def curve_counts(pixels: int, steps: int) -> np.ndarray:
    """The pixel counts of a deletion / insertion curve: 0, s, 2s, ..., P with
    s = ceil(P / steps) (the last count clipped to P)."""
    s = math.ceil(pixels / steps)
    return np.minimum(np.arange(math.ceil(pixels / s) + 1) * s, pixels)


def trapezoid_auc(curve: Array, fractions) -> Array:
    """The trapezoid rule over the last axis of ``curve`` at the abscissae ``fractions``."""
    f = jnp.asarray(fractions, curve.dtype)
    widths = (f[1:] - f[:-1]).reshape((1,) * (curve.ndim - 1) + (-1,))
    return jnp.sum((curve[..., 1:] + curve[..., :-1]) * widths, axis=-1) / 2


def blurred(x: Array, *, size: int = 11, sigma: float = 5.0) -> Array:
    """RISE's insertion substrate: a per-channel Gaussian blur (kernel ``size``,
    ``sigma``), zero padded by size // 2 (PyTorch's ``conv2d(padding=5)``)."""
    size = check_positive_int("size", size)
    sigma = check_finite_nonneg("sigma", sigma)
    r = np.arange(size) - size // 2
    g = np.exp(-(r**2) / (2 * sigma**2)) if sigma > 0 else (r == 0).astype(float)
    g = jnp.asarray(g / g.sum(), x.dtype)
    pad = size // 2
    channels = x.shape[-1]
    kernel = jnp.broadcast_to((g[:, None] * g[None, :])[:, :, None, None],
                              (size, size, 1, channels))
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), [(pad, size - 1 - pad)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST)


IMAGES_PER_FORWARD = 32


def points_per_forward(chunk_size: int | None, batch: int) -> int:
    """Curve points per forward: ``chunk_size``, or enough for about
    :data:`IMAGES_PER_FORWARD` images per forward (a CPU runs small batches of a
    network far below its best rate)."""
    if chunk_size is None:
        return max(1, IMAGES_PER_FORWARD // max(batch, 1))
    return check_positive_int("chunk_size", chunk_size)


def pixel_ranks(maps: Array) -> Array:
    """Each pixel's place (B, H, W) in its map's stable descending order: the first of
    equal values (in row-major order) comes first."""
    flat = maps.reshape(maps.shape[0], -1)
    order = jnp.argsort(-flat, axis=-1, stable=True)
    places = jnp.broadcast_to(jnp.arange(flat.shape[1]), flat.shape)
    ranks = jnp.zeros_like(order).at[jnp.arange(flat.shape[0])[:, None], order].set(places)
    return ranks.reshape(maps.shape)


def _area(predict, x, maps, classes, substrate, *, steps, chunk_size, insert, curve):
    """The AUC (B,) of the deletion (or insertion) curve, with the curve and its
    fractions when ``curve``."""
    values, fractions = _curve(predict, x, maps, classes, substrate, steps=steps,
                               chunk_size=chunk_size, insert=insert)
    auc = trapezoid_auc(values, fractions)
    return (auc, values, fractions) if curve else auc


def _curve(predict, x, maps, classes, substrate, *, steps, chunk_size, insert):
    x, maps, classes = checked_inputs(x, maps, classes)
    steps = check_positive_int("steps", steps)
    chunk = points_per_forward(chunk_size, x.shape[0])
    if substrate is None:
        substrate = blurred(x) if insert else jnp.zeros_like(x)
    substrate = jnp.broadcast_to(jnp.asarray(substrate, x.dtype), x.shape)
    pixels = x.shape[1] * x.shape[2]
    counts = curve_counts(pixels, steps)
    ranks = pixel_ranks(maps)[..., None]                               # (B, H, W, 1)
    start, end = (substrate, x) if insert else (x, substrate)

    def scores(k):                         # k (chunk,) pixel counts -> (chunk, B)
        chosen = ranks[None] < k[:, None, None, None, None]             # top-k pixels
        images = jnp.where(chosen, end[None], start[None])
        flat = images.reshape(-1, *x.shape[1:])
        return class_score(predict, flat, jnp.tile(classes, k.shape[0])).reshape(k.shape[0], -1)

    curve = chunked_map(scores, jnp.asarray(counts), chunk=chunk).T      # (B, n)
    return curve, counts / pixels


def deletion(predict: Predict, x, maps, classes, *, steps: int = 20, substrate=None,
             chunk_size: int | None = None, curve: bool = False):
    """Area under the score's curve as the map's top pixels are deleted (lower is more
    faithful).

    Pixels (all channels) are ranked by a stable descending sort of the map; at counts
    0, s, 2s, ..., P (s = ceil(P / steps)) the top-k are replaced by ``substrate``
    (default zeros: the mean grey of normalised inputs). The score at each count, over the
    fraction k / P, is integrated by the trapezoid rule.

    Args:
      steps: the curve's resolution (torch-cam's ``steps``).
      substrate: an array broadcastable to x, or None.
      chunk_size: curve points evaluated together, each a forward of the whole batch;
        memory is chunk_size x B images (default: about 32 images per forward).
      curve: also return the curve (B, n) and its fractions (n,).

    Returns:
      (B,) AUCs, or (auc, curve, fractions) with ``curve``.
    """
    return _area(predict, x, maps, classes, substrate, steps=steps, chunk_size=chunk_size,
                 insert=False, curve=curve)


def insertion(predict: Predict, x, maps, classes, *, steps: int = 20, substrate=None,
              chunk_size: int | None = None, curve: bool = False):
    """Area under the score's curve as the map's top pixels are restored into
    ``substrate`` (default RISE's blur, :func:`blurred`); higher is more faithful. As
    :func:`deletion` otherwise."""
    return _area(predict, x, maps, classes, substrate, steps=steps, chunk_size=chunk_size,
                 insert=True, curve=curve)
