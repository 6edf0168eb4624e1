"""Every registered method on the shapes networks: localisation and faithfulness on
held-out single-object, multi-instance and multi-class images, with runtime per image.

The maps are each method's for the labelled class at the networks' default layer
(``act5``). Perturbation methods (hundreds to thousands of forwards per image) are scored
on the first :data:`PERTURBATION_IMAGES` images of each split, the others on all.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from jaxcam import batch, models
from jaxcam.datasets import shapes

from benchmarks.groundtruth import method_specs
from benchmarks.study import scoring

NETWORKS = ("shapes-relu", "shapes-smooth")
PERTURBATION_IMAGES = 4
HELD_OUT = 10**6
BATCH = 16


def method_maps(split, spec, x, labels) -> tuple[np.ndarray, float]:
    """The maps (N, H, W) and the steady-state seconds per image (the first batch, which
    compiles, is left out when there are several)."""
    key = jax.random.key(0)
    size = min(BATCH, max(1, len(x) // 2))
    maps, seconds = [], []
    for start in range(0, len(x), size):
        t0 = time.perf_counter()
        _, _, m = batch.explain_step((split,), x[start:start + size],
                                     labels[start:start + size], key, specs=(spec,))
        maps.append(np.asarray(jax.block_until_ready(m)[:, 0, 0, 0]))
        seconds.append((time.perf_counter() - t0) / len(maps[-1]))
    return np.concatenate(maps), float(np.median(seconds[1:] or seconds))


def score_method(split, spec, x, labels, masks, boxes, *, batch: int = 32,
                 **options) -> tuple[list[dict], float]:
    """One method's maps of ``x`` for ``labels``, scored by every metric (``options`` go
    to :func:`scoring.faithfulness`) ``batch`` images at a time: ``(per-image scores,
    steady-state seconds per image of the maps)``."""
    maps, seconds = method_maps(split, spec, x, labels)
    scores = []
    for start in range(0, len(x), batch):
        sl = slice(start, start + batch)
        scores += scoring.as_floats(scoring.faithfulness(
            split, x[sl], jnp.asarray(maps[sl]), labels[sl], localise=True, masks=masks[sl],
            boxes=boxes[sl], **options))
    return scores, seconds


def score_unit(records: scoring.Records, unit: str, split, spec, x, labels, masks, boxes, *,
               perturbation_images: int, fields: dict, per_image=None, tag: str = "methods",
               progress=print, **options) -> None:
    """Scores one unit (a method on a group of images) unless the records have it, and
    appends its per-image records: ``fields``, ``per_image(i)``, the scores and the
    seconds per image. Perturbation methods run on the first ``perturbation_images``."""
    if unit in records.done:
        return
    n = (min(len(x), perturbation_images)
         if jaxcam.method_info(spec.name).kind == "perturbation" else len(x))
    t0 = time.perf_counter()
    scores, seconds = score_method(split, spec, x[:n], labels[:n], masks[:n], boxes[:n],
                                   **options)
    records.write(unit, ({**fields, "method": spec.label, "index": i,
                          **(per_image(i) if per_image else {}),
                          "seconds_per_image": seconds, **s} for i, s in enumerate(scores)),
                  seconds=time.perf_counter() - t0)
    if progress:
        progress(f"{tag} {unit}: {n} images, {1000 * seconds:.2f} ms/image")


def run(records: scoring.Records, *, images: int, trained: dict, methods: str | None = None,
        progress=print) -> None:
    """Scores every (network, split, method) unit the records lack."""
    specs = method_specs(methods)
    for name in NETWORKS:
        split = models.load(name, weights=str(trained[name].path))
        size = trained[name].config.size
        for split_name in shapes.SPLITS:
            data = shapes.generate(images, split=split_name, size=size, seed=0, start=HELD_OUT)
            x_all = models.preprocess_batch(data.images)
            labels_all = jnp.asarray(data.labels)
            boxes_all = scoring.target_boxes(data)
            for spec in specs:
                score_unit(records, f"{name}/{split_name}/{spec.label}", split, spec, x_all,
                           labels_all, data.target_masks, boxes_all,
                           perturbation_images=PERTURBATION_IMAGES,
                           fields={"network": name, "split": split_name}, progress=progress)
