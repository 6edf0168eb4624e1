"""What every metric takes: the score to follow (:func:`predictor`), and the images, maps
and classes, checked once (concretely when they are concrete)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._checks import is_concrete
from jaxcam._weighting import upsample
from jaxcam.targets._links import check_link, link_names

Array = jax.Array


Predict = Callable[[Array], Array]


# The links of jaxcam.LINKS that give the score's value (every one but "exp").
LINKS = link_names(value=True)


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


def failing_images(flags, *, where_any: bool) -> list[int]:
    """The images (first axis) of concrete booleans (B, ...) with a True entry
    (``where_any``) or with none."""
    has = np.asarray(flags).reshape(len(flags), -1).any(-1)
    return np.nonzero(has if where_any else ~has)[0].tolist()


def check_finite_maps(maps: Array) -> None:
    """A concrete map with NaN or inf is an error naming its images."""
    if is_concrete(maps):
        bad = failing_images(~np.isfinite(np.asarray(maps)), where_any=True)
        if bad:
            raise ValueError(f"maps of images {bad[:8]} are not finite (NaN or inf)")


def checked_inputs(x, maps, classes) -> tuple[Array, Array, Array]:
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
    check_finite_maps(maps)
    if is_concrete(maps):
        values = np.asarray(maps)
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(f"maps must lie in [0, 1], got [{values.min():.4g}, "
                             f"{values.max():.4g}]: scale them with "
                             "jaxcam.weighting.normalize")
    maps = upsample(maps.astype(x.dtype), x.shape[1:3])
    return x, maps, classes


def class_score(predict: Predict, x: Array, classes: Array) -> Array:
    scores = predict(x)
    if scores.ndim != 2 or scores.shape[0] != x.shape[0]:
        raise ValueError(f"predict must return scores (B, C) for B = {x.shape[0]} images, "
                         f"got shape {scores.shape}")
    return jnp.take_along_axis(scores, classes[:, None], axis=1)[:, 0]
