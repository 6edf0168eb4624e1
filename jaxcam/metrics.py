"""Faithfulness and localisation metrics of saliency maps, batched and jit-compiled.

Every metric takes per-image arrays and returns per-image values (B,); averaging is the
caller's (:func:`summary` gives means with bootstrap intervals). The conventions:

* ``predict``: any function ``x (B, H, W, 3) -> scores (B, C)``, e.g. class
  probabilities; :func:`predictor` builds one from a split or a model.
* ``maps``: (B, h, w) in [0, 1] (``jaxcam.weighting.normalize``), resized bilinearly with
  half-pixel centres to the input's (H, W) when their size differs.
* ``classes``: (B,) integer classes whose score is followed.

The definitions (and where the peers differ) are in the README's "Scoring maps" section.
Faithfulness:

* :func:`average_drop`, :func:`increase_in_confidence`, :func:`confidence_change`: the
  score of the input multiplied by the map, against the input's (Chattopadhyay et al.).
* :func:`deletion`, :func:`insertion` (RISE, Petsiuk et al.): pixels removed from, or
  restored to, the input in descending order of the map; the area under the score's curve.
  Every step of every image is a row of batched forwards, ``chunk_size`` steps at a time.
* :func:`road`, :func:`road_combined` (Rong et al.): pixels removed by percentile of the
  map and filled by linear imputation (:func:`linear_imputation`, conjugate gradients on
  the stencil), so the removal itself leaks no shape.

:func:`sanity_check` is Adebayo et al.'s model-parameter randomisation test.

Localisation, against (B, H, W) boolean masks of the object:

* :func:`pointing_game` (Zhang et al.), :func:`energy_pointing_game` (Score-CAM's),
  :func:`relevance_rank_accuracy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam import _imputation as IM
from jaxcam._checks import (check_choice, check_finite_nonneg, check_positive_int,
                            is_concrete)
from jaxcam._chunking import chunked_map
from jaxcam.targets._links import check_link, link_names
from jaxcam.methods._registry import method_info
from jaxcam._weighting import safe_ratio, upsample

Array = jax.Array
Predict = Callable[[Array], Array]
# The links of jaxcam.LINKS that give the score's value (every one but "exp").
LINKS = link_names(value=True)

__all__ = ["LINKS", "ORDERS", "ROAD_PERCENTILES", "average_drop", "blurred",
           "confidence_change", "curve_counts", "deletion", "energy_pointing_game",
           "increase_in_confidence", "insertion", "linear_imputation", "pointing_game",
           "forward_order", "predictor", "relevance_rank_accuracy", "road", "road_combined",
           "SanityCheck", "sanity_check", "spearman", "summary", "trapezoid_auc"]


def predictor(model, link: str = "softmax") -> Predict:
    """``x -> link(logits)`` (B, C) for a split (``jaxcam.models.load``) or any callable
    ``x -> logits``.

    Args:
      model: a :class:`jaxcam.Split` (its full forward pass) or a function of x.
      link: "softmax" (probabilities, the metrics' usual score), or another link of
        ``LINKS`` ("logit", "log_softmax", "rest"): the links of :data:`jaxcam.LINKS` that
        give the score's value.
    """
    vector = check_link(link, value=True, what="a metric").vector
    forward = model.logits if hasattr(model, "logits") and hasattr(model, "features") \
        else model
    if not callable(forward):
        raise TypeError(f"predictor needs a jaxcam.Split or a function x -> logits, got "
                        f"{type(model).__name__}")
    return lambda x: vector(forward(x))


# --- inputs: checked once, concretely when they are concrete


def _images(flags, *, where_any: bool) -> list[int]:
    """The images (first axis) of concrete booleans (B, ...) with a True entry
    (``where_any``) or with none."""
    has = np.asarray(flags).reshape(len(flags), -1).any(-1)
    return np.nonzero(has if where_any else ~has)[0].tolist()


def _check_finite_maps(maps: Array) -> None:
    """A concrete map with NaN or inf is an error naming its images."""
    if is_concrete(maps):
        bad = _images(~np.isfinite(np.asarray(maps)), where_any=True)
        if bad:
            raise ValueError(f"maps of images {bad[:8]} are not finite (NaN or inf)")


def _inputs(x, maps, classes) -> tuple[Array, Array, Array]:
    """x (B, H, W, C) float, maps (B, H, W) in [0, 1] at the input's size, classes (B,)."""
    x = jnp.asarray(x)
    maps = jnp.asarray(maps)
    classes = jnp.asarray(classes)
    if x.ndim != 4:
        raise ValueError(f"x must be images (B, H, W, C), got shape {x.shape}")
    if maps.ndim != 3 or maps.shape[0] != x.shape[0]:
        raise ValueError(f"maps must be (B, h, w) with B = {x.shape[0]} as x, got shape "
                         f"{maps.shape}")
    if classes.shape != (x.shape[0],) or not jnp.issubdtype(classes.dtype, jnp.integer):
        raise ValueError(f"classes must be {x.shape[0]} integers (B,), got "
                         f"{classes.dtype} of shape {classes.shape}")
    _check_finite_maps(maps)
    if is_concrete(maps):
        values = np.asarray(maps)
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(f"maps must lie in [0, 1], got [{values.min():.4g}, "
                             f"{values.max():.4g}]: scale them with "
                             "jaxcam.weighting.normalize")
    maps = upsample(maps.astype(x.dtype), x.shape[1:3])
    return x, maps, classes


def _score(predict: Predict, x: Array, classes: Array) -> Array:
    scores = predict(x)
    if scores.ndim != 2 or scores.shape[0] != x.shape[0]:
        raise ValueError(f"predict must return scores (B, C) for B = {x.shape[0]} images, "
                         f"got shape {scores.shape}")
    return jnp.take_along_axis(scores, classes[:, None], axis=1)[:, 0]


# --- the input multiplied by its map


def _with_map(predict: Predict, x, maps, classes) -> tuple[Array, Array]:
    """(Y, O): the class scores of x and of x * map."""
    x, maps, classes = _inputs(x, maps, classes)
    return _score(predict, x, classes), _score(predict, x * maps[..., None], classes)


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


# --- deletion and insertion


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


def _points_per_forward(chunk_size: int | None, batch: int) -> int:
    """Curve points per forward: ``chunk_size``, or enough for about
    :data:`IMAGES_PER_FORWARD` images per forward (a CPU runs small batches of a
    network far below its best rate)."""
    if chunk_size is None:
        return max(1, IMAGES_PER_FORWARD // max(batch, 1))
    return check_positive_int("chunk_size", chunk_size)


def _ranks(maps: Array) -> Array:
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
    x, maps, classes = _inputs(x, maps, classes)
    steps = check_positive_int("steps", steps)
    chunk = _points_per_forward(chunk_size, x.shape[0])
    if substrate is None:
        substrate = blurred(x) if insert else jnp.zeros_like(x)
    substrate = jnp.broadcast_to(jnp.asarray(substrate, x.dtype), x.shape)
    pixels = x.shape[1] * x.shape[2]
    counts = curve_counts(pixels, steps)
    ranks = _ranks(maps)[..., None]                                     # (B, H, W, 1)
    start, end = (substrate, x) if insert else (x, substrate)

    def scores(k):                         # k (chunk,) pixel counts -> (chunk, B)
        chosen = ranks[None] < k[:, None, None, None, None]             # top-k pixels
        images = jnp.where(chosen, end[None], start[None])
        flat = images.reshape(-1, *x.shape[1:])
        return _score(predict, flat, jnp.tile(classes, k.shape[0])).reshape(k.shape[0], -1)

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


# --- ROAD: remove and debias


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
        none = _images(known, where_any=False)
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
    x, maps, classes = _inputs(x, maps, classes)
    chunk = _points_per_forward(chunk_size, x.shape[0])
    percentiles = tuple(float(p) for p in percentiles)
    if not percentiles or not all(0 < p < 100 for p in percentiles):
        raise ValueError(f"percentiles must lie in (0, 100), got {percentiles}")
    before = _score(predict, x, classes)

    keys = jax.random.split(jax.random.key(0) if key is None else key, len(percentiles))

    def at(p, k):                                  # one percentile -> (B,) changes
        known = _road_known(maps, p, order)
        filled = IM.linear_imputation(x, known, tol=tol).images
        if noise > 0:
            jitter = noise * jax.random.normal(k, x.shape, x.dtype)
            filled = jnp.where(known[..., None], filled, filled + jitter)
        return _score(predict, filled, classes) - before

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


# --- localisation


def _masks(maps, masks) -> tuple[Array, Array]:
    """maps resized to the masks' (H, W) and the boolean masks (B, H, W); an empty mask
    is an error naming its image."""
    maps, masks = jnp.asarray(maps), jnp.asarray(masks)
    if masks.ndim != 3 or maps.ndim != 3 or masks.shape[0] != maps.shape[0]:
        raise ValueError(f"maps (B, h, w) and masks (B, H, W) must share B, got shapes "
                         f"{maps.shape} and {masks.shape}")
    masks = masks.astype(bool)
    if is_concrete(masks):
        empty = _images(masks, where_any=False)
        if empty:
            raise ValueError(f"the masks of images {empty[:8]} are empty: a map "
                             "cannot point at an object that is not there; drop those "
                             "images or give their masks")
    _check_finite_maps(maps)
    return upsample(maps.astype(jnp.float32) if not jnp.issubdtype(
        maps.dtype, jnp.floating) else maps, masks.shape[1:]), masks


def _dilated(masks: Array, radius: float) -> Array:
    """Every pixel within Euclidean distance ``radius`` of the mask."""
    r = int(math.floor(radius))
    offsets = np.arange(-r, r + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2
    grown = jax.lax.conv_general_dilated(
        masks[..., None].astype(jnp.float32), jnp.asarray(disk, jnp.float32)[..., None, None],
        (1, 1), [(r, r)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return grown[..., 0] > 0.5


def pointing_game(maps, masks, *, tolerance: float = 0.0) -> Array:
    """1 where a maximum of the map (every tied maximum counts) lies in the mask, or
    within ``tolerance`` pixels of it (Euclidean; the paper uses 15), else 0 (float)."""
    tolerance = check_finite_nonneg("tolerance", tolerance)
    maps, masks = _masks(maps, masks)
    target = _dilated(masks, tolerance) if tolerance > 0 else masks
    top = maps == jnp.max(maps, axis=(1, 2), keepdims=True)
    return jnp.any(top & target, axis=(1, 2)).astype(maps.dtype)


def energy_pointing_game(maps, masks) -> Array:
    """sum(map inside the mask) / sum(map) per image (0 for an all-zero map)."""
    maps, masks = _masks(maps, masks)
    total = jnp.sum(maps, axis=(1, 2))
    inside = jnp.sum(jnp.where(masks, maps, 0.0), axis=(1, 2))
    return safe_ratio(inside, jnp.where(total > 0, total, 0.0))


def relevance_rank_accuracy(maps, masks) -> Array:
    """The share of the map's top-|mask| pixels (stable descending order) inside the
    mask, per image."""
    maps, masks = _masks(maps, masks)
    size = jnp.sum(masks, axis=(1, 2))
    top = _ranks(maps) < size[:, None, None]
    return jnp.sum(top & masks, axis=(1, 2)) / size


# --- sanity check: model-parameter randomisation


class SanityCheck(NamedTuple):
    """Spearman rank correlations of a method's maps with the trained model's, as the
    model's parameter groups are re-initialised from the output down.

    Attributes:
      layers: the parameter groups, in the order they were re-initialised.
      spearman: (L, B) per layer and image (0 where either map is constant).
      order: "cascading" (every group above too) or "independent" (that group alone).
    """

    layers: tuple[str, ...]
    spearman: np.ndarray
    order: str

    def rows(self) -> list[dict]:
        """One dict per layer: its name, the mean correlation and the per-image ones."""
        return [{"layer": name, "spearman": float(np.mean(r)), "per_image": r.tolist()}
                for name, r in zip(self.layers, self.spearman)]


def forward_order(split, x) -> list[str]:
    """The split's parameter groups (``variables["params"]`` keys) in the order the
    forward pass first uses them, read from its jaxpr."""
    params = split.variables["params"]
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    group = [str(getattr(path[0], "key", path[0])) for path, _ in leaves]
    jaxpr = jax.make_jaxpr(lambda p: split.replace(
        variables={**split.variables, "params": p}).logits(x))(params).jaxpr
    first = {id(v): len(jaxpr.eqns) for v in jaxpr.invars}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if first.get(id(v), -1) > i:
                first[id(v)] = i
    start: dict[str, int] = {}
    for name, v in zip(group, jaxpr.invars):
        start[name] = min(start.get(name, len(jaxpr.eqns)), first[id(v)])
    return sorted(start, key=start.get)


def _reinitialised(tree, key):
    """Every leaf redrawn as normal noise with that leaf's own mean and standard deviation
    (the scale the network was trained at, none of its structure)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    new = [jnp.mean(v) + jnp.std(v) * jax.random.normal(k, v.shape, v.dtype)
           for v, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, new)


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n of v's entries along the last axis, ties sharing their mean rank."""
    out = np.empty(v.shape, np.float64)
    for idx in np.ndindex(v.shape[:-1]):
        row = v[idx]
        order = np.argsort(row, kind="stable")
        _, inverse, counts = np.unique(row[order], return_inverse=True, return_counts=True)
        mean_rank = np.cumsum(counts) - (counts - 1) / 2
        out[idx + (order,)] = mean_rank[inverse]
    return out


def spearman(a, b) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps (B, h, w): the Pearson correlation
    of their average ranks; 0 where either map is constant."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"spearman compares maps of one shape, got {np.shape(a)} and "
                         f"{np.shape(b)}")
    ra = _average_ranks(np.asarray(a, np.float64).reshape(len(a), -1))
    rb = _average_ranks(np.asarray(b, np.float64).reshape(len(b), -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), 0.0)


def sanity_check(method, split, x, classes, *, order: str = "cascading", key=None,
                 layers=None) -> SanityCheck:
    """Adebayo et al.'s model-parameter randomisation test of a method.

    The split's parameter groups are re-initialised from the output down (each leaf
    redrawn as normal noise with its own mean and standard deviation; batch statistics
    kept), the maps recomputed for the same classes, and each compared with the trained
    model's by Spearman rank correlation. A method that explains the model decorrelates;
    one that ignores it (an edge detector) does not.

    Args:
      method: ``f(split, x, classes) -> maps`` (a jaxcam method) or a registered name.
      split: the trained model, split at the layer the method explains.
      order: "cascading" (group k and every group above it) or "independent" (group k
        alone).
      key: ``jax.random.key`` for the re-initialisation (default key 42, as Quantus).
      layers: the groups to re-initialise, output side first (default: every group of
        ``variables["params"]`` in reverse :func:`forward_order`).
    """
    check_choice("order", order, ("cascading", "independent"))
    if isinstance(method, str):
        method = method_info(method).function
    if not callable(method):
        raise TypeError(f"method must be a function (split, x, classes) -> maps or a "
                        f"registered name, got {type(method).__name__}")
    x, classes = jnp.asarray(x), jnp.asarray(classes)
    params = split.variables["params"]
    layers = tuple(forward_order(split, x)[::-1] if layers is None else layers)
    unknown = [name for name in layers if name not in params]
    if unknown:
        raise ValueError(f"unknown parameter groups {unknown}; the split has "
                         f"{list(params)}")
    key = jax.random.key(42) if key is None else key
    trained = np.asarray(method(split, x, classes))
    current, rows = dict(params), []
    for name, k in zip(layers, jax.random.split(key, len(layers))):
        source = current if order == "cascading" else dict(params)
        source[name] = _reinitialised(params[name], k)
        if order == "cascading":
            current = source
        changed = split.replace(variables={**split.variables, "params": source})
        rows.append(spearman(trained, method(changed, x, classes)))
    return SanityCheck(layers, np.stack(rows), order)


# --- averages


def summary(values, *, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of per-image values with a percentile bootstrap interval.

    Returns:
      ``dict(mean, low, high, n, level)`` as Python floats (NaN-free: non-finite values
      are an error naming them).
    """
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("summary of no values")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"values {np.nonzero(~np.isfinite(v))[0][:8].tolist()} are not "
                         "finite")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    resamples = check_positive_int("resamples", resamples)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (resamples, v.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"mean": float(v.mean()), "low": float(low), "high": float(high),
            "n": int(v.size), "level": level}
