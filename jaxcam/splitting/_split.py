"""The split model every CAM method works on: ``features(x) -> A`` and ``head(A) -> outputs``.

The head's outputs may be any pytree (class logits (B, C), per-pixel logits, detector
outputs, embeddings); a target (:mod:`jaxcam.targets`) turns them into the explained score.

Where A is not a cut of the network (a skip connection bypasses the layer, or a token
model's class token is dropped from the map), the head also receives the input x
(:meth:`Split.given`): everything that does not flow through A is then recomputed from x
and held fixed, so the derivatives in A are the ones a PyTorch hook on that layer gives.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TokenGrid:
    """Token sequences (B, N, D) as spatial maps (B, h, w, D), and back.

    The first ``prefix`` tokens (a class token, register tokens) and the last ``suffix``
    ones are dropped from the map; the rest are patch tokens in row-major order over an
    h x w grid (h = w = sqrt of their count unless given), the layout of ViT, DeiT and
    pytorch-grad-cam's ``reshape_transform``. Going back, the dropped tokens are taken
    from the network's own tokens at that layer, so they are held fixed.

    Example: ViT-B/16 at 224 x 224 has 1 + 14 x 14 tokens::

        jaxcam.TokenGrid(prefix=1)          # (B, 197, 768) <-> (B, 14, 14, 768)
    """

    prefix: int = 1
    suffix: int = 0
    height: int | None = None
    width: int | None = None

    def __post_init__(self):
        for name in ("prefix", "suffix"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TokenGrid.{name} must be an int >= 0 (tokens to drop), "
                                 f"got {v!r}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"TokenGrid.{name} must be a positive int or None, got {v!r}")

    @property
    def drops(self) -> bool:
        """Some tokens are not in the map (going back needs the network's own tokens)."""
        return self.prefix + self.suffix > 0

    def grid(self, n_tokens: int) -> tuple[int, int]:
        """(h, w) of the patch tokens among ``n_tokens``; ValueError when they do not fit."""
        n = n_tokens - self.prefix - self.suffix
        h, w = self.height, self.width
        if h is None and w is None:
            h = w = math.isqrt(max(n, 0))
        elif h is None:
            h = n // w
        elif w is None:
            w = n // h
        if n < 1 or h * w != n:
            raise ValueError(
                f"{n_tokens} tokens minus prefix={self.prefix} and suffix={self.suffix} leave "
                f"{n} patch tokens, which do not form a{'' if self.height or self.width else ' square'} "
                f"{h} x {w} grid: set TokenGrid(prefix=..., height=..., width=...) to the "
                "model's class/register tokens and patch grid")
        return h, w

    def to_grid(self, tokens: Array) -> Array:
        """(B, N, D) -> (B, h, w, D)."""
        if tokens.ndim != 3:
            raise ValueError(f"TokenGrid expects tokens (B, N, D); the layer returned shape "
                             f"{tuple(tokens.shape)}")
        h, w = self.grid(tokens.shape[1])
        patches = tokens[:, self.prefix:tokens.shape[1] - self.suffix]
        return patches.reshape(tokens.shape[0], h, w, tokens.shape[2])

    def from_grid(self, grid: Array, tokens: Array | None) -> Array:
        """(B, h, w, D) -> (B, N, D), the dropped tokens taken from ``tokens``."""
        patches = grid.reshape(grid.shape[0], -1, grid.shape[-1])
        if not self.drops:
            return patches
        end = tokens.shape[1] - self.suffix
        return jnp.concatenate([tokens[:, :self.prefix].astype(patches.dtype), patches,
                                tokens[:, end:].astype(patches.dtype)], axis=1)


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
      head: ``head(variables, A) -> outputs``: class logits (B, C), or any pytree of
        arrays with a leading batch axis (explained through a target of
        :mod:`jaxcam.targets` or a callable). With ``head_takes_input``,
        ``head(variables, A, x)``.
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
      head_takes_input: the head also needs the input: ``head(variables, A, x)``, for a
        layer that is not a cut of the network (:func:`jaxcam.split_module`).
      reshape: a :class:`TokenGrid` when ``features`` returns tokens (B, N, D): A is their
        grid (B, h, w, D), and the head receives the tokens again.
      inputs: the input x the head is evaluated at (set by :meth:`given`; None until then).

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
    head_takes_input: bool = struct.field(pytree_node=False, default=False)
    reshape: TokenGrid | None = struct.field(pytree_node=False, default=None)
    inputs: Any = None

    @property
    def needs_input(self) -> bool:
        """The head is evaluated at a given input x (:meth:`given`)."""
        return self.head_takes_input or (self.reshape is not None and self.reshape.drops)

    def given(self, x: Array) -> "Split":
        """The split whose head is evaluated at input ``x`` (what does not flow through A
        is computed from x and held fixed); itself when the head needs no input."""
        return self.replace(inputs=x) if self.needs_input else self

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
        """A = features(variables, x) (its token grid with ``reshape``)."""
        a = self.features(self.variables, x)
        return a if self.reshape is None else self.reshape.to_grid(a)

    def logits_from(self, a: Array) -> Any:
        """The head's outputs at A: head(variables, A) (logits, or any pytree)."""
        if self.needs_input and self.inputs is None:
            raise ValueError("this split's head also needs the input x (head_takes_input, or "
                             "a TokenGrid that drops tokens): use split.given(x).logits_from(a)")
        if self.reshape is not None:
            tokens = self.features(self.variables, self.inputs) if self.reshape.drops else None
            a = self.reshape.from_grid(a, tokens)
        if self.head_takes_input:
            return self.head(self.variables, a, self.inputs)
        return self.head(self.variables, a)

    def logits(self, x: Array) -> Any:
        """The full forward pass, head(features(x))."""
        return self.given(x).logits_from(self.activations(x))


# --- shape checks: what the split's functions return for a given input shape

class SplitShapes(NamedTuple):
    """The shapes (``jax.ShapeDtypeStruct``) a split produces for one input shape."""

    activations: jax.ShapeDtypeStruct   # A (B, h, w, K)
    outputs: Any                        # the head's outputs: logits (B, C), or any pytree


_SHAPES: dict = {}  # (split structure, input shape, what) -> checked shapes
_MAX_CACHED = 256


def _cached(split: Split, x, what: str, compute: Callable[[], Any]):
    """``compute()`` once per (split structure, variable shapes, input shape, ``what``).

    Tracing a zoo network takes a fraction of a second, so the checks that trace it run
    once per structure; a new class or new weights of the same shapes hit the cache.
    """
    leaves, treedef = jax.tree_util.tree_flatten(split.replace(inputs=None))
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


def describe(tree) -> str:
    """The shapes of a pytree of arrays, for error messages."""
    leaves = jax.tree_util.tree_leaves(tree)
    if len(leaves) == 1 and not isinstance(tree, (dict, list, tuple)):
        leaf = leaves[0]
        return (f"shape {tuple(leaf.shape)} ({leaf.dtype})" if hasattr(leaf, "shape")
                else type(leaf).__name__)
    return str(jax.tree_util.tree_map(
        lambda v: f"{tuple(v.shape)} {v.dtype}" if hasattr(v, "shape") else type(v).__name__,
        tree))


def _check_shapes(split: Split, x: jax.ShapeDtypeStruct) -> SplitShapes:
    batch = x.shape[0]
    try:
        tokens = jax.eval_shape(split.features, split.variables, x)
    except Exception as e:  # a user's function: any error is reported with the shapes
        raise _features_error(split, x, e) from e
    if split.reshape is not None:
        try:
            a = jax.eval_shape(split.reshape.to_grid, tokens)
        except ValueError as e:
            raise ValueError(f"split.reshape: {e}") from None
    else:
        a = tokens
    shape = getattr(a, "shape", None)
    if (shape is None or len(shape) != 4 or shape[0] != batch or min(shape) < 1
            or not jnp.issubdtype(a.dtype, jnp.floating)):
        got = f"shape {tuple(shape)} ({a.dtype})" if shape is not None else type(a).__name__
        raise ValueError(
            f"split.features must return activations (B, h, w, K) = ({batch}, h, w, K), a "
            f"non-empty float spatial map; for x of shape {tuple(x.shape)} it returned {got}. "
            "Split the network at a convolutional stage, before global pooling or "
            "flattening (and check that the input is large enough for that stage); for "
            "token models (B, N, D) pass reshape=jaxcam.TokenGrid(...).")
    try:
        outputs = jax.eval_shape(lambda v, a, x: split.replace(variables=v).given(x)
                                 .logits_from(a), split.variables, a, x)
    except Exception as e:  # a user's function: report it with the shapes
        raise ValueError(f"split.head failed on activations of shape {tuple(shape)} "
                         f"({a.dtype}): {_first_line(e)}") from e
    leaves = jax.tree_util.tree_leaves(outputs)
    if (not leaves or not all(getattr(v, "shape", ())[:1] == (batch,) for v in leaves)
            or not any(jnp.issubdtype(v.dtype, jnp.floating) for v in leaves)):
        raise ValueError(
            f"split.head must return class logits (B, C) = ({batch}, C), or a pytree of "
            f"arrays with the batch axis first ({batch}, ...) and at least one float array; "
            f"for activations of shape {tuple(shape)} it returned {describe(outputs)}")
    return SplitShapes(a, outputs)


def split_shapes(split: Split, x) -> SplitShapes:
    """Checks what the split returns for inputs shaped like ``x``, computing nothing.

    ``split.features`` must map x (B, H, W, C) to a spatial map A (B, h, w, K) (tokens
    (B, N, D) with ``reshape``) and ``split.head`` must map A to logits (B, C) or any
    pytree of arrays with the batch axis first. Both are traced with ``jax.eval_shape``
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
    """Checks that ``split.guided`` maps x to the same outputs as the split."""
    outputs = split_shapes(split, x).outputs
    spec = jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)

    def check():
        try:
            out = jax.eval_shape(split.guided, split.variables, spec)
        except Exception as e:  # a user's function: report it with the shapes
            raise ValueError(f"split.guided failed on x of shape {tuple(x.shape)}: "
                             f"{_first_line(e)}") from e
        shapes = lambda t: jax.tree_util.tree_map(lambda v: getattr(v, "shape", None), t)  # noqa: E731
        if (jax.tree_util.tree_structure(out) != jax.tree_util.tree_structure(outputs)
                or shapes(out) != shapes(outputs)):
            raise ValueError(f"split.guided must return the same outputs as "
                             f"head(features(x)), {describe(outputs)}; it returned "
                             f"{describe(out)}")
        return True

    _cached(split, x, "guided", check)


def vmap_examples(fn: Callable[..., Any], split: Split, *args):
    """``jax.vmap`` of ``fn(split_b, *args_b)`` over the batch axis of ``args``, where
    ``split_b`` is the split of example b alone (its bound input x[b:b+1], when the head
    needs one): ``fn`` evaluates ``split_b.logits_from(a[None])`` for one example."""
    if split.inputs is None:
        return jax.vmap(lambda *a: fn(split, *a))(*args)
    one = lambda x, *a: fn(split.replace(inputs=jax.tree_util.tree_map(  # noqa: E731
        lambda v: v[None], x)), *a)
    return jax.vmap(one)(split.inputs, *args)
