"""Building blocks shared by the model zoo: stage descriptions and the staged network.

A zoo model is a flat tuple of named *stages* (``features.29``, ``layer4.2``,
``_blocks.15`` ...). Each stage is a frozen, hashable description of one operation;
:class:`StagedNet` runs any contiguous range of them. Splitting a model at a layer is
then just two ranges of the same network, so ``head(features(x)) == forward(x)`` holds
by construction, and the Flax parameter tree is keyed by the PyTorch module names,
which keeps checkpoint conversion a rename-and-transpose table.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Activation kinds a zoo model can run its ReLU/ReLU6 stages with. "relu" is the model's
# own (ReLU, or ReLU6 where the stage is capped); the smooth ones are study tools.
ACTIVATIONS = ("relu", "gelu", "silu", "softplus")
PIECEWISE_LINEAR_ACTIVATIONS = frozenset({"relu"})


def _relu(x: Array, cap: float | None) -> Array:
    return jnp.clip(x, 0.0, cap) if cap is not None else jax.nn.relu(x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def guided_relu(x: Array, cap: float | None = None) -> Array:
    """ReLU (ReLU6 with ``cap=6``) whose backward pass follows guided backpropagation.

    Forward: the plain ReLU. Backward (Springenberg et al., 2015): the gradient passes only
    where both the forward input lies in the linear region (0 < x, and x < cap) and the
    incoming gradient is positive. A user network supports :func:`jaxcam.guided_backprop`
    by using this in place of its ReLUs in the function given as ``Split(guided=...)``.
    """
    return _relu(x, cap)


def _guided_fwd(x, cap):
    return _relu(x, cap), x


def _guided_bwd(cap, x, g):
    passes = (x > 0) & (g > 0)
    if cap is not None:
        passes = passes & (x < cap)
    return (jnp.where(passes, g, 0.0),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)


def activate(x: Array, kind: str, cap: float | None = None) -> Array:
    """Applies the activation ``kind`` ("relu" means ReLU, or ReLU6 when ``cap=6``;
    "guided_relu" the same with the guided-backpropagation backward rule)."""
    if kind == "relu":
        return _relu(x, cap)
    if kind == "guided_relu":
        return guided_relu(x, cap)
    if kind == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if kind == "silu":
        return jax.nn.silu(x)
    if kind == "softplus":
        return jax.nn.softplus(x)
    raise ValueError(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")


def conv(features: int, kernel: int, stride: int = 1, *, padding: Any, name: str,
         bias: bool = False) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   use_bias=bias, name=name)


def depthwise(x: Array, kernel: Array, stride: int, padding: Any) -> Array:
    """Depthwise convolution (one kxk filter per channel) as a sum of k*k shifted taps.

    Equals ``lax.conv_general_dilated(..., feature_group_count=C)`` with an HWIO kernel of
    shape (k, k, 1, C). Written as strided slices times per-channel scales, it is one fused
    elementwise loop, and its derivatives of every order are slices and pads: on CPU,
    XLA's grouped convolution is over ten times slower at the shapes of EfficientNet-Lite
    (``benchmarks/bench_depthwise.py``).
    """
    k = kernel.shape[0]
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(x.shape[1:3], (k, k), (stride, stride), padding)
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    b, h, w, c = x.shape
    out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
    total = None
    for i in range(k):
        for j in range(k):
            tap = jax.lax.slice(x, (0, i, j, 0),
                                (b, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
                                (1, stride, stride, 1)) * kernel[i:i + 1, j:j + 1]
            total = tap if total is None else total + tap
    return total


class DepthwiseConv(nn.Module):
    """A bias-free depthwise kxk convolution with ``nn.Conv``'s parameter (``kernel`` of
    shape (k, k, 1, C)), computed by :func:`depthwise`."""

    kernel_size: int
    stride: int = 1
    padding: Any = "SAME"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.kernel_size, self.kernel_size, 1, x.shape[-1]))
        x, kernel = nn.dtypes.promote_dtype(x, kernel)
        return depthwise(x, kernel, self.stride, self.padding)


def batch_norm(eps: float, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, epsilon=eps, momentum=0.9, name=name)


def symmetric(pad: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch-style symmetric padding (Flax 'SAME' would pad (0, 1) at stride 2)."""
    return ((pad, pad), (pad, pad))


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """Averaging matrix (out, size) of PyTorch's adaptive average pooling bins."""
    m = np.zeros((out, size), np.float32)
    for i in range(out):
        lo, hi = (i * size) // out, math.ceil((i + 1) * size / out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x: Array, out: int) -> Array:
    """``nn.AdaptiveAvgPool2d(out)`` on NHWC input; the identity when h = w = out."""
    h, w = x.shape[1:3]
    if (h, w) == (out, out):
        return x
    ph = jnp.asarray(_adaptive_matrix(h, out), x.dtype)
    pw = jnp.asarray(_adaptive_matrix(w, out), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", ph, x, pw)


# --------------------------------------------------------------------------------------
# Stage operations. Each is a frozen dataclass (hashable, so a network built from them is
# a valid static jit argument) with ``__call__(x, *, name, activation)`` that runs inside
# the compact call of StagedNet and creates its Flax submodule under ``name``. An op whose
# output is no longer a spatial map (global pooling, flattening) says so with
# ``spatial = False``: no CAM can be taken there or after it.


@dataclasses.dataclass(frozen=True)
class Conv:
    features: int
    kernel: int
    stride: int = 1
    padding: Any = "SAME"
    bias: bool = False

    def __call__(self, x, *, name, activation):
        return conv(self.features, self.kernel, self.stride, padding=self.padding,
                    bias=self.bias, name=name)(x)


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    eps: float = 1e-5

    def __call__(self, x, *, name, activation):
        return batch_norm(self.eps, name)(x)


@dataclasses.dataclass(frozen=True)
class Act:
    cap: float | None = None

    def __call__(self, x, *, name, activation):
        return activate(x, activation, self.cap)


@dataclasses.dataclass(frozen=True)
class MaxPool:
    window: int
    stride: int
    pad: int = 0

    def __call__(self, x, *, name, activation):
        return nn.max_pool(x, (self.window,) * 2, (self.stride,) * 2, padding=symmetric(self.pad))


@dataclasses.dataclass(frozen=True)
class AdaptiveAvgPool:
    out: int

    def __call__(self, x, *, name, activation):
        return adaptive_avg_pool(x, self.out)


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool:
    spatial = False  # (B, 1, 1, K): one value per channel, no map left

    def __call__(self, x, *, name, activation):
        return jnp.mean(x, axis=(1, 2), keepdims=True)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Dropout at inference time."""

    def __call__(self, x, *, name, activation):
        return x


@dataclasses.dataclass(frozen=True)
class Linear:
    """A linear layer; flattens (B, h, w, c) input in NHWC order first."""

    features: int
    spatial = False  # (B, features)

    def __call__(self, x, *, name, activation):
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.features, name=name)(x)


@dataclasses.dataclass(frozen=True)
class Block:
    """A residual block: ``module`` is an unbound Flax module class taking ``activation``."""

    module: type[nn.Module]
    config: tuple[tuple[str, Any], ...]

    def __call__(self, x, *, name, activation):
        return self.module(**dict(self.config), name=name)(x, activation)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One named, splittable layer of a zoo model.

    Attributes:
      name: the PyTorch module name users know (``features.29``, ``layer4.2``).
      op: the operation.
      aliases: further names that split at the same point (``layer4`` for ``layer4.2``).
      activates: whether the stage applies an activation (so is piecewise linear only
        under a piecewise-linear activation).
    """

    name: str
    op: Any
    aliases: tuple[str, ...] = ()
    activates: bool = False


class StagedNet(nn.Module):
    """Runs stages ``[start, stop)`` of a model; ``start=0, stop=None`` is the full net."""

    stages: tuple[Stage, ...]

    @nn.compact
    def __call__(self, x: Array, start: int = 0, stop: int | None = None,
                 activation: str = "relu") -> Array:
        for stage in self.stages[start:stop]:
            x = stage.op(x, name=stage.name, activation=activation)
        return x


def stage_names(stages: Sequence[Stage]) -> list[str]:
    """All layer names in forward order, each alias right after the stage it names."""
    names = []
    for stage in stages:
        names.append(stage.name)
        names.extend(stage.aliases)
    return names


def spatial_stages(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    """The leading stages whose output is a spatial map (B, h, w, K): those up to the first
    global pooling or flattening op. Only these can be explained by a CAM."""
    for i, stage in enumerate(stages):
        if not getattr(stage.op, "spatial", True):
            return tuple(stages[:i])
    return tuple(stages)


def stage_index(stages: Sequence[Stage], layer: str) -> int | None:
    for i, stage in enumerate(stages):
        if layer == stage.name or layer in stage.aliases:
            return i
    return None
