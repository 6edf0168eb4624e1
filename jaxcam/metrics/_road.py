"""ROAD (Rong et al. 2022): pixels removed by percentile of the map and filled by linear
imputation (:mod:`jaxcam.metrics._imputation`), so the removal leaks no shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._checks import check_choice, check_finite_nonneg, check_positive_int, is_concrete
from jaxcam._chunking import chunked_map
from jaxcam.metrics import _imputation as IM
from jaxcam.metrics._faithfulness import points_per_forward
from jaxcam.metrics._inputs import Array, Predict, checked_inputs, class_score, failing_images

ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


ORDERS = ("morf", "lerf")


def linear_imputation(x, known, *, tol: float = 1e-6, maxiter: int | None = None):
    """ROAD's linear imputation of x (B, H, W, C) where ``known`` (B, H, W) is False:
    each removed pixel the weighted mean of its in-image neighbours (1/6 sides, 1/12
    diagonals), solved by conjugate gradients on the stencil to relative residual ``tol``
    (default 20 (H + W) iterations at most).

    Returns:
      ``(images, residual)``: the imputed images and each (image, channel) system's
      relative residual.
    """
    x, known = jnp.asarray(x), jnp.asarray(known).astype(bool)
    if known.shape != x.shape[:3]:
        raise ValueError(f"known must be (B, H, W) = {x.shape[:3]}, got {known.shape}")
    if is_concrete(known):
        none = failing_images(known, where_any=False)
        if none:
            raise ValueError(f"images {none[:8]} have no known pixel: linear "
                             "imputation has nothing to fill them from")
    return IM.linear_imputation(x, known, tol=check_finite_nonneg("tol", tol),
                                maxiter=None if maxiter is None
                                else check_positive_int("maxiter", maxiter))


def _road_known(maps: Array, percentile: float, order: str) -> Array:
    """The pixels ROAD keeps at one percentile (pytorch-grad-cam's rule): MoRF keeps
    map < percentile(map, p), the least relevant p %; LeRF the same on 1 - map."""
    ranked = maps if order == "morf" else 1.0 - maps
    flat = ranked.reshape(ranked.shape[0], -1)
    threshold = jnp.percentile(flat, percentile, axis=1, method="linear")
    return ranked < threshold[:, None, None]


def road(predict: Predict, x, maps, classes, *, percentiles=ROAD_PERCENTILES,
         order: str = "morf", noise: float = 0.0, key=None, tol: float = 1e-6,
         chunk_size: int | None = None, curve: bool = False):
    """ROAD (Rong et al. 2022): the change of the class score when pixels are removed and
    filled by linear imputation, averaged over ``percentiles``.

    At percentile p, ``order="morf"`` (most relevant first) keeps the pixels whose map
    is below the p-th percentile of the map and imputes the rest; ``"lerf"`` keeps those
    of 1 - map below its p-th percentile. The value is p_c(imputed) - p_c(x), as
    pytorch-grad-cam's ``ROADMostRelevantFirst`` / ``ROADLeastRelevantFirst`` return it
    (more negative under MoRF is more faithful). ``noise`` > 0 adds ``noise`` times
    standard normal noise, drawn from ``key``, to the imputed pixels (the peer's default
    is 0.01, unseeded).

    Returns:
      (B,) means over the percentiles, or (mean, values (B, P)) with ``curve``.
    """
    check_choice("order", order, ORDERS)
    noise = check_finite_nonneg("noise", noise)
    if noise > 0 and key is None:
        raise ValueError("road(noise > 0) needs a key (jax.random.key(seed)): the "
                         "imputation noise is drawn from it, so runs are reproducible")
    x, maps, classes = checked_inputs(x, maps, classes)
    chunk = points_per_forward(chunk_size, x.shape[0])
    percentiles = tuple(float(p) for p in percentiles)
    if not percentiles or not all(0 < p < 100 for p in percentiles):
        raise ValueError(f"percentiles must lie in (0, 100), got {percentiles}")
    before = class_score(predict, x, classes)

    keys = jax.random.split(jax.random.key(0) if key is None else key, len(percentiles))

    def at(p, k):                                  # one percentile -> (B,) changes
        known = _road_known(maps, p, order)
        filled = IM.linear_imputation(x, known, tol=tol).images
        if noise > 0:
            jitter = noise * jax.random.normal(k, x.shape, x.dtype)
            filled = jnp.where(known[..., None], filled, filled + jitter)
        return class_score(predict, filled, classes) - before

    items = (jnp.asarray(percentiles, x.dtype), keys)
    values = chunked_map(lambda item: jax.vmap(at)(*item), items, chunk=chunk).T  # (B, P)
    mean = jnp.mean(values, axis=1)
    return (mean, values) if curve else mean


def road_combined(predict: Predict, x, maps, classes, *, percentiles=ROAD_PERCENTILES,
                  noise: float = 0.0, key=None, tol: float = 1e-6,
                  chunk_size: int | None = None) -> Array:
    """(LeRF - MoRF) / 2 averaged over the percentiles (pytorch-grad-cam's
    ``ROADCombined``); higher is more faithful."""
    keys = (None, None) if key is None else tuple(jax.random.split(key))
    options = dict(percentiles=percentiles, noise=noise, tol=tol, chunk_size=chunk_size)
    lerf = road(predict, x, maps, classes, order="lerf", key=keys[0], **options)
    morf = road(predict, x, maps, classes, order="morf", key=keys[1], **options)
    return (lerf - morf) / 2
