"""Explaining many photos: one compiled program per run, batches split over the devices.

- :func:`explain_step` is the compiled program: the class probabilities, the targets (the
  given class, or each image's top K) and every (layer, method, target) map of a batch,
  in one ``jit``. Its shapes are fixed, so a run compiles once: the last, partial batch is
  padded to the batch size.
- :func:`explain_photos` streams photos through it: a background thread decodes and
  preprocesses the next batches while the devices compute, another writes the overlays
  (on the ORIGINAL photo) and raw maps of the previous one, so memory is bounded by a few
  batches whatever the folder size. It yields one record per photo, in order; a photo
  that cannot be read yields an error record and the run goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam import viz
from jaxcam.splitting._devices import padded_size, shard_batch
from jaxcam._weighting import normalize
from jaxcam.batch._inputs import Loaded, MethodSpec, Photo, load_photos
from jaxcam.methods._registry import method_info

def method_map(spec: MethodSpec, split, x, classes, key):
    info = method_info(spec.name)
    options = dict(spec.options)
    if "key" in info.needs:
        options["key"] = key
    maps = info.function(split, x, classes, **options)
    if info.returns == "input_gradients":            # an image of gradients: its magnitude
        maps = normalize(jnp.abs(maps).sum(-1))
    return maps.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("specs", "top"))
def explain_step(splits: tuple, x, classes, key, *, specs: tuple[MethodSpec, ...],
                 top: int = 1):
    """One batch: ``(probabilities (B, C), targets (B, T), maps (B, L, M, T, H, W))``.

    Args:
      splits: the network split at each of L layers (the same variables).
      x: preprocessed images (B, H, W, C).
      classes: (B,) target classes, or None: each image's ``top`` most probable classes.
      key: the ``jax.random`` key of the methods that draw noise.
      specs: the M methods.
    """
    logits = splits[0].logits(x)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    targets = jax.lax.top_k(probs, top)[1] if classes is None else classes[:, None]
    maps = [[[method_map(spec, split, x, targets[:, t], key) for t in range(targets.shape[1])]
             for spec in specs] for split in splits]
    return probs, targets, jnp.stack([jnp.stack([jnp.stack(m, 1) for m in row], 1)
                                      for row in maps], 1)


def num_classes(split, size: tuple[int, int, int]) -> int:
    """The number of classes of ``split``'s logits for one image of ``size`` (H, W, C)."""
    out = jax.eval_shape(split.logits, jax.ShapeDtypeStruct((1, *size), jnp.float32))
    if not hasattr(out, "shape") or len(out.shape) != 2:
        raise ValueError("the command line explains class logits (B, C); this head returns "
                         f"{jax.tree_util.tree_map(lambda v: v.shape, out)}")
    return int(out.shape[-1])


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What :func:`explain_photos` computes and writes.

    Attributes:
      model: the model's name, for the records.
      splits: the network split at each layer (variables placed on ``mesh``).
      specs: the methods.
      classes: the class to explain in every image, or None for each image's top ``top``.
      top: how many of each image's most probable classes to explain (classes None).
      seed: the seed of the methods that draw noise.
      batch_size: images per compiled call (rounded up to a multiple of the devices).
      mesh: the devices a batch is split over (:func:`jaxcam.data_mesh`), or None.
      out: the output folder.
      formats: which files to write per map: ``("png",)``, ``("npy",)`` or both.
      class_names: names of the classes by index (used when the model has as many
        classes), or None.
    """

    model: str
    splits: tuple
    specs: tuple[MethodSpec, ...]
    classes: int | None = None
    top: int = 1
    seed: int = 0
    batch_size: int = 8
    mesh: object = None
    out: Path = Path("jaxcam-out")
    formats: tuple[str, ...] = ("png",)
    class_names: tuple[str, ...] | None = None


def _name(config: RunConfig, c: int, n: int) -> str:
    names = config.class_names
    return names[c] if names is not None and len(names) == n else ""


def _npy(m: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, m, allow_pickle=False)
    return buffer.getvalue()


def _write(config: RunConfig, items: list[Loaded], probs, targets, maps, t0: float
           ) -> list[dict]:
    """Writes every map of the batch's photos and returns their records."""
    layers = [s.layer for s in config.splits]
    preprocess = config.splits[0].preprocess
    records = []
    for b, item in enumerate(items):
        files, entries = {}, []
        for li, layer in enumerate(layers):
            for mi, spec in enumerate(config.specs):
                for t, c in enumerate(targets[b]):
                    stem = "_".join([item.photo.name] + ([layer] if len(layers) > 1 else [])
                                    + [spec.label, f"class{int(c)}"])
                    entry = {"layer": layer, "method": spec.label, "class": int(c)}
                    m = maps[b, li, mi, t]
                    if "png" in config.formats:
                        path = config.out / f"{stem}.png"
                        files[path] = viz.overlay(item.image, m, preprocess=preprocess)
                        entry["png"] = str(path.resolve())
                    if "npy" in config.formats:
                        path = config.out / f"{stem}.npy"
                        files[path] = _npy(m)
                        entry["npy"] = str(path.resolve())
                    entries.append(entry)
        viz.write_all(files)                          # a photo's files: all or none
        p = probs[b]
        top5 = np.argsort(-p, kind="stable")[:5]
        chosen = [int(c) for c in targets[b]]
        records.append({
            "path": str(item.photo.path.resolve()),
            "model": config.model,
            "layer": ",".join(layers),
            "method": ",".join(s.label for s in config.specs),
            "class": chosen[0], "name": _name(config, chosen[0], p.size),
            "probability": float(p[chosen[0]]),
            "targets": [{"class": c, "name": _name(config, c, p.size), "probability": float(p[c])}
                        for c in chosen],
            "top5": [{"class": int(c), "name": _name(config, int(c), p.size),
                      "probability": float(p[c])} for c in top5],
            "maps": entries,
        })
    seconds = (time.perf_counter() - t0) / max(len(items), 1)
    for record in records:
        record["seconds"] = round(seconds, 6)
    return records


def explain_photos(photos: Sequence[Photo], config: RunConfig) -> Iterator[dict]:
    """Explains ``photos`` in batches; yields one record per photo, in order: the JSONL
    line of a photo explained (its files written), or ``{"path", "error"}``."""
    size = padded_size(min(config.batch_size, max(len(photos), 1)), config.mesh)
    chunks = [photos[i:i + size] for i in range(0, len(photos), size)]
    preprocess = config.splits[0].preprocess
    key = jax.random.key(config.seed)
    given = None if config.classes is None else np.full(size, config.classes, np.int32)
    with ThreadPoolExecutor(1, "jaxcam-read") as reader, \
            ThreadPoolExecutor(1, "jaxcam-write") as writer:
        ahead = [reader.submit(load_photos, chunk, preprocess) for chunk in chunks[:2]]
        pending: Future | None = None
        for i in range(len(chunks)):
            loaded = ahead.pop(0).result()
            if i + 2 < len(chunks):
                ahead.append(reader.submit(load_photos, chunks[i + 2], preprocess))
            t0 = time.perf_counter()
            good = [item for item in loaded if item.error is None]
            arrays = (None, None, None)
            if good:
                x = np.stack([item.x for item in good])
                x = np.concatenate([x, np.repeat(x[:1], size - len(good), 0)])  # pad
                if config.mesh is not None:
                    x = shard_batch(x, config.mesh)
                arrays = explain_step(config.splits, x, given, key, specs=config.specs,
                                      top=config.top)         # dispatched, not awaited
            if pending is not None:                   # the previous batch, written
                yield from pending.result()
            if good:
                arrays = tuple(np.asarray(r)[:len(good)] for r in arrays)
            pending = writer.submit(_batch_records, config, loaded, good, *arrays, t0)
        if pending is not None:
            yield from pending.result()


def _batch_records(config, loaded, good, probs, targets, maps, t0) -> list[dict]:
    written = iter(_write(config, good, probs, targets, maps, t0) if good else [])
    return [{"path": str(item.photo.path.resolve()), "error": item.error}
            if item.error is not None else next(written) for item in loaded]
