"""The split model every CAM method works on: ``features(x) -> A`` and ``head(A) -> logits``."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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
      cut: ``cut(variables, layer) -> Split``, the same network split at another layer
        (:meth:`at`; the zoo's splits have it), or None.

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
    cut: Callable[[Any, str], "Split"] | None = struct.field(pytree_node=False, default=None)

    def at(self, layer: str) -> "Split":
        """The same network, with the same variables, split at ``layer`` instead.

        Raises:
          ValueError: the split has no ``cut`` (a split built by hand: build the other
            split too and pass it), or the layer is unknown (the zoo names close matches).
        """
        if self.cut is None:
            raise ValueError(
                f"this split (layer {self.layer!r}) cannot be re-cut at layer {layer!r} by "
                "name: it was built by hand without Split(cut=...). Pass the other layers "
                "as jaxcam.Split objects, e.g. layers=[split, split_at_block3]")
        return self.cut(self.variables, layer)

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


# --- shape checks: what the split's functions return for a given input shape

class SplitShapes(NamedTuple):
    """The shapes (``jax.ShapeDtypeStruct``) a split produces for one input shape."""

    activations: jax.ShapeDtypeStruct   # A (B, h, w, K)
    logits: jax.ShapeDtypeStruct        # (B, C)


_SHAPES: dict = {}  # (split structure, input shape, what) -> checked shapes
_MAX_CACHED = 256


def _cached(split: Split, x, what: str, compute: Callable[[], Any]):
    """``compute()`` once per (split structure, variable shapes, input shape, ``what``).

    Tracing a zoo network takes a fraction of a second, so the checks that trace it run
    once per structure; a new class or new weights of the same shapes hit the cache.
    """
    leaves, treedef = jax.tree_util.tree_flatten(split)
    key: Hashable = (treedef, tuple((np.shape(v), str(getattr(v, "dtype", type(v).__name__)))
                                    for v in leaves), tuple(x.shape), str(x.dtype), what)
    if key not in _SHAPES:
        if len(_SHAPES) >= _MAX_CACHED:  # many distinct user splits: keep the cache small
            _SHAPES.clear()
        _SHAPES[key] = compute()
    return _SHAPES[key]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0].rstrip('.') if text else ''}"


def _features_error(split: Split, x: jax.ShapeDtypeStruct, error: Exception) -> ValueError:
    """Why ``split.features`` refused x; names the NHWC layout when a channels-first
    batch is the likely cause (the features accept x transposed to NHWC)."""
    nhwc = (x.shape[0], x.shape[2], x.shape[3], x.shape[1])
    if nhwc != tuple(x.shape):
        try:
            jax.eval_shape(split.features, split.variables, jax.ShapeDtypeStruct(nhwc, x.dtype))
        except Exception:  # transposed, it fails too: the layout is not the cause
            pass
        else:
            return ValueError(
                f"x has shape {tuple(x.shape)}, which looks like NCHW (channels first) with "
                f"{x.shape[1]} channels: split.features expects NHWC images (B, H, W, C). "
                "Transpose to NHWC: x.transpose(0, 2, 3, 1).")
    return ValueError(
        f"split.features failed on x of shape {tuple(x.shape)} ({x.dtype}): "
        f"{_first_line(error)}. x must be a batch of images (B, H, W, C), channels last, "
        "with the size and channel count the network expects.")


def _check_shapes(split: Split, x: jax.ShapeDtypeStruct) -> SplitShapes:
    batch = x.shape[0]
    try:
        a = jax.eval_shape(split.features, split.variables, x)
    except Exception as e:  # a user's function: any error is reported with the shapes
        raise _features_error(split, x, e) from e
    shape = getattr(a, "shape", None)
    if (shape is None or len(shape) != 4 or shape[0] != batch or min(shape) < 1
            or not jnp.issubdtype(a.dtype, jnp.floating)):
        got = f"shape {tuple(shape)} ({a.dtype})" if shape is not None else type(a).__name__
        raise ValueError(
            f"split.features must return activations (B, h, w, K) = ({batch}, h, w, K), a "
            f"non-empty float spatial map; for x of shape {tuple(x.shape)} it returned {got}. "
            "Split the network at a convolutional stage, before global pooling or "
            "flattening (and check that the input is large enough for that stage).")
    try:
        logits = jax.eval_shape(split.head, split.variables, a)
    except Exception as e:  # a user's function: report it with the shapes
        raise ValueError(f"split.head failed on activations of shape {tuple(shape)} "
                         f"({a.dtype}): {_first_line(e)}") from e
    out = getattr(logits, "shape", None)
    if (out is None or len(out) != 2 or out[0] != batch or out[1] < 1
            or not jnp.issubdtype(logits.dtype, jnp.floating)):
        got = f"shape {tuple(out)} ({logits.dtype})" if out is not None else type(logits).__name__
        raise ValueError(f"split.head must return float logits (B, C) = ({batch}, C); for "
                         f"activations of shape {tuple(shape)} it returned {got}")
    return SplitShapes(a, logits)


def split_shapes(split: Split, x) -> SplitShapes:
    """Checks what the split returns for inputs shaped like ``x``, computing nothing.

    ``split.features`` must map x (B, H, W, C) to a spatial map A (B, h, w, K) and
    ``split.head`` must map A to logits (B, C). Both are traced with ``jax.eval_shape``
    (cached per split structure and input shape), so a mistake in a user's functions is
    reported here with the shapes involved, before anything is compiled. Shapes are static,
    so the check also runs under a caller's ``jit`` or ``vmap``.

    Raises:
      ValueError: naming ``split.features`` or ``split.head``, what it must return and
        what it returned (or the error it raised); a channels-first x is named as such.
    """
    spec = jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
    return _cached(split, x, "shapes", lambda: _check_shapes(split, spec))


def check_guided(split: Split, x) -> None:
    """Checks that ``split.guided`` maps x to the same logits (B, C) as the split."""
    logits = split_shapes(split, x).logits
    spec = jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)

    def check():
        try:
            out = jax.eval_shape(split.guided, split.variables, spec)
        except Exception as e:  # a user's function: report it with the shapes
            raise ValueError(f"split.guided failed on x of shape {tuple(x.shape)}: "
                             f"{_first_line(e)}") from e
        if getattr(out, "shape", None) != logits.shape:
            raise ValueError(f"split.guided must return the logits (B, C) = {logits.shape}, "
                             f"like head(features(x)); it returned "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        return True

    _cached(split, x, "guided", check)
