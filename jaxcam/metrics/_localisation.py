"""Localisation against boolean masks of the object: the pointing game, its energy
variant and the relevance rank accuracy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._checks import check_finite_nonneg, is_concrete
from jaxcam._weighting import safe_ratio, upsample
from jaxcam.metrics._faithfulness import pixel_ranks
from jaxcam.metrics._inputs import Array, check_finite_maps, failing_images

def _masks(maps, masks) -> tuple[Array, Array]:
    """maps resized to the masks' (H, W) and the boolean masks (B, H, W); an empty mask
    is an error naming its image."""
    maps, masks = jnp.asarray(maps), jnp.asarray(masks)
    if masks.ndim != 3 or maps.ndim != 3 or masks.shape[0] != maps.shape[0]:
        raise ValueError(f"maps (B, h, w) and masks (B, H, W) must share B, got shapes "
                         f"{maps.shape} and {masks.shape}")
    masks = masks.astype(bool)
    if is_concrete(masks):
        empty = failing_images(masks, where_any=False)
        if empty:
            raise ValueError(f"the masks of images {empty[:8]} are empty: a map "
                             "cannot point at an object that is not there; drop those "
                             "images or give their masks")
    check_finite_maps(maps)
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
    top = pixel_ranks(maps) < size[:, None, None]
    return jnp.sum(top & masks, axis=(1, 2)) / size
