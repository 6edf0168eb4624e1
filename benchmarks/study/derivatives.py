"""The study's core: exact versus closed-form higher-order terms in Grad-CAM++ and Smooth
Grad-CAM++, per link and per head type, on held-out shapes images.

Both networks are split at ``conv5``, their last convolution, so the head is its
activation, global average pooling and the linear classifier: piecewise linear in
``shapes-relu`` (where the closed form is exact for the ``exp`` link), smooth (GELU) in
``shapes-smooth``. For every image, link and method the exact and the closed-form maps are
scored by every metric of :mod:`benchmarks.study.scoring`, with the channel weights' sign
changes and order flips (Grad-CAM++), so that the report can pair them.

The exact derivatives of a smooth head cost a third-order series along every activation
(8 x 8 x 128 of them per image): Grad-CAM++ runs on :data:`IMAGES` held-out images by
default, Smooth Grad-CAM++ (that cost again per noisy copy) on the first
:data:`SMOOTH_IMAGES` with :data:`N_SAMPLES` copies.
"""

from __future__ import annotations

import functools
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from jaxcam import metrics, models
from jaxcam.datasets import shapes

from benchmarks.study import scoring, stats

LINKS = ("exp", "softmax", "log_softmax", "logit")
LAYER = "conv5"
NETWORKS = ("shapes-relu", "shapes-smooth")
HELD_OUT = 10**6
BATCH = 32
SMOOTH_IMAGES = 16
N_SAMPLES = 10


@functools.partial(jax.jit, static_argnames=("link",))
def _grad_cam_pp(split, x, classes, *, link):
    cmp = jaxcam.compare_derivatives(split, x, classes, link=link)
    return {"maps_exact": cmp.maps_exact, "maps_approx": cmp.maps_approx,
            "weights_exact": cmp.weights_exact, "weights_approx": cmp.weights_approx}


@functools.partial(jax.jit, static_argnames=("link",))
def _smooth(split, x, classes, key, *, link):
    maps = {f"maps_{mode}": jaxcam.smooth_grad_cam_pp(split, x, classes, key=key, link=link,
                                                      n_samples=N_SAMPLES, derivatives=mode)
            for mode in ("exact", "approx")}
    return maps


def _scores(split, x, maps, classes, masks, boxes):
    return scoring.as_floats(scoring.faithfulness(split, x, maps, classes, localise=True,
                                                  masks=masks, boxes=boxes))


def run(records: scoring.Records, *, images: int, trained: dict, progress=print) -> None:
    """Scores every (network, method, link) unit the records lack.

    With the logit link on the piecewise-linear head the exact D2 and D3 vanish and the
    exact maps are zero (jaxcam warns; here that is a result, recorded per image as
    ``exact_zero``)."""
    for name in NETWORKS:
        config = trained[name].config
        split = models.load(name, layer=LAYER, weights=str(trained[name].path))
        data = shapes.generate(images, split="single", size=config.size, seed=0,
                               start=HELD_OUT)
        x_all = models.preprocess_batch(data.images)
        labels = jnp.asarray(data.labels)
        probs = np.asarray(jax.nn.softmax(split.logits(x_all), axis=-1))
        p_true = probs[np.arange(images), data.labels]
        boxes_all = scoring.target_boxes(data)
        for method in ("grad_cam_pp", "smooth_grad_cam_pp"):
            for link in LINKS:
                unit = f"{name}/{method}/{link}"
                if unit in records.done:
                    continue
                out, t0 = [], time.perf_counter()
                n = images if method == "grad_cam_pp" else min(images, SMOOTH_IMAGES)
                for start in range(0, n, BATCH):
                    sl = slice(start, min(start + BATCH, n))
                    x, c = x_all[sl], labels[sl]
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", "exact Grad-CAM.. with link='logit'")
                        if method == "grad_cam_pp":
                            r = _grad_cam_pp(split, x, c, link=link)
                            changes = stats.weight_changes(r["weights_exact"],
                                                           r["weights_approx"])
                        else:
                            r = _smooth(split, x, c, jax.random.key(start), link=link)
                            changes = None
                    zero = {mode: np.asarray(r[f"maps_{mode}"]).reshape(len(c), -1).max(1) <= 0
                            for mode in ("exact", "approx")}
                    masks, boxes = data.target_masks[sl], boxes_all[sl]
                    exact = _scores(split, x, r["maps_exact"], c, masks, boxes)
                    approx = _scores(split, x, r["maps_approx"], c, masks, boxes)
                    rho = metrics.spearman(np.asarray(r["maps_exact"]),
                                           np.asarray(r["maps_approx"]))
                    for i in range(len(exact)):
                        j = start + i
                        record = {"network": name, "method": method, "link": link,
                                  "layer": LAYER, "n_samples": N_SAMPLES,
                                  "index": j, "probability": float(p_true[j]),
                                  "predicted": int(probs[j].argmax()) == int(data.labels[j]),
                                  "spearman": float(rho[i]), "exact": exact[i],
                                  "approx": approx[i], "exact_zero": bool(zero["exact"][i]),
                                  "approx_zero": bool(zero["approx"][i])}
                        if changes is not None:
                            record.update({k: float(v[i]) for k, v in changes.items()})
                        out.append(record)
                records.write(unit, out, seconds=time.perf_counter() - t0)
                if progress:
                    progress(f"derivatives {unit}: {len(out)} images, "
                             f"{time.perf_counter() - t0:.0f} s")
