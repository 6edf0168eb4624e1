"""The split model every CAM method works on: ``features(x) -> A`` and ``head(A) -> logits``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array


@struct.dataclass
class Split:
    """A network cut at a target layer into two pure functions.

    ``variables`` is a pytree (parameters and batch statistics) and is traced: it enters
    ``jax.jit`` as an argument, never as a closed-over constant. Everything else is static
    metadata, so it must be hashable (functions, frozen dataclasses, strings).

    Attributes:
      variables: pytree passed as the first argument of ``features`` and ``head``.
      features: ``features(variables, x) -> A``, x of shape (B, H, W, 3), A of shape
        (B, h, w, K).
      head: ``head(variables, A) -> logits`` of shape (B, C).
      layer: the name of the layer whose output is A.
      preprocess: the model's own ``uint8 image (H, W, 3) -> input (S, S, 3)`` transform
        (a :class:`jaxcam.Preprocess`), or None.
      piecewise_linear_head: True when everything after the split is ReLU/ReLU6,
        max/average pooling, affine or linear, so the head is linear almost everywhere
        and its second and higher derivatives vanish. Leave False when unsure.
      gap_linear_head: True when the head is global average pooling followed by one
        linear layer, the architecture CAM (Zhou et al., 2016) requires.
      guided: ``guided(variables, x) -> logits``, the full forward pass with every ReLU
        replaced by :func:`jaxcam.guided_relu` (needed by guided backpropagation only).

    Example: a user-defined split from any two functions::

        split = jaxcam.Split(variables=params, features=trunk_fn, head=head_fn,
                             layer="block3", piecewise_linear_head=True)
    """

    variables: Any
    features: Callable[[Any, Array], Array] = struct.field(pytree_node=False)
    head: Callable[[Any, Array], Array] = struct.field(pytree_node=False)
    layer: str = struct.field(pytree_node=False, default="")
    preprocess: Callable[..., Any] | None = struct.field(pytree_node=False, default=None)
    piecewise_linear_head: bool = struct.field(pytree_node=False, default=False)
    gap_linear_head: bool = struct.field(pytree_node=False, default=False)
    guided: Callable[[Any, Array], Array] | None = struct.field(pytree_node=False, default=None)

    def astype(self, dtype) -> "Split":
        """The same split with floating-point variables cast to ``dtype`` (e.g. float64
        under ``jax_enable_x64``, for reference-quality derivatives)."""
        cast = lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v  # noqa: E731
        return self.replace(variables=jax.tree_util.tree_map(lambda v: cast(jnp.asarray(v)),
                                                             self.variables))

    def activations(self, x: Array) -> Array:
        """A = features(variables, x)."""
        return self.features(self.variables, x)

    def logits_from(self, a: Array) -> Array:
        """logits = head(variables, A)."""
        return self.head(self.variables, a)

    def logits(self, x: Array) -> Array:
        """The full forward pass, head(features(x))."""
        return self.logits_from(self.activations(x))
