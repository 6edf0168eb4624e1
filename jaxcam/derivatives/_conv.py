"""Convolutions on CPU: XLA's convolution on a batch of tiny feature maps (a few pixels,
hundreds of channels, one map per direction) runs at a small fraction of the speed of a
matrix product of the same size. :func:`conv_as_matmul` computes the same convolution as
strided slices of the padded input (im2col) contracted with the kernel by
``dot_general``; windows that lie partly in the padding are split off so that products
with padding zeros are not formed where they would be a large part of the work (a 3x3
convolution on a 2x2 map has 16 useful taps out of 36). Grouped convolutions contract per
group; depthwise ones (one input channel per group) are a multiply-add over the window.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

# A window tap set covering at least this fraction of its padded extent is computed on the
# padded input in one piece (the few products with padding zeros cost less than more,
# smaller matrix products).
_DENSE_FRACTION = 0.8

# --------------------------------------------------------------------------------------
# Convolution as matrix products


class Run(NamedTuple):
    """Consecutive outputs along one spatial dimension whose windows use the same taps:
    outputs ``start .. start + count - 1``, kernel taps ``tap_lo .. tap_hi - 1``."""

    start: int
    count: int
    tap_lo: int
    tap_hi: int


def conv_runs(size: int, kernel: int, stride: int, dilation: int, data: tuple[int, int],
              dense_fraction: float = _DENSE_FRACTION) -> list[Run]:
    """Outputs of a valid (already padded) 1-D convolution grouped by the taps that touch data.

    Args:
      size: the padded input length.
      kernel, stride, dilation: the window.
      data: [lo, hi), the positions of the padded input that hold data (not padding).
      dense_fraction: if the useful taps are at least this fraction of all taps, one run
        with every tap is returned (padding zeros included).

    Returns:
      Runs covering every output in order. Output o reads position o * stride + k *
      dilation at tap k; a run lists only the taps that read data for all its outputs.
    """
    span = (kernel - 1) * dilation + 1
    outputs = max(0, (size - span) // stride + 1)
    if outputs == 0:
        return []
    lo, hi = data

    def taps(o):
        first = max(0, -((o * stride - lo) // dilation))        # ceil((lo - o s) / d)
        last = min(kernel, (hi - 1 - o * stride) // dilation + 1)
        return (first, last) if first < last else (0, 0)

    per_output = [taps(o) for o in range(outputs)]
    useful = sum(b - a for a, b in per_output)
    if useful >= dense_fraction * outputs * kernel:
        return [Run(0, outputs, 0, kernel)]
    runs = []
    for o, t in enumerate(per_output):
        if runs and (runs[-1].tap_lo, runs[-1].tap_hi) == t:
            runs[-1] = runs[-1]._replace(count=runs[-1].count + 1)
        else:
            runs.append(Run(o, 1, *t))
    return runs


def _inverse_layout(spec: Sequence[int]) -> list[int]:
    """The permutation that takes an array in (batch, spatial.., feature) order to the
    layout in which ``spec`` = (batch axis, feature axis, spatial axes..) are placed."""
    nd = len(spec)
    perm = [0] * nd
    perm[spec[0]] = 0
    perm[spec[1]] = nd - 1
    for i, axis in enumerate(spec[2:]):
        perm[axis] = 1 + i
    return perm


def _contract_window(patches: list[Array], kernel: Array, groups: int, precision,
                     out_dtype) -> Array:
    """sum over taps t and input channels of patches[t] (N, L.., C) times kernel
    (T, C / groups, O): the output (N, L.., O) of one block of windows."""
    t, cg, o = kernel.shape
    lead = patches[0].shape[:-1]
    m = math.prod(lead)
    og = o // groups
    if groups > 1 and cg == 1:
        # depthwise: one input channel per group; a multiply-add over the window
        w = kernel.reshape(t, groups, og)
        total = None
        for i, p in enumerate(patches):
            term = p.reshape(m, groups, 1).astype(out_dtype) * w[i][None].astype(out_dtype)
            total = term if total is None else total + term
        return total.reshape(*lead, o)
    cols = patches[0] if t == 1 else jnp.stack(patches, axis=-2)       # (N, L.., T, C)
    if groups == 1:
        out = lax.dot_general(cols.reshape(m, t * cg), kernel.reshape(t * cg, o),
                              (((1,), (0,)), ((), ())), precision=precision,
                              preferred_element_type=out_dtype)
        return out.reshape(*lead, o)
    lhs = cols.reshape(m, t, groups, cg)
    rhs = kernel.reshape(t, cg, groups, og)
    out = lax.dot_general(lhs, rhs, (((1, 3), (0, 1)), ((2,), (2,))), precision=precision,
                          preferred_element_type=out_dtype)            # (G, M, Og)
    return jnp.transpose(out, (1, 0, 2)).reshape(*lead, o)


def conv_as_matmul(lhs: Array, rhs: Array, *, window_strides, padding, lhs_dilation,
                   rhs_dilation, dimension_numbers, feature_group_count: int = 1,
                   batch_group_count: int = 1, precision=None, preferred_element_type=None,
                   dense_fraction: float = _DENSE_FRACTION, **_unused) -> Array:
    """``lax.conv_general_dilated`` computed with slices, pads and ``dot_general``.

    Takes the parameters of a ``conv_general_dilated`` equation (any dimension numbers,
    strides, padding including negative padding, input and kernel dilation, feature
    groups) and returns the same array, up to the order of floating-point sums.
    ``batch_group_count > 1`` is passed to ``lax.conv_general_dilated`` unchanged.

    The input is put in (N, spatial.., C) layout, dilated and padded with ``lax.pad``;
    along each spatial dimension the outputs are grouped into runs whose windows read
    data at the same taps (:func:`conv_runs`); each block of runs is one im2col matrix of
    strided slices contracted with the matching taps of the kernel.
    """
    dn = dimension_numbers
    if batch_group_count != 1 or dn is None:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dn,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    out_dtype = preferred_element_type or jnp.result_type(lhs.dtype, rhs.dtype)
    d = len(window_strides)
    x = jnp.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    w = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
    n, c = x.shape[0], x.shape[-1]
    sizes = [(s - 1) * dil + 1 if s > 0 else 0 for s, dil in zip(x.shape[1:-1], lhs_dilation)]
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, [(0, 0, 0)] + [(lo, hi, dil - 1) for (lo, hi), dil
                                         in zip(padding, lhs_dilation)] + [(0, 0, 0)])
    data = [(max(lo, 0), min(lo + s, x.shape[1 + i]))
            for i, ((lo, _), s) in enumerate(zip(padding, sizes))]
    kernel_shape = w.shape[:d]
    runs = [conv_runs(x.shape[1 + i], kernel_shape[i], window_strides[i], rhs_dilation[i],
                      data[i], dense_fraction) for i in range(d)]
    out_features = w.shape[-1]
    out_spatial = [sum(r.count for r in rs) for rs in runs]
    if 0 in out_spatial or n == 0:
        out = jnp.zeros((n, *out_spatial, out_features), out_dtype)
        return jnp.transpose(out, _inverse_layout(dn.out_spec))

    def block(choice: tuple[Run, ...]) -> Array:
        counts = [r.count for r in choice]
        taps = list(itertools.product(*[range(r.tap_lo, r.tap_hi) for r in choice]))
        if not taps:
            return jnp.zeros((n, *counts, out_features), out_dtype)
        patches = []
        for tap in taps:
            start = [r.start * s + k * dil for r, k, s, dil
                     in zip(choice, tap, window_strides, rhs_dilation)]
            limit = [b + (cnt - 1) * s + 1 for b, cnt, s in zip(start, counts, window_strides)]
            patches.append(lax.slice(x, (0, *start, 0), (n, *limit, c),
                                     (1, *window_strides, 1)))
        kernel = lax.slice(w, (*[r.tap_lo for r in choice], 0, 0),
                           (*[r.tap_hi for r in choice], *w.shape[d:]))
        kernel = kernel.reshape(len(taps), *w.shape[d:])
        return _contract_window(patches, kernel, feature_group_count, precision, out_dtype)

    def assemble(prefix: tuple[Run, ...]) -> Array:
        axis = len(prefix)
        if axis == d:
            return block(prefix)
        parts = [assemble(prefix + (r,)) for r in runs[axis]]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1 + axis)

    return jnp.transpose(assemble(()), _inverse_layout(dn.out_spec))


