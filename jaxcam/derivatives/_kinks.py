"""Where a piecewise-linear head is not differentiable: ReLU and max-pool kinks.

At a kink the one-sided derivatives differ and what JAX returns is a convention:

* ``jax.nn.relu`` (and ``relu6``) have derivative 0 at their thresholds; ``jnp.maximum``
  and ``jnp.minimum`` (so ``jnp.clip``) split the derivative half and half between equal
  operands;
* a max-pool window whose maximum is attained more than once (every all-zero window of
  post-ReLU activations) passes the whole derivative to the first tied element in window
  order and none to the others.

:func:`kink_shares` reports how often this happens for a head at given activations, by
evaluating the head's jaxpr and checking the operands of every kink primitive: ``max``,
``min`` (equal operands), ``clamp`` (an operand at a bound), ``reduce_window_max`` /
``reduce_window_min`` (a window's extremum attained more than once) and ``reduce_max`` /
``reduce_min`` (the same along the reduced axes). Other primitives are evaluated as
they are.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

Array = jax.Array


class KinkShares(NamedTuple):
    """Per example (B,).

    Attributes:
      activations: the share of the activations A_i read by a kink primitive exactly at
        its kink (tied for a pooling window's maximum, at a ReLU threshold): their pure
        derivatives are JAX's tie-break, not derivatives.
      head_units: the share of the outputs of the head's kink primitives (every ReLU
        unit, pooled unit, ...) that sit exactly at a kink.
    """

    activations: Array
    head_units: Array


def _tied_window(x: Array, out: Array, params: dict) -> tuple[Array, Array] | None:
    """For a windowed max/min: (windows whose extremum is attained more than once, the
    elements of x that are such a tied extremum). None for base-dilated windows."""
    if any(d != 1 for d in params["base_dilation"]):
        return None
    dims, strides = params["window_dimensions"], params["window_strides"]
    dilation, padding = params["window_dilation"], params["padding"]
    fill = jnp.array(jnp.nan, x.dtype)  # never equal to an extremum
    padded = jax.lax.pad(x, fill, [(lo, hi, 0) for lo, hi in padding])
    hits, count = [], jnp.zeros(out.shape, jnp.int32)
    for offset in itertools.product(*(range(d) for d in dims)):
        start = [o * d for o, d in zip(offset, dilation)]
        limit = [s + (n - 1) * st + 1 for s, n, st in zip(start, out.shape, strides)]
        hit = jax.lax.slice(padded, start, limit, strides) == out
        hits.append((start, limit, hit))
        count = count + hit
    tied = count >= 2
    element = jnp.zeros(padded.shape, bool)
    for start, limit, hit in hits:
        index = tuple(slice(s, e, st) for s, e, st in zip(start, limit, strides))
        element = element.at[index].max(hit & tied)
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(padding, x.shape))
    return tied, element[crop]


def _tied_reduce(x: Array, out: Array, axes) -> tuple[Array, Array]:
    expanded = jnp.expand_dims(out, tuple(axes))
    hit = x == expanded
    tied = jnp.sum(hit, axis=tuple(axes)) >= 2
    return tied, hit & jnp.expand_dims(tied, tuple(axes))


def _kink(eqn, invals, outvals):
    """(unit mask over the output, [element masks per operand]) at the kinks of one
    primitive application, or None for a primitive without kinks."""
    name, params = eqn.primitive.name, eqn.params
    if name in ("max", "min"):
        x, y = invals
        at = jnp.broadcast_to(x == y, outvals[0].shape)
        return at, [at, at]
    if name == "clamp":
        lo, x, hi = invals
        at = (x == lo) | (x == hi)
        return at, [None, at, None]
    if name in ("reduce_window_max", "reduce_window_min"):
        found = _tied_window(invals[0], outvals[0], params)
        return None if found is None else (found[0], [found[1]])
    if name in ("reduce_max", "reduce_min"):
        tied, element = _tied_reduce(invals[0], outvals[0], params["axes"])
        return tied, [element]
    return None


def _sub_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if isinstance(sub, jcore.ClosedJaxpr):
            return sub
    return None


class _Tally:
    def __init__(self, a: Array):
        self.batch = a.shape[0]
        self.activations = jnp.zeros(a.shape, bool)
        self.kinked = jnp.zeros((self.batch,), jnp.int32)
        self.units = 0

    def add_units(self, at: Array) -> None:
        if at.ndim >= 1 and at.shape[0] == self.batch:
            self.kinked = self.kinked + jnp.sum(at.reshape(self.batch, -1), axis=1)
            self.units += int(np.prod(at.shape[1:]))

    def add_activations(self, at: Array) -> None:
        self.activations = self.activations | jnp.broadcast_to(at, self.activations.shape)


# Primitives that act elementwise: an output element depends on the same element of each
# operand (after broadcasting constants), so an activation keeps its position through them.
_ELEMENTWISE = frozenset({
    "abs", "add", "clamp", "convert_element_type", "div", "erf", "exp", "integer_pow",
    "log", "log1p", "logistic", "max", "min", "mul", "neg", "pow", "rsqrt", "sign", "sqrt",
    "sub", "tanh"})


def _evaluate(jaxpr, consts, args, marks_in, tally: _Tally):
    """Evaluates ``jaxpr``, tallying the kinks. Each variable carries a mark: None (does
    not depend on the activations), "tainted" (depends on them), or "elementwise" (an
    elementwise function of the activations alone, so element i is about A_i)."""
    env, marks = {}, {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    def mark(v):
        return None if isinstance(v, jcore.Literal) else marks.get(v)

    for var, val in zip(jaxpr.constvars, consts):
        env[var] = val
    for var, val, m in zip(jaxpr.invars, args, marks_in):
        env[var], marks[var] = val, m
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inmarks = [mark(v) for v in eqn.invars]
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            outvals = _evaluate(sub.jaxpr, sub.consts, invals, inmarks, tally)
            outmarks = [_call_mark(inmarks)] * len(outvals)
        else:
            outvals = eqn.primitive.bind(*invals, **eqn.params)
            outvals = list(outvals) if eqn.primitive.multiple_results else [outvals]
            found = _kink(eqn, invals, outvals)
            direct = [m == "elementwise" and all(o is None for j, o in enumerate(inmarks)
                                                  if j != i)
                      for i, m in enumerate(inmarks)]
            if found is not None:
                units, elements = found
                tally.add_units(units)
                for is_direct, element, val in zip(direct, elements, invals):
                    if (is_direct and element is not None
                            and jnp.shape(val) == tally.activations.shape):
                        tally.add_activations(element)
            elementwise = (eqn.primitive.name in _ELEMENTWISE and any(direct)
                           and outvals[0].shape == tally.activations.shape)
            tainted = any(m is not None for m in inmarks)
            outmarks = ["elementwise" if elementwise else "tainted" if tainted else None
                        ] * len(outvals)
        for var, val, m in zip(eqn.outvars, outvals, outmarks):
            env[var], marks[var] = val, m
    return [read(v) for v in jaxpr.outvars]


def _call_mark(inmarks):
    """A call's outputs: conservatively tainted when any input is (a call that is an
    elementwise function of A is tracked inside it, through its own jaxpr)."""
    return "tainted" if any(m is not None for m in inmarks) else None


def kink_shares(head: Callable[[Array], Array], a: Array) -> KinkShares:
    """How much of a head's evaluation at ``a`` (B, ...) sits exactly on a kink.

    Args:
      head: a batched function of the activations (for a split,
        ``split.logits_from``).
      a: the activations, batch first.

    Returns:
      :class:`KinkShares`, one value per example.
    """
    closed = jax.make_jaxpr(head)(a)
    tally = _Tally(a)
    _evaluate(closed.jaxpr, closed.consts, [a], ["elementwise"], tally)
    per_example = tally.activations.reshape(tally.batch, -1)
    units = tally.kinked / max(tally.units, 1)
    return KinkShares(jnp.mean(per_example.astype(a.dtype), axis=1), units.astype(a.dtype))
