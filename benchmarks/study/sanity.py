"""Adebayo et al.'s cascading model-parameter randomisation for every method on
``shapes-relu``: the maps' Spearman correlation with the trained network's as its
parameter groups are re-initialised from the output down (:func:`jaxcam.metrics.sanity_check`).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

import jaxcam
from jaxcam import metrics, models
from jaxcam.datasets import shapes

from benchmarks.study import methods as method_part
from benchmarks.study import scoring

NETWORK = "shapes-relu"
PERTURBATION_IMAGES = 2


def method_function(spec):
    """``f(split, x, classes) -> maps (B, H, W)`` for a registered method with fixed
    options; input-gradient methods give the gradient's magnitude, normalised."""
    info = jaxcam.method_info(spec.name)
    options = dict(spec.options)
    if "key" in info.needs:
        options["key"] = jax.random.key(0)

    def f(split, x, classes):
        maps = info.function(split, x, classes, **options)
        if info.returns == "input_gradients":
            maps = jaxcam.weighting.normalize(jnp.abs(maps).sum(-1))
        return maps

    return f


def run(records: scoring.Records, *, images: int, trained: dict, methods: str | None = None,
        progress=print) -> None:
    """Scores every method unit the records lack."""
    split = models.load(NETWORK, weights=str(trained[NETWORK].path))
    data = shapes.generate(images, size=trained[NETWORK].config.size, seed=0,
                           start=method_part.HELD_OUT)
    x_all, labels_all = models.preprocess_batch(data.images), jnp.asarray(data.labels)
    for spec in method_part.method_specs(methods):
        unit = f"{NETWORK}/{spec.label}"
        if unit in records.done:
            continue
        n = (min(images, PERTURBATION_IMAGES)
             if jaxcam.method_info(spec.name).kind == "perturbation" else images)
        t0 = time.perf_counter()
        check = metrics.sanity_check(method_function(spec), split, x_all[:n], labels_all[:n],
                                     order="cascading")
        records.write(unit, ({"network": NETWORK, "method": spec.label, "layer": row["layer"],
                              "spearman": row["spearman"], "per_image": row["per_image"]}
                             for row in check.rows()), seconds=time.perf_counter() - t0)
        if progress:
            progress(f"sanity {unit}: {n} images, " + ", ".join(
                f"{r['layer']} {r['spearman']:.2f}" for r in check.rows()))
