"""Embeddings: cosine similarity to a reference embedding."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxcam.targets._base import (Target, _array, _batched, _float_output, _leaf,
                                  _per_example, _select)

Array = jax.Array

COSINE_EPS = 1e-8       # torch.nn.functional.cosine_similarity's default eps


def _norm(v: Array) -> Array:
    """||v|| over the last axis, with gradient 0 (not 0 / 0) at v = 0."""
    sq = jnp.sum(v * v, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


@struct.dataclass
class EmbeddingSimilarity(Target):
    """Cosine similarity of the embeddings (B, D) to a reference (B, D), as
    ``torch.nn.functional.cosine_similarity`` (torch 2.13): each vector is divided by its
    norm clamped to at least eps = 1e-8, then the products summed,
    ``sum((o / max(||o||, eps)) * (r / max(||r||, eps)))``; pytorch-grad-cam's
    SimilarityToConceptTarget. 0 at a zero embedding.

    The gradient is that of this value (below eps the clamped norm is a constant); torch
    instead differentiates the unclamped norm there (its clamp runs under no_grad), which
    differs only for norms below 1e-8.

    Attributes:
      reference: (B, D) float in the outputs' dtype.
      output: static: which output holds the embeddings.
    """

    reference: Array
    output: Any = struct.field(pytree_node=False, default=None)

    def __call__(self, outputs) -> Array:
        e = _select(outputs, self.output)
        r = _per_example(self.reference, e.shape, e.dtype)
        eps = jnp.asarray(COSINE_EPS, e.dtype)
        ne = jnp.maximum(_norm(e), eps)[:, None]
        nr = jnp.maximum(_norm(r), eps)[:, None]
        return jnp.sum((e / ne) * (r / nr), axis=-1)

    def prepare(self, outputs) -> EmbeddingSimilarity:
        e = _select(outputs, self.output)
        batch, d = _float_output(e, 2, "embedding_similarity", "embeddings (B, D)", "")
        ref = _array(self.reference)
        if tuple(ref.shape) not in {(d,), (batch, d)}:
            got = ref.shape[-1] if ref.ndim else "()"
            raise ValueError(f"the reference embedding has shape {tuple(ref.shape)} "
                             f"(dimension {got}), but the head returns embeddings (B, D) = "
                             f"{(batch, d)}: pass a reference of shape ({d},) or "
                             f"{(batch, d)}")
        return self.replace(reference=_batched(ref, (d,), batch, e.dtype,
                                               "the reference embedding", ""))


def embedding_similarity(reference, output=None) -> EmbeddingSimilarity:
    """Cosine similarity of the embeddings to ``reference`` ((D,) for every image, or
    (B, D), one per image)."""
    return EmbeddingSimilarity(_leaf(reference), output)
