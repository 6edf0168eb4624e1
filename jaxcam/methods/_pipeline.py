"""The shape every CAM method shares: measure evidence at the cut, turn it into a map, finish.

A method is a :class:`Program`, a pytree of three parts:

1. ``measure(split, x, classes, key) -> Evidence``: what is measured at the cut: the
   activations A and the head derivatives of the score up to some order
   (:mod:`jaxcam.methods._measures`), optionally averaged over noisy copies of the input; or the
   scores of masked inputs (:mod:`jaxcam.methods._perturbation`).
2. ``to_map(evidence) -> weighted activations (B, h, w, K)``: how the evidence weighs
   the activations: channel weights w_k A^k (:mod:`jaxcam.methods._gradient`), element-wise
   weights w^k_ij A^k_ij, or A itself;
3. ``reduce``: the weighted activations to a map (B, h, w): their sum over the channels,
   or (``"eigen"``, Eigen-CAM and ``eigen_smooth``) their first principal component;
4. :class:`Finish`: rectify, upsample to the input, min-max normalise.

Between 1 and 2, an optional :class:`Selection` keeps only some feature maps or neurons,
and ``counterfactual`` negates the odd derivatives.

Static versus traced. A program is a ``flax.struct`` pytree: string modes, orders, chunk
sizes and flags are static fields (they fix the compiled program); numeric options
(``eps``, ``noise``, baselines) and selections are leaves, traced by :func:`run`, so a new
value never recompiles. Every method runs as ONE call of the jit-compiled :func:`run`.
"""

from __future__ import annotations

import dataclasses

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from jaxcam import _weighting as W
from jaxcam._checks import is_concrete
from jaxcam.splitting._split import Split, split_shapes

Array = jax.Array


@struct.dataclass
class Evidence:
    """What a measure found at the cut, for a batch.

    Attributes:
      a: the activations the map weighs, A (B, h, w, K).
      derivs: (D1, .., Dk), pure derivatives of the score in A, each (B, h, w, K); empty
        for methods without gradients.
      scores: per-channel scores (B, K) of perturbation methods, or None.
      last: torch-cam's Smooth Grad-CAM++ only: the evidence of the LAST noisy copy.
    """

    a: Array
    derivs: tuple = ()
    scores: Array | None = None
    last: Any = None


def negate_odd(derivs: tuple) -> tuple:
    """Derivatives along -e_i: D_k -> (-1)^k D_k (explaining a decrease of the score)."""
    return tuple(d if k % 2 == 0 else -d for k, d in enumerate(derivs, start=1))


@struct.dataclass
class Selection:
    """Feature-map and neuron selection (Omeiza et al., 2019): only the selected
    activations enter the map; every other activation (and its derivatives) is set to 0.

    The derivatives are those of the unmodified network, taken before the selection.

    Attributes:
      channels: (K,) mask of the selected feature maps, or None (all).
      neurons: (h, w) mask of the selected positions, or None (all).
    """

    channels: Array | None = None
    neurons: Array | None = None

    def mask(self, a: Array) -> Array:
        m = jnp.ones(a.shape[-3:], a.dtype)
        if self.channels is not None:
            m = m * self.channels.astype(a.dtype)[None, None, :]
        if self.neurons is not None:
            m = m * self.neurons.astype(a.dtype)[:, :, None]
        return m

    def __call__(self, evidence: Evidence) -> Evidence:
        keep = lambda v: v * self.mask(v)[None]  # noqa: E731
        last = None if evidence.last is None else self(evidence.last)
        return evidence.replace(a=keep(evidence.a),
                                derivs=tuple(keep(d) for d in evidence.derivs), last=last)


@struct.dataclass
class Finish:
    """The shared end of every method: ReLU (when ``rectify``), bilinear upsampling to the
    input's (H, W), per-map min-max scaling to [0, 1]."""

    rectify: bool = struct.field(pytree_node=False, default=True)
    upsample: bool = struct.field(pytree_node=False, default=True)
    normalize: bool = struct.field(pytree_node=False, default=True)

    def __call__(self, raw: Array, size: tuple[int, int]) -> Array:
        raw = jax.nn.relu(raw) if self.rectify else raw
        maps = W.upsample(raw, size) if self.upsample else raw
        return W.normalize(maps) if self.normalize else maps


REDUCTIONS = ("sum", "eigen")


def reduce_channels(weighted: Array, how: str) -> Array:
    """(B, h, w, K) weighted activations -> (B, h, w): "sum" over the channels, or "eigen",
    the projection on their first principal component (:func:`jaxcam.weighting.first_component`)."""
    return jnp.sum(weighted, axis=-1) if how == "sum" else W.first_component(weighted)


@struct.dataclass
class Program:
    """One method with its options: measure, (select), weigh, reduce, finish."""

    measure: Any
    to_map: Any
    finish: Finish = Finish()
    selection: Selection | None = None
    counterfactual: bool = struct.field(pytree_node=False, default=False)
    reduce: str = struct.field(pytree_node=False, default="sum")

    def __call__(self, split: Split, x: Array, classes: Array, key: Array | None) -> Array:
        evidence = self.measure(split, x, classes, key)
        if self.selection is not None:
            evidence = self.selection(evidence)
        if self.counterfactual:
            last = evidence.last
            evidence = evidence.replace(
                derivs=negate_odd(evidence.derivs),
                last=None if last is None else last.replace(derivs=negate_odd(last.derivs)))
        raw = reduce_channels(self.to_map(evidence), self.reduce)
        return self.finish(raw, x.shape[1:3])


@dataclasses.dataclass(frozen=True)
class Built:
    """What a method's builder returns: the program and the traced arguments of :func:`run`.
    Read by name (it is not a tuple: nothing depends on the fields' order).

    Attributes:
      program: the method (a :class:`Program`, or a guided program).
      classes: the target classes (B,) (a placeholder when each image's predicted class
        is explained), or the target's traced parameters.
      key: the checked ``jax.random`` key, or None.
      mesh: the devices the program's chunks are split across, or None.
    """

    program: Any
    classes: Any
    key: Array | None = None
    mesh: Any = None


def run_on(mesh, program, split, x, classes, key=None) -> Array:
    """:func:`run`, with the inputs replicated on the mesh's devices when there is one."""
    if mesh is not None:
        split, x, classes, key = jax.device_put((split, x, classes, key),
                                                NamedSharding(mesh, PartitionSpec()))
    return run(program, split, x, classes, key)


@jax.jit
def run(program, split: Split, x: Array, classes: Array, key: Array | None = None) -> Array:
    """The one jit-compiled entry point of every method: ``program(split, x, classes, key)``.

    The program's static fields and the shapes fix the compiled code; its numeric options,
    the variables, the images, the classes and the key are traced arguments."""
    return program(split, x, classes, key)


# --- checks shared by every method. Shapes are static, so the shape checks run under a
# caller's jit or vmap too; the checks of values (finite x, class range, selections) need
# concrete arrays and are skipped for traced ones.

def check_inputs(split, x) -> Array:
    """Checks the split and the batch x (B, H, W, C), and what the split returns for it."""
    if not isinstance(split, Split):
        raise TypeError(f"split must be a jaxcam.Split (from jaxcam.models.load or "
                        f"jaxcam.Split(...)), got {type(split).__name__}")
    if not isinstance(x, jax.Array):
        try:
            x = jnp.asarray(x)
        except TypeError as e:
            raise TypeError(f"x must be an array of preprocessed images (B, H, W, C), got "
                            f"{type(x).__name__}") from e
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of preprocessed images (B, H, W, C); got shape "
                         f"{x.shape}. For one image use x[None].")
    if min(x.shape) < 1:
        raise ValueError(f"x must hold at least one image with H, W, C >= 1; got shape "
                         f"{x.shape} (B, H, W, C)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a float array of preprocessed images, got {x.dtype}; "
                         "apply split.preprocess(image) to uint8 photos first")
    if is_concrete(x):
        # Evaluated now, on x's device, also inside a caller's jit (a closed-over x).
        with jax.ensure_compile_time_eval():
            finite = bool(jnp.all(jnp.isfinite(x)))
        if not finite:
            raise ValueError("x contains NaN or infinite values")
    split_shapes(split, x)
    return x


def check_key(key) -> Array:
    """A typed ``jax.random.key`` as is, or a legacy raw ``jax.random.PRNGKey`` (uint32
    key data) wrapped as the typed key with the same data: both give the same noise."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be one jax.random key, shape (); got keys of shape "
                             f"{key.shape}")
        return key
    raw = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))  # default impl
    if (isinstance(key, (jax.Array, np.ndarray)) and key.dtype == raw.dtype
            and key.shape == raw.shape):
        return jax.random.wrap_key_data(jnp.asarray(key))
    got = (f"an array of shape {key.shape} and dtype {key.dtype}"
           if isinstance(key, (jax.Array, np.ndarray)) else f"{type(key).__name__}")
    raise TypeError(f"key must be a jax.random key: jax.random.key(seed), or a legacy "
                    f"jax.random.PRNGKey(seed) ({raw.dtype} {raw.shape}); got {got}")


def _channel_mask(channels, k: int) -> Array:
    if is_concrete(channels):
        arr = np.asarray(channels)
        if arr.size == 0:
            raise ValueError("channels is empty: list at least one feature map, or pass "
                             "channels=None for all of them")
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer) or arr.ndim != 1:
            raise TypeError(f"channels must be a list of feature-map indices (ints), e.g. "
                            f"channels=[3, 17]; got {channels!r}")
        bad = arr[(arr < 0) | (arr >= k)]
        if bad.size:
            raise ValueError(f"channel {int(bad[0])} is out of range: the layer has {k} "
                             f"feature maps, so channels must lie in [0, {k - 1}]")
        mask = np.zeros(k, bool)
        mask[arr] = True
        return jnp.asarray(mask)
    if channels.ndim != 1 or not jnp.issubdtype(channels.dtype, jnp.integer):
        raise TypeError(f"channels must be a 1-d int array, got {channels.dtype} "
                        f"{channels.shape}")
    return jnp.zeros(k, bool).at[channels].set(True)


_NEURONS = ("neurons must be a box (i0, j0, i1, j1) of feature-map rows i0 <= i < i1 and "
            "columns j0 <= j < j1, or a list of (i, j) positions")


def _neuron_mask(neurons, h: int, w: int) -> Array:
    if not is_concrete(neurons):
        ii, jj = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
        if neurons.shape == (4,):
            i0, j0, i1, j1 = neurons
            return (ii >= i0) & (ii < i1) & (jj >= j0) & (jj < j1)
        if neurons.ndim == 2 and neurons.shape[1] == 2:
            return jnp.zeros((h, w), bool).at[neurons[:, 0], neurons[:, 1]].set(True)
        raise ValueError(f"{_NEURONS}; got a traced array of shape {neurons.shape}")
    try:
        arr = np.asarray(neurons)
    except ValueError:  # ragged
        arr = np.asarray([], dtype=object)
    if arr.size == 0:
        raise ValueError("neurons is empty: give a box (i0, j0, i1, j1) or at least one "
                         "(i, j) position, or pass neurons=None for all of them")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer) or not (
            arr.shape == (4,) or (arr.ndim == 2 and arr.shape[1] == 2)):
        raise ValueError(f"{_NEURONS}; got {neurons!r}")
    if arr.shape == (4,):
        i0, j0, i1, j1 = (int(v) for v in arr)
        if not (0 <= i0 < i1 <= h and 0 <= j0 < j1 <= w):
            raise ValueError(f"the neuron box (i0, j0, i1, j1) = {(i0, j0, i1, j1)} is empty "
                             f"or outside the {h} x {w} feature map: it needs 0 <= i0 < i1 <= "
                             f"{h} and 0 <= j0 < j1 <= {w}")
        mask = np.zeros((h, w), bool)
        mask[i0:i1, j0:j1] = True
        return jnp.asarray(mask)
    bad = (arr[:, 0] < 0) | (arr[:, 0] >= h) | (arr[:, 1] < 0) | (arr[:, 1] >= w)
    if bad.any():
        raise ValueError(f"neuron position {tuple(int(v) for v in arr[bad][0])} is outside "
                         f"the {h} x {w} feature map (rows 0..{h - 1}, columns 0..{w - 1})")
    mask = np.zeros((h, w), bool)
    mask[arr[:, 0], arr[:, 1]] = True
    return jnp.asarray(mask)


def selection(split, x, channels=None, neurons=None) -> Selection | None:
    """The checked :class:`Selection` of ``channels`` and ``neurons`` (None: no selection).

    Args:
      channels: feature-map indices, e.g. ``[3, 17]``.
      neurons: a box ``(i0, j0, i1, j1)`` (a tuple of 4 ints: rows i0..i1-1, columns
        j0..j1-1, in feature-map coordinates) or a list of ``(i, j)`` positions.

    Raises:
      ValueError / TypeError: empty, out of range, or of the wrong shape, naming the
        layer's size.
    """
    if channels is None and neurons is None:
        return None
    _, h, w, k = split_shapes(split, x).activations.shape
    return Selection(None if channels is None else _channel_mask(channels, k),
                     None if neurons is None else _neuron_mask(neurons, h, w))

