"""Chunked evaluation: many items (directions, classes, noisy copies, masks) at bounded memory.

Every method that evaluates a function over many items goes through these two functions:
the exact engines (one item per activation or class), the noise-smoothing combinator (one
item per noisy copy) and the perturbation methods (one item per mask). Items are handled
``chunk`` at a time: ``vmap``-ed inside a chunk, chunks one after another under
``lax.map`` / ``lax.scan``, so memory is that of one chunk whatever the item count. With a
``mesh``, the items of each chunk are split across its devices (data parallel along the
mesh's one axis); the results are the same as on one device up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcam._checks import check_positive_int
from jaxcam.splitting._devices import AXIS

Array = jax.Array
# the default chunk of each chunked axis that has a fixed one: the one place for them
# ("samples" has none: near-equal chunks of at most 8 per device)
DEFAULT_CHUNKS = {"directions": 256, "masks": 16, "channels": 32}


def per_axis(chunk_size, axes: tuple[str, ...]) -> dict[str, int | None]:
    """A method's ``chunk_size`` option, per chunked axis: None (every axis its default),
    an int (every axis that many items at a time) or a dict naming some of ``axes``.

    Raises:
      TypeError: not None, a positive integer or a dict.
      ValueError: a size below 1, or an axis the method does not have.
    """
    if chunk_size is None:
        return dict.fromkeys(axes)
    if isinstance(chunk_size, dict):
        unknown = sorted(set(chunk_size) - set(axes))
        if unknown:
            raise ValueError(f"chunk_size names the axis {unknown[0]!r}, which this method "
                             f"does not chunk; its axes are {', '.join(axes)}")
        return {axis: None if chunk_size.get(axis) is None else
                check_positive_int(f"chunk_size[{axis!r}]", chunk_size[axis]) for axis in axes}
    return dict.fromkeys(axes, check_positive_int("chunk_size", chunk_size))


def chunk_size(n: int, chunk: int | None = None, devices: int = 1, *, most: int = 8) -> int:
    """Items per chunk for ``n`` items split across ``devices`` devices: ``chunk``
    (default: near-equal chunks of at most ``most`` per device) capped at ``n``, rounded up
    to a multiple of the device count."""
    per_device = -(-n // devices)
    if chunk is None:
        chunk = -(-per_device // -(-per_device // most))   # near-equal, fewest padded
    else:
        chunk = min(-(-chunk // devices), per_device)
    return devices * max(1, chunk)


def _shard(tree, mesh: Mesh | None):
    """Splits the leading (item) axis of every leaf across the mesh's devices."""
    if mesh is None:
        return tree
    spec = NamedSharding(mesh, PartitionSpec(AXIS))
    return jax.tree_util.tree_map(lambda v: jax.lax.with_sharding_constraint(v, spec), tree)


def _steps(items, n: int, chunk: int):
    """(steps, chunk, ...) views of the items padded to whole chunks, and the valid mask.

    ``items`` is a pytree whose leaves have the leading length n (padded by repeating the
    last item, so the padding is a valid input), or None for the indices 0..n-1 (padded
    with indices >= n, which the function must tolerate)."""
    count = math.ceil(n / chunk)
    total = count * chunk
    index = jnp.arange(total)
    if items is None:
        items = index
    else:
        clipped = jnp.minimum(index, n - 1)
        items = jax.tree_util.tree_map(lambda v: jnp.take(v, clipped, axis=0), items)
    items = jax.tree_util.tree_map(lambda v: v.reshape(count, chunk, *v.shape[1:]), items)
    return items, (index < n).reshape(count, chunk)


def _item_count(items, n: int | None) -> int:
    if items is None:
        if n is None:
            raise ValueError("give the items or their count n")
        return n
    lengths = {v.shape[0] for v in jax.tree_util.tree_leaves(items)}
    if len(lengths) != 1:
        raise ValueError(f"every leaf of the items must have the same leading length, got "
                         f"{sorted(lengths)}")
    return lengths.pop()


def chunked_map(f: Callable[[Any], Any], items: Any = None, *, n: int | None = None,
                chunk: int, mesh: Mesh | None = None) -> Any:
    """``f`` over every item, ``chunk`` items at a time: (n, ...) outputs from
    (chunk, ...) ones.

    Args:
      f: a function of a chunk of items (a pytree with leading axis ``chunk``; the
        indices ``(chunk,)`` when ``items`` is None) returning a pytree with leading
        axis ``chunk``.
      items: a pytree with leading axis n, or None for the indices ``range(n)``. The last
        chunk is padded: with copies of the last item, or with indices >= n.
      n: the item count when ``items`` is None.
      chunk: items per step; memory is that of one step.
      mesh: split each chunk's items across the mesh's devices (``chunk`` must be a
        multiple of the device count: :func:`chunk_size`).

    Example::

        squares = chunked_map(lambda i: i**2, n=10, chunk=4)   # 3 steps, 2 padded items
    """
    n = _item_count(items, n)
    chunk = max(1, min(chunk, n)) if mesh is None else chunk
    steps, _ = _steps(items, n, chunk)
    out = jax.lax.map(lambda step: _shard(f(_shard(step, mesh)), mesh), steps)
    return jax.tree_util.tree_map(lambda v: v.reshape(-1, *v.shape[2:])[:n], out)


def chunked_sum(f: Callable[[Any], Any], items: Any = None, *, n: int | None = None,
                chunk: int, mesh: Mesh | None = None, log_weights: bool = False) -> Any:
    """sum_i f(item_i), ``chunk`` items at a time (a ``lax.scan``); padded items count 0.

    With ``log_weights``, ``f`` returns ``(values, log_w)`` with ``log_w`` of shape
    (chunk, *batch) for values of shape (chunk, *batch, ...), and the result is
    ``(sum_i exp(log_w_i - top) values_i, top)`` with ``top = max_i log_w_i`` per batch
    element: a weighted sum with weights of any magnitude (``exp(S)`` of logits in the
    hundreds), rescaled as the maximum grows, never overflowing.

    Args: as :func:`chunked_map`.
    """
    n = _item_count(items, n)
    chunk = max(1, min(chunk, n)) if mesh is None else chunk
    steps, valid = _steps(items, n, chunk)
    first = jax.tree_util.tree_map(lambda v: v[0], steps)
    shapes = jax.eval_shape(f, first)

    def drop(v, ok):  # padded items contribute exactly 0 (where, not a product: no NaN)
        return jnp.where(ok.reshape(ok.shape + (1,) * (v.ndim - 1)), v, 0)

    if not log_weights:
        def step(total, chunk_items):
            part, ok = chunk_items
            values = _shard(f(_shard(part, mesh)), mesh)
            summed = jax.tree_util.tree_map(lambda v: jnp.sum(drop(v, ok), axis=0), values)
            return jax.tree_util.tree_map(jnp.add, total, summed), None

        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape[1:], s.dtype), shapes)
        total, _ = jax.lax.scan(step, zeros, (steps, valid))
        return total

    value_shapes, log_shape = shapes

    def weighted(total, chunk_items):
        (acc, top), (part, ok) = total, chunk_items
        values, log_w = _shard(f(_shard(part, mesh)), mesh)
        log_w = jnp.where(ok.reshape(ok.shape + (1,) * (log_w.ndim - 1)), log_w, -jnp.inf)
        new_top = jnp.maximum(top, jnp.max(log_w, axis=0))
        safe = jnp.where(jnp.isfinite(new_top), new_top, 0.0)
        w, rescale = jnp.exp(log_w - safe[None]), jnp.exp(top - safe)

        def add(old, v):
            expand = (...,) + (None,) * (v.ndim - w.ndim)
            return old * rescale[expand] + jnp.sum(drop(v * w[expand], ok), axis=0)

        return (jax.tree_util.tree_map(add, acc, values), new_top), None

    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape[1:], s.dtype), value_shapes)
    top = jnp.full(log_shape.shape[1:], -jnp.inf, log_shape.dtype)
    (total, top), _ = jax.lax.scan(weighted, (zeros, top), (steps, valid))
    return total, top
