"""The protocol of a target and the checks every target's ``prepare`` shares."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._checks import check_class_range, is_concrete

Array = jax.Array


class Target:
    """The protocol of a target; subclasses are ``@struct.dataclass`` pytrees.

    ``__call__(outputs) -> Array (B,)``: the explained score of each example,
    differentiable in the outputs (any pytree).

    ``prepare(outputs) -> Target``: given the outputs' shapes (a pytree of
    ``jax.ShapeDtypeStruct``, or of arrays), a checked copy whose every leaf has the
    leading batch axis B, in its final dtype. Raises ValueError or TypeError naming
    the problem, the expected shape and the fix. Works under a caller's ``jit`` (then
    only the shapes are checked). The default returns the target unchanged.

    Per-example arrays are pytree leaves (traced: a new value never recompiles), the
    configuration is static (``struct.field(pytree_node=False)``).
    """

    def __call__(self, outputs) -> Array:
        raise NotImplementedError(f"{type(self).__name__} must define __call__(outputs)")

    def prepare(self, outputs) -> Target:
        return self


# --- helpers

def _describe(tree) -> str:
    """The kind and shapes of (a part of) the outputs, for messages."""
    if isinstance(tree, Mapping):
        return f"a dict with keys {', '.join(map(repr, tree))}"
    if isinstance(tree, (tuple, list)):
        return f"a {type(tree).__name__} of {len(tree)} outputs"
    shape = getattr(tree, "shape", None)
    if shape is not None:
        return f"shape {tuple(shape)} ({getattr(tree, 'dtype', '?')})"
    return type(tree).__name__


def _select(outputs, output):
    """The output a target reads: the outputs themselves (None), a dict key (str), or a
    tuple or list item (int). Works on arrays and on ``ShapeDtypeStruct`` alike."""
    if output is None:
        return outputs
    if isinstance(output, str):
        if not isinstance(outputs, Mapping):
            raise ValueError(f"output={output!r} selects a dict key, but the head returns "
                             f"{_describe(outputs)}; use output=None (or an int index for a "
                             "tuple of outputs)")
        if output not in outputs:
            raise ValueError(f"the head's outputs have no key {output!r}; available keys: "
                             f"{', '.join(map(repr, outputs))}. Pass output= one of them")
        return outputs[output]
    if isinstance(output, int) and not isinstance(output, bool):
        if not isinstance(outputs, (tuple, list)):
            raise ValueError(f"output={output} selects an item of a tuple of outputs, but "
                             f"the head returns {_describe(outputs)}; use output=None (or a "
                             "str key for a dict)")
        if not -len(outputs) <= output < len(outputs):
            raise ValueError(f"output index {output} is out of range: the head returns "
                             f"{len(outputs)} outputs; use an index in [0, "
                             f"{len(outputs) - 1}]")
        return outputs[output]
    raise TypeError(f"output must be None, a str (a dict key) or an int (a tuple index); "
                    f"got {output!r} ({type(output).__name__})")


def _array(value):
    """A jax array (or tracer) as it is, anything else as a NumPy array."""
    return value if isinstance(value, jax.Array) else np.asarray(value)


def _hint(s) -> str:
    """How to reach the right output when the head returns a container."""
    if isinstance(s, Mapping):
        return ": select the right output with output='key'"
    if isinstance(s, (tuple, list)):
        return ": select the right output with output=index"
    return ""


def _float_output(s, ndim: int, what: str, expected: str, fix: str) -> tuple:
    """``s`` must be a float array of rank ``ndim``; returns its shape."""
    shape = getattr(s, "shape", None)
    if shape is None or len(shape) != ndim:
        raise ValueError(f"{what} needs {expected}; the head returns {_describe(s)}"
                         f"{fix or _hint(s)}")
    if not jnp.issubdtype(s.dtype, jnp.floating):
        raise TypeError(f"{what} needs float {expected}; the head returns {_describe(s)}: "
                        "return float scores from the head")
    return tuple(shape)


def _ints(value, shape: tuple, batch: int, what: str, n: int | None = None,
          n_text: str = "") -> Array:
    """Integers of shape (), ``shape`` or (batch, *shape), range-checked against [0, n)
    when concrete (BEFORE the int32 cast, which would wrap 2**32 + 1 to 1), broadcast to
    (batch, *shape) int32."""
    if isinstance(value, int) and not isinstance(value, bool):
        if n is not None:
            check_class_range(value, n, what, n_text)
        return jnp.full((batch, *shape), value, jnp.int32)
    arr = _array(value)
    if arr.dtype == bool or not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"{what} must be ints (one, or one per image); got "
                        f"{'an array of dtype ' + str(arr.dtype) if arr.ndim else repr(value)}")
    full = (batch, *shape)
    if tuple(arr.shape) not in {(), tuple(shape), full}:
        raise ValueError(f"{what} has shape {tuple(arr.shape)}; expected "
                         + " or ".join(str(s) for s in dict.fromkeys([(), tuple(shape), full]))
                         + " (one for every image, or one per image)")
    if n is not None:
        check_class_range(arr, n, what, n_text)
    return jnp.broadcast_to(jnp.asarray(arr, jnp.int32), full)


def _batched(value, shape: tuple, batch: int, dtype, what: str, expected: str,
             fix: str = "", scalar: bool = False) -> Array:
    """``value`` of ``shape`` or (batch, *shape) (or () with ``scalar``), numbers (bool
    allowed), broadcast to (batch, *shape) in ``dtype``."""
    arr = _array(value)
    if not (arr.dtype == bool or jnp.issubdtype(arr.dtype, jnp.number)):
        raise TypeError(f"{what} must be numbers; got an array of dtype {arr.dtype}")
    full = (batch, *shape)
    allowed = {tuple(shape), full} | ({()} if scalar else set())
    if tuple(arr.shape) not in allowed:
        raise ValueError(f"{what} has shape {tuple(arr.shape)}; expected {expected}{fix}")
    _finite(arr, what)
    if dtype is bool:
        arr = arr != 0 if arr.dtype != bool else arr
    return jnp.broadcast_to(jnp.asarray(arr, dtype), full)


def _finite(arr, what: str) -> None:
    """Refuses NaN and Inf in a concrete float array (they would silently zero the map)."""
    if not is_concrete(arr) or not jnp.issubdtype(arr.dtype, jnp.inexact):
        return
    values = np.asarray(arr)
    bad = ~np.isfinite(values)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} holds {values[where]} at index {where}: a target's arrays "
                         "must be finite numbers (replace NaN and Inf, e.g. with "
                         "np.nan_to_num, or mark boxes invalid with valid=)")


def _leaf(value):
    """A constructor's argument as one pytree leaf: a list or tuple of numbers becomes one
    NumPy array (as a list, each number would be a leaf of its own, and the pytree
    structure would depend on the length). Python ints stay as they are (range-checked
    at any size by ``prepare``)."""
    if value is None or isinstance(value, (int, float, jax.Array, np.ndarray, np.generic)):
        return value
    return np.asarray(value)


def _per_example(value, shape: tuple, dtype=None) -> Array:
    """In ``__call__``: a leaf broadcast to its batched shape (a no-op once prepared)."""
    arr = jnp.asarray(value, dtype)
    return jnp.broadcast_to(arr, shape) if arr.shape != shape else arr
