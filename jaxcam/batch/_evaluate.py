"""Scoring the maps of folders of photos: what ``jaxcam evaluate`` runs.

Each batch of photos is one compiled call (:func:`evaluate_step`): the forward pass, each
method's maps for the target classes, and every faithfulness metric of every map, whose
perturbed copies run as batched forwards inside the same program. Records are JSON lines,
one per photo, and :func:`summarise` turns them into means with bootstrap intervals.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam import metrics as M
from jaxcam.batch._explain import method_map
from jaxcam.batch._inputs import MethodSpec, Photo, load_photos
from jaxcam._checks import check_choice
from jaxcam.splitting._devices import padded_size, shard_batch

_SCORES = {    # name -> (predict, x, maps, classes, steps) -> (B,)
    "average_drop": lambda f, x, m, c, steps: M.average_drop(f, x, m, c),
    "increase_in_confidence": lambda f, x, m, c, steps: M.increase_in_confidence(f, x, m, c),
    "confidence_change": lambda f, x, m, c, steps: M.confidence_change(f, x, m, c),
    "deletion": lambda f, x, m, c, steps: M.deletion(f, x, m, c, steps=steps),
    "insertion": lambda f, x, m, c, steps: M.insertion(f, x, m, c, steps=steps),
    "road_morf": lambda f, x, m, c, steps: M.road(f, x, m, c, order="morf"),
    "road_lerf": lambda f, x, m, c, steps: M.road(f, x, m, c, order="lerf"),
    "road_combined": lambda f, x, m, c, steps: M.road_combined(f, x, m, c),
}


METRICS = tuple(_SCORES)


DEFAULT_METRICS = ("average_drop", "increase_in_confidence", "deletion", "insertion")


def parse_metrics(text: str) -> tuple[str, ...]:
    """Comma-separated metric names, each one of :data:`METRICS`."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ValueError(f"--metrics needs at least one of {', '.join(METRICS)}")
    for name in names:
        check_choice("metric", name, METRICS)
    return names


@functools.partial(jax.jit, static_argnames=("specs", "metrics", "steps"))
def evaluate_step(split, x, classes, key, *, specs: tuple[MethodSpec, ...],
                  metrics: tuple[str, ...], steps: int = 20):
    """One batch: ``(probabilities (B, C), targets (B,), scores (B, M, K))`` for the M
    methods and K metrics; ``classes`` (B,) or None for each image's top class."""
    probs = jax.nn.softmax(split.logits(x).astype(jnp.float32), axis=-1)
    targets = jnp.argmax(probs, axis=-1) if classes is None else classes
    predict = M.predictor(split)
    scores = []
    for spec in specs:
        maps = jnp.clip(method_map(spec, split, x, targets, key), 0.0, 1.0)
        scores.append(jnp.stack([_SCORES[m](predict, x, maps, targets, steps)
                                 for m in metrics], axis=-1))
    return probs, targets, jnp.stack(scores, axis=1)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What :func:`evaluate_photos` computes: the model's name, its split, the methods,
    the metrics, the class (None: each photo's top class), the seed of noisy methods,
    the deletion/insertion steps, images per compiled call and the device mesh."""

    model: str
    split: object
    specs: tuple[MethodSpec, ...]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    classes: int | None = None
    seed: int = 0
    steps: int = 20
    batch_size: int = 8
    mesh: object = None


def evaluate_photos(photos: Sequence[Photo], config: EvalConfig) -> Iterator[dict]:
    """Scores ``photos`` in batches; yields one record per photo, in order: its metrics
    for every method, or ``{"path", "error"}``."""
    size = padded_size(min(config.batch_size, max(len(photos), 1)), config.mesh)
    key = jax.random.key(config.seed)
    given = None if config.classes is None else np.full(size, config.classes, np.int32)
    for start in range(0, len(photos), size):
        t0 = time.perf_counter()
        loaded = load_photos(photos[start:start + size], config.split.preprocess)
        good = [item for item in loaded if item.error is None]
        if good:
            x = np.stack([item.x for item in good])
            x = np.concatenate([x, np.repeat(x[:1], size - len(good), 0)])
            if config.mesh is not None:
                x = shard_batch(x, config.mesh)
            probs, targets, scores = (np.asarray(a)[:len(good)] for a in evaluate_step(
                config.split, x, given, key, specs=config.specs, metrics=config.metrics,
                steps=config.steps))
            seconds = round((time.perf_counter() - t0) / len(good), 6)
        records = iter([{
            "path": str(item.photo.path.resolve()), "model": config.model,
            "layer": config.split.layer, "class": int(targets[b]),
            "probability": float(probs[b, targets[b]]),
            "metrics": {spec.label: {m: float(scores[b, i, k])
                                     for k, m in enumerate(config.metrics)}
                        for i, spec in enumerate(config.specs)},
            "seconds": seconds} for b, item in enumerate(good)])
        for item in loaded:
            yield ({"path": str(item.photo.path.resolve()), "error": item.error}
                   if item.error is not None else next(records))


def summarise(records: Sequence[dict]) -> dict:
    """``{method: {metric: summary}}`` over the records that have metrics
    (:func:`jaxcam.metrics.summary`: mean, 95 % bootstrap interval, n)."""
    values: dict = {}
    for record in records:
        for method, scores in record.get("metrics", {}).items():
            for metric, v in scores.items():
                values.setdefault(method, {}).setdefault(metric, []).append(v)
    return {method: {metric: M.summary(v) for metric, v in by.items()}
            for method, by in values.items()}


def summary_markdown(summary: dict) -> str:
    """The summary as a Markdown table: one row per method, mean [low, high] per metric."""
    metrics = list(dict.fromkeys(m for by in summary.values() for m in by))
    lines = ["| method | n | " + " | ".join(metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for method, by in summary.items():
        n = max(s["n"] for s in by.values())
        cells = [f"{by[m]['mean']:.4f} [{by[m]['low']:.4f}, {by[m]['high']:.4f}]"
                 if m in by else "" for m in metrics]
        lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
