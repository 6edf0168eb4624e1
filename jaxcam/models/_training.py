"""Training the shapes networks with optax, and their weights in the jaxcam cache.

The network trained is the zoo's shapes CNN with batch normalisation after every
convolution (statistics of the batch while training, running averages after); once
trained, each normalisation is folded into its convolution (``W gamma / sqrt(var + eps)``
and ``beta - mean gamma / sqrt(var + eps)``), so the network explained is five plain
convolutions with bias, whose outputs equal the normalised network's to float rounding.

Training is seeded and deterministic: the images are :func:`jaxcam.datasets.shapes.generate`
of fixed index ranges (half single-object, half multi-instance), the order a seeded
permutation, the initialisation ``jax.random.key(seed)``. AdamW with a warm-up and cosine
decay; one ``jit``-compiled step per batch. The held-out images are indices from
:data:`HELD_OUT_START` on, never trained on.

A trained network is stored as a msgpack entry of the jaxcam cache
(:func:`jaxcam.models.cache_dir`) that records the configuration (with the data's
:data:`~jaxcam.datasets.shapes.VERSION`) and the measured accuracy; an entry is used only
when its configuration is the one asked for, so changing either retrains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pretrained_ports
from jaxcam.datasets import shapes as shapes_data
from jaxcam.models._cache import cache_dir
from jaxcam.models._layers import StagedNet, activate, symmetric
from jaxcam.models.shapes_cnn import (BLOCKS, SHAPES_MODELS, SHAPES_PREPROCESS, WIDTH,
                                      shapes_stages)
from pretrained_ports import CheckpointError, ConversionError

HELD_OUT_START = 10**6          # held-out images are indices from here on
BN_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a shapes network is trained (recorded with its weights).

    Attributes:
      size: image side in pixels.
      images: training images (half single-object, half multi-instance).
      steps: optimiser steps of ``batch`` images.
      batch: images per step.
      learning_rate: AdamW's peak rate (linear warm-up over ``warmup`` of the steps,
        cosine decay to 0).
      weight_decay: AdamW's decoupled weight decay.
      held_out: held-out images per split for the accuracy.
      seed: initialisation and data order; the images are the dataset's seed-0 images.
    """

    size: int = 64
    images: int = 16000
    steps: int = 1000
    batch: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05
    held_out: int = 1000
    seed: int = 0

    def record(self, activation: str) -> str:
        """The configuration as one JSON string, with what else decides the weights."""
        return json.dumps({**dataclasses.asdict(self), "activation": activation,
                           "data_version": shapes_data.VERSION, "width": WIDTH,
                           "blocks": BLOCKS}, sort_keys=True)


QUICK = TrainConfig(size=32, images=3000, steps=500, held_out=300)


class _TrainNet(nn.Module):
    """The shapes CNN with batch normalisation, parameter names those of the zoo's stages
    (``conv1`` .. ``conv5``, ``fc``) plus ``bn1`` .. ``bn5``."""

    activation: str
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool):
        for i, (multiple, pool) in enumerate(BLOCKS, start=1):
            x = nn.Conv(multiple * WIDTH, (3, 3), padding=symmetric(1), use_bias=False,
                        name=f"conv{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=BN_EPS,
                             name=f"bn{i}")(x)
            x = activate(x, self.activation)
            if pool:
                x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.Dense(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))


def fold_batch_norm(variables: dict[str, Any]) -> dict[str, Any]:
    """The zoo network's variables (convolutions with bias) from the normalised network's."""
    params, stats = variables["params"], variables["batch_stats"]
    folded = {"fc": {k: np.asarray(v, np.float32) for k, v in params["fc"].items()}}
    for i in range(1, len(BLOCKS) + 1):
        bn, moments = params[f"bn{i}"], stats[f"bn{i}"]
        scale = np.asarray(bn["scale"], np.float64) / np.sqrt(
            np.asarray(moments["var"], np.float64) + BN_EPS)
        kernel = np.asarray(params[f"conv{i}"]["kernel"], np.float64) * scale
        bias = np.asarray(bn["bias"], np.float64) - np.asarray(moments["mean"], np.float64) * scale
        folded[f"conv{i}"] = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
    return {"params": folded}


def preprocess_batch(images) -> jax.Array:
    """uint8 (B, S, S, 3) images -> the networks' float32 input, normalised as
    :data:`~jaxcam.models.shapes_cnn.SHAPES_PREPROCESS` (images already at their size)."""
    mean = jnp.asarray(SHAPES_PREPROCESS.mean, jnp.float32).reshape(1, 1, 1, 3)
    std = jnp.asarray(SHAPES_PREPROCESS.std, jnp.float32).reshape(1, 1, 1, 3)
    return (jnp.asarray(images).astype(jnp.float32) - mean) / std


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained shapes network in the cache.

    Attributes:
      name: ``shapes-relu`` or ``shapes-smooth``.
      path: its cache entry.
      config: how it was trained.
      accuracy: held-out accuracy per split (``single``, ``multi_instance``).
      seconds: training time (generation included), as measured when it was trained.
      trained: whether this call trained it (False: read from the cache).
    """

    name: str
    path: Path
    config: TrainConfig
    accuracy: dict[str, float]
    seconds: float
    trained: bool


def _data(config: TrainConfig, split: str, n: int, start: int, progress) -> list:
    """Images start .. start + n - 1 of ``split``, generated 500 at a time."""
    parts = []
    for first in range(0, n, 500):
        part = shapes_data.generate(min(500, n - first), split=split, size=config.size,
                                    seed=0, start=start + first)
        parts.append(part)
        progress(len(part))
    return parts


def _concat(parts):
    return (np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))


def train(name: str, config: TrainConfig = TrainConfig(), *,
          progress: Callable[[str, int, int], None] | None = None) -> tuple[dict, dict, float]:
    """Trains shapes network ``name`` as ``config`` says.

    Args:
      name: ``shapes-relu`` or ``shapes-smooth``.
      config: the training configuration.
      progress: called as ``progress(phase, done, total)`` while generating ("data") and
        training ("train").

    Returns:
      (the zoo variables with the normalisation folded, the held-out accuracy per split,
      the seconds it took).
    """
    activation = SHAPES_MODELS[name]
    report = progress or (lambda phase, done, total: None)
    start = time.perf_counter()
    half = config.images // 2
    total = 2 * half + 2 * config.held_out
    done = [0]

    def generated(n):
        done[0] += n
        report("data", done[0], total)

    train_parts = (_data(config, "single", half, 0, generated)
                   + _data(config, "multi_instance", half, 0, generated))
    held_out = {split: _concat(_data(config, split, config.held_out, HELD_OUT_START, generated))
                for split in ("single", "multi_instance")}
    images, labels = _concat(train_parts)

    net = _TrainNet(activation, len(shapes_data.CLASSES))
    variables = net.init(jax.random.key(config.seed),
                         jnp.zeros((1, config.size, config.size, 3)), False)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, max(1, int(config.warmup * config.steps)), config.steps)
    optimiser = optax.adamw(schedule, weight_decay=config.weight_decay)
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = optimiser.init(params)

    @jax.jit
    def step(params, stats, opt_state, x, y):
        def loss(params):
            logits, updated = net.apply({"params": params, "batch_stats": stats},
                                        preprocess_batch(x), True, mutable=["batch_stats"])
            return (optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
                    updated["batch_stats"])

        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, value

    order = _order(len(labels), config)
    for i in range(config.steps):
        idx = order[i]
        params, stats, opt_state, _ = step(params, stats, opt_state, images[idx], labels[idx])
        if (i + 1) % 10 == 0 or i + 1 == config.steps:
            report("train", i + 1, config.steps)
    folded = fold_batch_norm({"params": params, "batch_stats": stats})
    accuracy = {split: _accuracy(name, folded, *data) for split, data in held_out.items()}
    return folded, accuracy, time.perf_counter() - start


def _order(n: int, config: TrainConfig) -> np.ndarray:
    """(steps, batch) indices: seeded permutations of the n images, epoch after epoch."""
    rng = np.random.default_rng([config.seed, 1])
    need = config.steps * config.batch
    epochs = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])
    return epochs[:need].reshape(config.steps, config.batch)


def network() -> StagedNet:
    """The zoo's shapes network (either activation: it is chosen when applied)."""
    return StagedNet(shapes_stages(len(shapes_data.CLASSES)))


def _accuracy(name: str, variables, images: np.ndarray, labels: np.ndarray) -> float:
    net = network()
    forward = jax.jit(lambda v, x: net.apply(v, preprocess_batch(x), 0, None,
                                             SHAPES_MODELS[name]).argmax(-1))
    predicted = np.concatenate([np.asarray(forward(variables, images[i:i + 250]))
                                for i in range(0, len(images), 250)])
    return float(np.mean(predicted == labels))


# --------------------------------------------------------------------------------------
# The cache.


def _shapes() -> dict[str, Any]:
    return jax.eval_shape(network().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def entry_path(name: str, config: TrainConfig) -> Path:
    """The cache entry of network ``name`` trained as ``config`` says."""
    digest = hashlib.sha256(config.record(SHAPES_MODELS[name]).encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}.msgpack"


def _check_name(name: str) -> None:
    if name not in SHAPES_MODELS:
        raise ValueError(f"unknown shapes network {name!r}; expected one of "
                         f"{', '.join(SHAPES_MODELS)}")


def cached(name: str, config: TrainConfig = TrainConfig()) -> Trained | None:
    """Network ``name`` trained as ``config`` says, if the cache holds it (checked), else
    None."""
    _check_name(name)
    path = entry_path(name, config)
    record = {"config": config.record(SHAPES_MODELS[name])}
    try:
        pretrained_ports.load_variables(path, _shapes(), model=name, metadata=record)
        fields = pretrained_ports.read_metadata(path, _shapes(), model=name)
        accuracy = json.loads(fields["accuracy"])
        seconds = float(fields["seconds"])
    except (FileNotFoundError, CheckpointError, ConversionError, KeyError, ValueError):
        return None
    return Trained(name, path, config, accuracy, seconds, trained=False)


def train_shapes(name: str, config: TrainConfig | None = None, *, quick: bool = False,
                 force: bool = False,
                 progress: Callable[[str, int, int], None] | None = None) -> Trained:
    """Network ``name`` trained as ``config`` says: from the cache, or trained and cached.

    Args:
      name: ``"shapes-relu"`` (ReLU) or ``"shapes-smooth"`` (GELU).
      config: the training configuration; default :class:`TrainConfig` (``quick``:
        :data:`QUICK`, a few hundred steps on 32 px images, for tests).
      force: train even when the cache holds the network.
      progress: called as ``progress(phase, done, total)`` while generating images
        (``"data"``) and training (``"train"``).

    Returns:
      A :class:`Trained`: the cache entry (load it with
      ``jaxcam.models.load(name, weights=trained.path)``), the held-out accuracy and the
      training time.

    Raises:
      ValueError: an unknown name, or both ``config`` and ``quick``.
      OSError: the cache cannot be written (nothing is left behind).
    """
    _check_name(name)
    if config is not None and quick:
        raise ValueError("pass either config= or quick=True, not both")
    config = QUICK if quick else (config or TrainConfig())
    if not force and (hit := cached(name, config)) is not None:
        return hit
    variables, accuracy, seconds = train(name, config, progress=progress)
    path = entry_path(name, config)
    pretrained_ports.save_variables(path, variables, _shapes(), model=name, metadata={
        "config": config.record(SHAPES_MODELS[name]), "accuracy": json.dumps(accuracy),
        "seconds": f"{seconds:.1f}"})
    return Trained(name, path, config, accuracy, seconds, trained=True)


def cached_path(name: str) -> str:
    """The cache entry of network ``name`` trained by default; a clear error if there is
    none yet."""
    hit = cached(name)
    if hit is None:
        raise FileNotFoundError(
            f"{name} is not trained on this machine yet: run `jaxcam train-shapes` (a few "
            f"minutes on a CPU; both networks) or call jaxcam.models.train_shapes({name!r}); "
            f"the weights are then cached in {cache_dir()}")
    return str(hit.path)
