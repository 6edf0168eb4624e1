"""Taylor-mode evaluation of a traced function along many directions, with convolutions
lowered to matrix products.

The generic exact engine (:mod:`jaxcam.derivatives._taylor`) needs, for every basis direction e_i, the
derivatives of t -> fn(a + t e_i) at t = 0 up to order K. This module computes them from
fn's jaxpr in two passes:

1. The primal pass (:func:`primal_pass`), once per point: every equation is evaluated at
   ``a``. Each equation whose output depends on the direction keeps its inputs and
   outputs, and what its rule needs at the point (for an elementwise function, its
   derivatives f'(x0), .., f^(K)(x0); for a piecewise-linear one, its linearisation).
2. The series pass (:func:`series_pass`), per direction (``vmap``-ed): every value that
   depends on the direction is a truncated Taylor series x(t) = x0 + x1 t + .. + xK t^K.
   x0 comes from the primal pass and is shared by all directions; only x1 .. xK are
   computed per direction: K streams, where K nested JVPs carry 2^K - 1 tangents and
   recompute the primal for every direction. Coefficients known to be zero are never
   formed: along a line a + t v only x1 = v is non-zero at the input.

Rules, by primitive (:func:`rule_for`):

* ``linear``: linear in its direction-dependent operands (reshapes, slices, pads, sums,
  concatenation, selection, products with a constant): y_k = p(x_k) for every k, with a
  convolution computed by :func:`conv_as_matmul`. For a convolution or dot_general with
  a constant, the non-zero coefficients are stacked into one call.
* ``bilinear``: mul, dot_general, conv_general_dilated of two series: the Cauchy product
  y_k = sum_j p(a_j, b_(k-j)).
* ``div``: a quotient with a series denominator: z_k = (a_k - sum_(j>=1) b_j z_(k-j)) / b_0.
* ``elementwise``: an elementwise function of one series (exp, erf, tanh, integer_pow,
  max with a constant, ...): Faa di Bruno, y = sum_m f^(m)(x0) / m! s^m with s = x - x0.
* ``piecewise_linear``: max-pooling, reductions by max or min, sorting, cummax: their
  JVP is a linear map that depends on the point only through comparisons, so every
  coefficient goes through the same linear map, y_k = L(x_k).
* ``nested``: a ``jit`` (or call, or remat) equation: its jaxpr, recursively.
* ``generic``: everything else (custom_jvp functions, control flow, ...): nested
  ``jax.jvp`` of the single equation along t, exact under JAX's own rules. This is also
  the fallback for every primitive not named in the tables below.

Convolutions are lowered to matrix products (:mod:`._conv`); the truncated series'
arithmetic is :mod:`._series`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend.core as jcore
import jax.numpy as jnp

from jaxcam.derivatives._conv import conv_as_matmul
from jaxcam.derivatives._series import (Series, add_terms, horner, series_compose,
                                        series_product, series_quotient, taylor_along)

Array = jax.Array

P = jcore.primitives

# --------------------------------------------------------------------------------------
# Rules


def bind(eqn, *args) -> list:
    """Evaluates one jaxpr equation on ``args``; always returns a list of outputs."""
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = params if isinstance(params, tuple) else ((), params)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *args, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _apply(eqn, args) -> list:
    """``bind``, with convolutions computed by :func:`conv_as_matmul`."""
    if eqn.primitive is P.conv_general_dilated_p:
        return [conv_as_matmul(*args, **eqn.params)]
    return bind(eqn, *args)


def _all_operands(eqn) -> tuple[int, ...]:
    return tuple(range(len(eqn.invars)))


# Primitives linear in the operands at these positions (jointly), the others held fixed.
_LINEAR = {
    **{p: (0,) for p in (
        P.reshape_p, P.broadcast_in_dim_p, P.transpose_p, P.squeeze_p, P.slice_p, P.rev_p,
        P.reduce_sum_p, P.neg_p, P.copy_p, P.convert_element_type_p, P.reduce_precision_p,
        P.cumsum_p, P.reduce_window_sum_p, P.real_p, P.imag_p, P.conj_p, P.dynamic_slice_p,
        P.gather_p, P.sharding_constraint_p, P.div_p)},
    P.pad_p: (0, 1),
    P.dynamic_update_slice_p: (0, 1),
    P.scatter_add_p: (0, 2),
    P.select_n_p: None,       # every case operand (not the predicate)
    P.concatenate_p: None,
    P.add_p: None, P.sub_p: None, P.add_jaxvals_p: None,
}
for _name in ("split", "copy_p"):
    if hasattr(P, _name + "_p"):
        _LINEAR[getattr(P, _name + "_p")] = (0,)

_BILINEAR = (P.mul_p, P.dot_general_p, P.conv_general_dilated_p)
# Products with a constant whose coefficients are stacked into one call (one larger
# matrix product instead of one per coefficient).
_STACKED = (P.conv_general_dilated_p, P.dot_general_p)

_ELEMENTWISE = frozenset(getattr(P, name + "_p") for name in (
    "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "erf", "erfc", "erf_inv",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
    "sqrt", "rsqrt", "cbrt", "integer_pow", "pow", "square", "abs", "sign", "floor",
    "ceil", "round", "lgamma", "digamma", "max", "min", "clamp", "atan2", "rem")
    if hasattr(P, name + "_p"))

_PIECEWISE_LINEAR = frozenset(getattr(P, name + "_p") for name in (
    "reduce_max", "reduce_min", "reduce_window_max", "reduce_window_min", "cummax",
    "cummin", "sort", "max", "min") if hasattr(P, name + "_p"))

_NESTED = frozenset(getattr(P, name + "_p") for name in ("jit", "closed_call", "call")
                    if hasattr(P, name + "_p"))

_NO_SERIES = frozenset({P.stop_gradient_p})


def _linear_slots(eqn) -> tuple[int, ...]:
    slots = _LINEAR[eqn.primitive]
    if slots is None:
        return tuple(range(1 if eqn.primitive is P.select_n_p else 0, len(eqn.invars)))
    return slots


def rule_for(eqn, depends: Sequence[bool]) -> str:
    """The rule that propagates series through ``eqn``, given which operands depend on
    the direction: "nested", "linear", "bilinear", "div", "elementwise",
    "piecewise_linear" or "generic" (see the module docstring)."""
    p = eqn.primitive
    dep = [i for i, flag in enumerate(depends) if flag]
    if p in _NESTED and _inner_jaxpr(eqn) is not None:
        return "nested"
    if p in _BILINEAR:
        return "bilinear" if len(dep) == 2 else "linear"
    if p is P.div_p and 1 in dep:
        return "div"
    if p in _LINEAR and set(dep) <= set(_linear_slots(eqn)):
        return "linear"
    if p in _PIECEWISE_LINEAR and not (p in _ELEMENTWISE and len(dep) == 1):
        return "piecewise_linear"
    if p in _ELEMENTWISE and len(dep) == 1:
        return "elementwise"
    return "generic"


def _inner_jaxpr(eqn):
    """(jaxpr, consts) of a call-like equation, or None."""
    inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if isinstance(inner, jcore.ClosedJaxpr):
        return inner.jaxpr, inner.consts
    if isinstance(inner, jcore.Jaxpr):
        return inner, ()
    return None


class Record(NamedTuple):
    """What the series pass needs of one direction-dependent equation."""

    rule: str
    invals: list
    outvals: list
    aux: Any


def _is_float(aval) -> bool:
    return hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.inexact)


def _primal_rule(rule: str, eqn, invals: list, depends: list[bool], order: int):
    """Evaluates ``eqn`` at the point: (outvals, aux, output dependence)."""
    if rule == "nested":
        jaxpr, consts = _inner_jaxpr(eqn)
        outvals, out_dep, records = primal_pass(jaxpr, consts, invals, depends, order)
        return outvals, records, out_dep
    out_dep = [_is_float(v.aval) for v in eqn.outvars]
    if rule == "elementwise":
        i = depends.index(True)

        def f(x):
            return bind(eqn, *invals[:i], x, *invals[i + 1:])[0]

        x0 = invals[i]
        outvals = bind(eqn, *invals)
        zero = jnp.zeros((), x0.dtype)
        derivs = taylor_along(lambda t: f(x0 + t), zero, jnp.ones_like(zero), order)
        return outvals, list(derivs), out_dep
    if rule == "piecewise_linear":
        dep = [i for i, flag in enumerate(depends) if flag]

        def f(*xs):
            args = list(invals)
            for i, x in zip(dep, xs):
                args[i] = x
            return tuple(bind(eqn, *args))

        outvals, linear = jax.linearize(f, *[invals[i] for i in dep])
        return list(outvals), linear, out_dep
    return bind(eqn, *invals), None, out_dep


def primal_pass(jaxpr, consts, args, depends, order: int):
    """Evaluates ``jaxpr`` at ``args`` and records what the series pass needs.

    Args:
      jaxpr: an open jaxpr; consts: values of its constvars; args: of its invars.
      depends: per invar, whether it depends on the direction.
      order: K, the number of Taylor coefficients.

    Returns:
      (outvals, out_depends, records): records[i] is a :class:`Record` for the i-th
      equation when one of its outputs depends on the direction, else None.
    """
    env, dep = {}, {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, val in zip(jaxpr.constvars, consts):
        env[v] = val
    for v, val, flag in zip(jaxpr.invars, args, depends):
        env[v], dep[v] = val, bool(flag) and _is_float(v.aval)
    records = []
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        in_dep = [not isinstance(v, jcore.Literal) and dep.get(v, False) for v in eqn.invars]
        if not any(in_dep) or eqn.primitive in _NO_SERIES:
            outvals, out_dep, record = bind(eqn, *invals), [False] * len(eqn.outvars), None
        else:
            rule = rule_for(eqn, in_dep)
            outvals, aux, out_dep = _primal_rule(rule, eqn, invals, in_dep, order)
            record = Record(rule, invals, outvals, aux) if any(out_dep) else None
        records.append(record)
        for v, val, flag in zip(eqn.outvars, outvals, out_dep):
            if not isinstance(v, jcore.DropVar):
                env[v], dep[v] = val, flag
    outvars = jaxpr.outvars
    return ([read(v) for v in outvars],
            [not isinstance(v, jcore.Literal) and dep.get(v, False) for v in outvars],
            records)


def _zeros_like(x) -> Array:
    return jnp.zeros(jnp.shape(x), jnp.result_type(x))


def _series_linear(eqn, rec: Record, ins: list) -> list:
    order = len(next(s for s in ins if s is not None))
    p = eqn.primitive
    if p in (P.add_p, P.sub_p, P.add_jaxvals_p):
        shape = rec.outvals[0].shape
        out = []
        for k in range(order):
            terms = [None if s is None else s[k] for s in ins]
            if p is P.sub_p and terms[1] is not None:
                terms[1] = -terms[1]
            total = add_terms(terms[0], terms[1])
            if total is not None and total.shape != shape:
                total = jnp.broadcast_to(total, shape)
            out.append(total)
        return [tuple(out)]
    if p in _BILINEAR:
        slots = tuple(i for i, s in enumerate(ins) if s is not None)
    else:
        slots = _linear_slots(eqn)
    if p in _STACKED and len(slots) == 1:
        return [_stacked_linear(eqn, rec, slots[0], ins[slots[0]])]
    outs = [[] for _ in eqn.outvars]
    for k in range(order):
        if all(ins[i] is None or ins[i][k] is None for i in slots):
            for o in outs:
                o.append(None)
            continue
        args = list(rec.invals)
        for i in slots:
            coeff = None if ins[i] is None else ins[i][k]
            args[i] = _zeros_like(rec.invals[i]) if coeff is None else coeff
        for o, val in zip(outs, _apply(eqn, args)):
            o.append(val)
    return [tuple(o) for o in outs]


def _stacked_linear(eqn, rec: Record, slot: int, s: Series) -> Series:
    """A product with a constant applied to every non-zero coefficient in one call:
    one matrix product with the coefficients stacked, not one per coefficient."""
    present = [k for k, c in enumerate(s) if c is not None]

    def one(x):
        args = list(rec.invals)
        args[slot] = x
        return _apply(eqn, args)[0]

    if len(present) == 1:
        out = [None] * len(s)
        out[present[0]] = one(s[present[0]])
        return tuple(out)
    ys = jax.vmap(one)(jnp.stack([s[k] for k in present]))
    out = [None] * len(s)
    for j, k in enumerate(present):
        out[k] = ys[j]
    return tuple(out)


def _series_bilinear(eqn, rec: Record, ins: list) -> list:
    (a0, b0), (a, b) = rec.invals[:2], ins[:2]

    def product(x, y):
        return _apply(eqn, [x, y])[0]

    return [series_product(a0, a, b0, b, product)]


def _series_generic(eqn, rec: Record, ins: list) -> list:
    order = len(next(s for s in ins if s is not None))
    dtype = next(v for v, s in zip(rec.invals, ins) if s is not None).dtype

    floats = [j for j, v in enumerate(eqn.outvars) if _is_float(v.aval)]

    def along(t):  # the floating-point outputs (the others have no series)
        args = [x0 if s is None else horner(t.astype(jnp.result_type(x0)), x0, s)
                for x0, s in zip(rec.invals, ins)]
        outvals = bind(eqn, *args)
        return tuple(outvals[j] for j in floats)

    zero = jnp.zeros((), dtype)
    derivs = dict(zip(floats, taylor_along(along, zero, jnp.ones_like(zero), order)))
    return [tuple(derivs[j][k] / math.factorial(k + 1) for k in range(order))
            if j in derivs else None for j in range(len(eqn.outvars))]


def _series_eqn(eqn, rec: Record, ins: list) -> list:
    """The output series of one equation from its input series (None: no series)."""
    rule = rec.rule
    if rule == "nested":
        jaxpr, _ = _inner_jaxpr(eqn)
        return series_pass(jaxpr, rec.aux, ins)
    if rule == "linear":
        return _series_linear(eqn, rec, ins)
    if rule == "bilinear":
        return _series_bilinear(eqn, rec, ins)
    if rule == "div":
        return [series_quotient(rec.outvals[0], ins[0], rec.invals[1], ins[1])]
    if rule == "elementwise":
        (s,) = [x for x in ins if x is not None]
        return [series_compose(rec.aux, s)]
    if rule == "piecewise_linear":
        order = len(next(s for s in ins if s is not None))
        dep = [i for i, s in enumerate(ins) if s is not None]
        outs = [[] for _ in eqn.outvars]
        for k in range(order):
            coeffs = [ins[i][k] for i in dep]
            if all(c is None for c in coeffs):
                for o in outs:
                    o.append(None)
                continue
            coeffs = [_zeros_like(rec.invals[i]) if c is None else c
                      for i, c in zip(dep, coeffs)]
            for o, val in zip(outs, rec.aux(*coeffs)):
                o.append(val)
        return [tuple(o) if _is_float(v.aval) else None for o, v in zip(outs, eqn.outvars)]
    return _series_generic(eqn, rec, ins)


def series_pass(jaxpr, records: list, args: list) -> list:
    """The output series of ``jaxpr`` from its inputs' series (None for an input that
    does not depend on the direction), using the records of :func:`primal_pass`."""
    env = {v: s for v, s in zip(jaxpr.invars, args) if s is not None}
    for eqn, rec in zip(jaxpr.eqns, records):
        if rec is None:
            continue
        ins = [None if isinstance(v, jcore.Literal) else env.get(v) for v in eqn.invars]
        for v, s in zip(eqn.outvars, _series_eqn(eqn, rec, ins)):
            if s is not None and not isinstance(v, jcore.DropVar) and any(
                    c is not None for c in s):
                env[v] = s
    return [None if isinstance(v, jcore.Literal) else env.get(v) for v in jaxpr.outvars]


# --------------------------------------------------------------------------------------
# The engine


def trace(fn: Callable[[Array], Array], a: Array) -> jcore.ClosedJaxpr | None:
    """fn's jaxpr at an array shaped like ``a``, or None when fn does not return a single
    floating-point array (those go through nested ``jax.jvp``)."""
    closed, out = jax.make_jaxpr(fn, return_shape=True)(a)
    if not isinstance(out, jax.ShapeDtypeStruct) or not _is_float(out):
        return None
    return closed


def jaxpr_directional_derivatives(jaxpr, consts: Sequence[Array], a: Array, order: int
                                  ) -> Callable[[Array], Array]:
    """A function v -> [d^k/dt^k f(a + t v) at t = 0, k = 1..order] (order, *out) for the
    function f of one array that ``jaxpr`` (with ``consts``) computes.

    ``jaxpr`` is evaluated at ``a`` here, once (:func:`primal_pass`); the returned
    function only propagates the series of one direction (:func:`series_pass`) and is
    meant to be ``vmap``-ed over directions.
    """
    (out_aval,) = [v.aval for v in jaxpr.outvars]
    _, out_dep, records = primal_pass(jaxpr, consts, [a], [True], order)
    zeros = jnp.zeros((order, *out_aval.shape), out_aval.dtype)

    def along(v: Array) -> Array:
        if not out_dep[0]:
            return zeros
        (s,) = series_pass(jaxpr, records, [(v,) + (None,) * (order - 1)])
        if s is None:
            return zeros
        return jnp.stack([zeros[0] if c is None else (c * math.factorial(k)).astype(zeros.dtype)
                          for k, c in enumerate(s, start=1)])

    return along


def directional_derivatives(fn: Callable[[Array], Array], a: Array, order: int
                            ) -> Callable[[Array], Array] | None:
    """:func:`jaxpr_directional_derivatives` of ``fn``'s jaxpr at ``a``; None when ``fn``
    does not return a single floating-point array."""
    closed = trace(fn, a)
    if closed is None:
        return None
    return jaxpr_directional_derivatives(closed.jaxpr, closed.consts, a, order)
