"""Gradient-weighted class activation maps: CAM, Grad-CAM, Grad-CAM++, guided variants.

Every method is ``f(split, x, target=None, *, options) -> maps`` and runs as ONE
jit-compiled program from the input batch to the (upsampled, normalised) maps:

1. A = features(x) (forward only),
2. the derivatives of the explained score Y in A, back through the head alone,
3. channel weights w = f(A, derivatives) (:mod:`jaxcam._weighting`),
4. map = ReLU(sum_k w_k A^k), bilinear upsampling to the input size, min-max scaling.

The variables and the target classes are traced arguments, so changing the class (or the
weights) never recompiles; options are static.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcam import _weighting as W
from jaxcam._checks import check_choice, check_finite_nonneg, check_positive_int
from jaxcam._derivatives import DERIVATIVES, ENGINES, cam_derivatives
from jaxcam._split import Split, check_guided, split_shapes
from jaxcam._targets import Objective, resolve

Array = jax.Array


# --- channel weightings: static, hashable (a new instance with the same options hits the
# jit cache), each declaring the derivative order it needs.

@dataclasses.dataclass(frozen=True)
class GradCAMWeights:
    order = 1
    rectify = True

    def __call__(self, a, derivs):
        return W.grad_cam_weights(derivs[0])


@dataclasses.dataclass(frozen=True)
class CAMWeights:
    """w_k = W[c, k] of a global-average-pool + linear head, read off as sum_ij dS/dA^k_ij."""

    order = 1
    rectify = False

    def __call__(self, a, derivs):
        return jnp.sum(derivs[0], axis=W.SPATIAL)


@dataclasses.dataclass(frozen=True)
class GradCAMPPWeights:
    eps: float = 0.0
    variant: str = "paper"
    order = 3
    rectify = True

    def __call__(self, a, derivs):
        return W.grad_cam_pp_weights(a, *derivs, eps=self.eps, variant=self.variant)


@dataclasses.dataclass(frozen=True)
class Derivatives:
    """How the derivatives of the score in A are computed (static)."""

    mode: str = "approx"
    engine: str = "auto"
    chunk_size: int | None = None

    def __call__(self, split, a, objective, classes, order):
        return cam_derivatives(split, a, objective, classes, order=order, mode=self.mode,
                               engine=self.engine, chunk_size=self.chunk_size)


def _counterfactual(derivs):
    # Explaining a decrease: derivatives along -e_i, i.e. D_k -> (-1)^k D_k.
    return tuple(d if k % 2 == 0 else -d for k, d in enumerate(derivs, start=1))


@dataclasses.dataclass(frozen=True)
class _GradientCAM:
    """The whole pipeline of one gradient-weighted method, with its static options."""

    objective: Objective
    weighting: Any
    derivatives: Derivatives = Derivatives()
    counterfactual: bool = False
    upsample: bool = True
    normalize: bool = True

    def maps(self, split: Split, x: Array, classes: Array) -> Array:
        a = split.activations(x)
        derivs = self.derivatives(split, a, self.objective, classes, self.weighting.order)
        if self.counterfactual:
            derivs = _counterfactual(derivs)
        weights = self.weighting(a, derivs)
        raw = W.channel_sum(a, weights)
        raw = jax.nn.relu(raw) if self.weighting.rectify else raw
        return _finish(raw, x.shape[1:3], self.upsample, self.normalize)

    __call__ = maps


def _finish(raw: Array, size, upsample: bool, normalize: bool) -> Array:
    maps = W.upsample(raw, size) if upsample else raw
    return W.normalize(maps) if normalize else maps


@dataclasses.dataclass(frozen=True)
class _GuidedBackprop:
    objective: Objective

    def __call__(self, split: Split, x: Array, classes: Array) -> Array:
        logits, guided_vjp = jax.vjp(lambda x: split.guided(split.variables, x), x)
        logits = jax.lax.stop_gradient(logits)
        c = self.objective.classes(logits, classes)
        (g,) = guided_vjp(self.objective.gradient(logits, c))   # accurate in float32
        return g


@dataclasses.dataclass(frozen=True)
class _GuidedGradCAM:
    cam: _GradientCAM
    guided: _GuidedBackprop

    def __call__(self, split: Split, x: Array, classes: Array) -> Array:
        return self.cam(split, x, classes)[..., None] * self.guided(split, x, classes)


@functools.partial(jax.jit, static_argnums=0)
def _run(program, split: Split, x: Array, classes: Array) -> Array:
    return program(split, x, classes)


# --- input checks. Shapes are static, so the shape checks run under a caller's jit or
# vmap too; the checks of values (finite x, class range) need concrete arrays and are
# skipped for traced ones.

def _check(split, x) -> Array:
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
    if not isinstance(x, jax.core.Tracer):
        # Evaluated now, on x's device, also inside a caller's jit (a closed-over x).
        with jax.ensure_compile_time_eval():
            finite = bool(jnp.all(jnp.isfinite(x)))
        if not finite:
            raise ValueError("x contains NaN or infinite values")
    split_shapes(split, x)
    return x


def _optional_positive_int(name: str, value) -> int | None:
    return None if value is None else check_positive_int(name, value)


def _check_key(key) -> Array:
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


# --- public API

def grad_cam(split: Split, x: Array, target=None, *, link: str = "logit",
             counterfactual: bool = False, upsample: bool = True,
             normalize: bool = True) -> Array:
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv 1610.02391).

    alpha_k = (1/Z) sum_ij dY/dA^k_ij, map = ReLU(sum_k alpha_k A^k), with Y the target's
    score through ``link`` (the paper: the logit, before the softmax).

    Args:
      split: the model split at the target layer (:func:`jaxcam.models.load`).
      x: preprocessed images (B, H, W, C).
      target: None (each image's predicted class), an int, an int array (B,), or a
        callable ``logits (B, C) -> scores (B,)``.
      link: "logit", "exp", "softmax" or "log_softmax": the function of the logits whose
        derivatives are used.
      counterfactual: explain what lowers the score (negated gradients).
      upsample: bilinearly resize the maps to the input's (H, W).
      normalize: min-max scale each map to [0, 1] (an all-zero map stays zero).

    Returns:
      Maps (B, H, W), or (B, h, w) at the layer's resolution with ``upsample=False``.

    Example::

        split = jaxcam.models.load("efficientnet_lite0")
        maps = jaxcam.grad_cam(split, x, target=282)
    """
    x = _check(split, x)
    objective, classes = resolve(split, x, target, link)
    program = _GradientCAM(objective, GradCAMWeights(), Derivatives(), counterfactual,
                           upsample, normalize)
    return _run(program, split, x, classes)


def grad_cam_pp(split: Split, x: Array, target=None, *, link: str = "exp",
                derivatives: str = "approx", engine: str = "auto",
                chunk_size: int | None = None, variant: str = "paper",
                counterfactual: bool = False, eps: float = 0.0, upsample: bool = True,
                normalize: bool = True) -> Array:
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv 1710.11063), exact or closed form.

    w_k = sum_ij alpha^k_ij ReLU(D1), alpha^k_ij = D2 / (2 D2 + (sum_ab A^k_ab) D3) (eq. 10),
    map = ReLU(sum_k w_k A^k), where D1, D2, D3 are the pure first, second and third
    derivatives of the score Y = link(S)_c in each activation A^k_ij.

    ``derivatives="approx"`` is the closed form (eq. 19) every other library computes:
    D_k = g^k with g = dY/dA, exact for the "exp" link on a piecewise-linear head
    (alpha = g^2 / (2 g^2 + (sum_ab A_ab) g^3); alpha = 0 where g = 0).
    ``derivatives="exact"`` computes the true pure derivatives (see
    :func:`jaxcam.pure_derivatives`). They differ from the closed form for the
    "softmax" and "log_softmax" links and for smooth heads. With the "logit" link on a
    piecewise-linear head the exact D2 = D3 = 0, eq. 10 is 0/0, alpha is set to 0 and
    the map is zero; a warning says so.

    Float32: the "softmax" and "log_softmax" derivatives are computed from central moments
    of the logit Jacobian and from sums of the other classes' probabilities (never
    1 - p_c as a difference), in both engines, so float32 maps keep small relative error
    as the prediction becomes confident, and are exactly zero (never rescaled rounding
    noise) where the true derivatives underflow.

    Kinks: activations exactly on a kink of a piecewise-linear head (tied in a max-pool
    window, e.g. an all-zero window of post-ReLU activations; at a ReLU threshold) have
    no pure derivative; both forms then use JAX's tie-break (see
    :func:`jaxcam.pure_derivatives`), and :func:`jaxcam.compare_derivatives` reports how
    many there are.

    Args:
      split, x, target, counterfactual, upsample, normalize: as :func:`grad_cam`.
      link: "exp" (the paper: Y = exp(S)), "softmax", "log_softmax" or "logit".
      derivatives: "approx" (closed form) or "exact".
      engine: exact derivatives by the "linearised" engine (piecewise-linear heads), the
        "generic" one (any head; one Taylor expansion per activation), or "auto"
        (linearised when ``split.piecewise_linear_head``).
      chunk_size: activations (directions) handled together by the exact engines;
        bounds their memory.
      variant: whose formula for alpha (:func:`jaxcam._weighting.grad_cam_pp_alphas`):
        "paper" (eq. 10; pytorch-grad-cam 1.5.7's GradCAMPlusPlus with ``eps=1e-6``),
        "torchcam" (what torch-cam 0.5.0's GradCAMpp returns: alpha = D2, weights
        sum_ij g^2 ReLU(g); its code means to divide by a mixed-index denominator but
        divides a copy), or "renormalized" (alpha divided by its per-channel sum, as the
        authors' TensorFlow code and tf-keras-vis).
      eps: added to alpha's denominator (pytorch-grad-cam uses 1e-6; the paper none;
        no effect with ``variant="torchcam"``, which has no denominator).

    Returns:
      Maps (B, H, W), or (B, h, w) with ``upsample=False``.

    Example::

        exact = jaxcam.grad_cam_pp(split, x, 282, link="softmax", derivatives="exact")
    """
    x = _check(split, x)
    objective, classes, weighting, derivs = _grad_cam_pp_options(
        split, x, target, link, derivatives, engine, chunk_size, variant, eps)
    program = _GradientCAM(objective, weighting, derivs, counterfactual, upsample, normalize)
    return _run(program, split, x, classes)


_WARNED_ZERO_CURVATURE: set = set()


def _grad_cam_pp_options(split, x, target, link, derivatives, engine, chunk_size, variant,
                         eps):
    """Checks Grad-CAM++'s options; returns (objective, classes, weighting, derivatives)."""
    check_choice("derivatives", derivatives, DERIVATIVES)
    check_choice("engine", engine, ENGINES)
    check_choice("variant", variant, W.VARIANTS)
    chunk_size = _optional_positive_int("chunk_size", chunk_size)
    eps = check_finite_nonneg("eps", eps)
    if engine == "linearised" and not split.piecewise_linear_head:
        raise ValueError("engine='linearised' is exact only for piecewise-linear heads "
                         "(split.piecewise_linear_head is False); use engine='generic'")
    objective, classes = resolve(split, x, target, link)
    if (derivatives == "exact" and link == "logit" and objective.fn is None
            and split.piecewise_linear_head):
        key = (split.layer, link)
        if key not in _WARNED_ZERO_CURVATURE:
            _WARNED_ZERO_CURVATURE.add(key)
            warnings.warn(
                "exact Grad-CAM++ with link='logit' on a piecewise-linear head: the logit "
                "is linear in the activations almost everywhere, so D2 = D3 = 0, eq. 10 is "
                "0/0 and the maps are zero. The exact form is meaningful with link='exp' "
                "(equal to the closed form there), link='softmax' or 'log_softmax', or a "
                "smooth head (jaxcam.models.load(..., activation='gelu')).",
                UserWarning, stacklevel=3)
    weighting = GradCAMPPWeights(eps, variant)
    derivs = Derivatives(derivatives, engine, chunk_size)
    return objective, classes, weighting, derivs


def cam(split: Split, x: Array, target=None, *, upsample: bool = True,
        normalize: bool = True) -> Array:
    """CAM (Zhou et al., CVPR 2016): M^c = sum_k W[c, k] A^k.

    Only for heads made of global average pooling and one linear layer (the split of a
    ResNet at ``layer4``, EfficientNet-Lite0 at ``_swish``). W[c, k] is read off the head
    exactly as sum_ij dS^c/dA^k_ij. The map is not rectified (as the paper); with
    ``normalize`` it is min-max scaled.
    """
    x = _check(split, x)
    if not split.gap_linear_head:
        raise ValueError(
            f"CAM needs a head of global average pooling + one linear layer, but the head "
            f"after layer {split.layer!r} is not (or is not declared so: "
            "Split(gap_linear_head=True)). Split a ResNet at 'layer4' or EfficientNet-Lite0 "
            "at '_swish', or use grad_cam, which works for any head.")
    objective, classes = resolve(split, x, target, "logit")
    program = _GradientCAM(objective, CAMWeights(), Derivatives(), False, upsample, normalize)
    return _run(program, split, x, classes)


def _check_guided(split: Split, x: Array) -> None:
    if split.guided is None:
        raise ValueError(
            "guided backpropagation needs the network's forward pass with guided ReLUs: "
            "build the split with Split(guided=f), where f(variables, x) -> logits runs the "
            "whole network with jaxcam.guided_relu in place of every ReLU (the zoo models "
            "provide it)")
    check_guided(split, x)


def guided_backprop(split: Split, x: Array, target=None, *, link: str = "logit") -> Array:
    """Guided Backpropagation (Springenberg et al., 2015): dY/dx (B, H, W, C) through
    ReLUs that pass gradient only where both their input and the gradient are positive."""
    x = _check(split, x)
    _check_guided(split, x)
    objective, classes = resolve(split, x, target, link)
    return _run(_GuidedBackprop(objective), split, x, classes)


def guided_grad_cam(split: Split, x: Array, target=None, *, link: str = "logit",
                    counterfactual: bool = False) -> Array:
    """Guided Grad-CAM (Selvaraju et al., 2017): the upsampled, [0, 1]-scaled Grad-CAM map
    times the guided-backpropagation gradients, (B, H, W, C)."""
    x = _check(split, x)
    _check_guided(split, x)
    objective, classes = resolve(split, x, target, link)
    program = _GuidedGradCAM(
        _GradientCAM(objective, GradCAMWeights(), Derivatives(), counterfactual, True, True),
        _GuidedBackprop(objective))
    return _run(program, split, x, classes)


@dataclasses.dataclass(frozen=True)
class _SmoothGradCAMPP:
    """Smooth Grad-CAM++: D1, D2, D3 averaged over noisy copies of the input."""

    objective: Objective
    weighting: GradCAMPPWeights
    derivatives: Derivatives
    n_samples: int
    noise: float
    sample_chunk: int
    counterfactual: bool = False
    upsample: bool = True
    normalize: bool = True
    mesh: Mesh | None = None          # the copies of a chunk are split along its "samples"

    def __call__(self, split: Split, x: Array, classes: Array, key: Array) -> Array:
        # Copy 0 is the clean image (its activations enter the sums, and the class is fixed
        # on it, so every noisy copy explains the same one); copies 1..n are noisy. All go
        # through the trunk in the same chunks, so the clean forward pass costs no extra
        # step and is split across devices like the others.
        n, chunk, order = self.n_samples, self.sample_chunk, self.weighting.order
        steps = -(-(n + 1) // chunk)
        index = jnp.arange(steps * chunk)
        # Copy i draws with key i - 1 of exactly n keys: splitting more (the padded count)
        # gives other keys when jax_threefry_partitionable is off. Padding reuses a key.
        keys = jax.random.split(key, n)[jnp.clip(index - 1, 0, n - 1)]
        used = (index >= 1) & (index <= n)
        span = (jnp.max(x, axis=(1, 2, 3), keepdims=True)
                - jnp.min(x, axis=(1, 2, 3), keepdims=True))
        sigma = self.noise * span
        objective = dataclasses.replace(self.objective, predicted=False)

        def copies(keys, noisy):                              # (chunk, B, H, W, C)
            # One image's noise per key, shared by the batch (each image scales it by its
            # own sigma): a map does not depend on the other images of the batch.
            noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
            noise = jnp.where(noisy[:, None, None, None, None],
                              sigma[None] * noise[:, None], 0.0)
            out = x[None] + noise
            if self.mesh is not None:
                out = jax.lax.with_sharding_constraint(
                    out, NamedSharding(self.mesh, PartitionSpec("samples")))
            return out

        def copy_weights(a_i, used_i, classes_i, top):
            """Weights (chunk, B) of the copies relative to exp(top), the new top (B,) and
            the factor (B,) that rescales the sums so far to it. The log factors keep the
            exp link's exp(S) proportions between copies (zero for other links: equal
            weights); torch-cam weights its copies equally."""
            if self.weighting.variant == "torchcam":
                log_f = jnp.zeros(used_i.shape + top.shape, x.dtype)
            else:
                logits = jax.vmap(split.logits_from)(a_i)              # (chunk, B, C)
                log_f = jax.vmap(lambda s: self.objective.log_factor(s, classes_i))(logits)
            log_f = jnp.where(used_i[:, None], log_f, -jnp.inf)
            new_top = jnp.maximum(top, jnp.max(log_f, axis=0))
            safe = jnp.where(jnp.isfinite(new_top), new_top, 0.0)
            return jnp.exp(log_f - safe[None]), new_top, jnp.exp(top - safe)

        def accumulate(carry, step):
            totals, lasts, a_clean, top = carry
            index_i, keys_i, used_i = step
            a_i = jax.vmap(split.activations)(copies(keys_i, index_i >= 1))  # (chunk, B, ..)
            a_clean = jnp.where(index_i[0] == 0, a_i[0], a_clean)
            classes_i = self.objective.classes(split.logits_from(a_clean), classes)
            derivs = jax.vmap(
                lambda a: self.derivatives(split, a, objective, classes_i, order))(a_i)
            weights, top, rescale = copy_weights(a_i, used_i, classes_i, top)
            weights = weights[:, :, None, None, None]
            totals = tuple(t * rescale[:, None, None, None] + jnp.sum(d * weights, axis=0)
                           for t, d in zip(totals, derivs))
            last = jnp.max(jnp.where(used_i, jnp.arange(chunk), -1))
            lasts = tuple(jnp.where(last >= 0, v[last], old)
                          for v, old in zip((derivs[0], a_i), lasts))
            return (totals, lasts, a_clean, top), None

        a_shape = jax.eval_shape(split.activations, x)
        zeros = jnp.zeros(a_shape.shape, a_shape.dtype)
        top = jnp.full(x.shape[:1], -jnp.inf, x.dtype)
        carry = ((zeros,) * order, (zeros, zeros), zeros, top)
        scanned = (index.reshape(steps, chunk), keys.reshape(steps, chunk),
                   used.reshape(steps, chunk))
        (totals, (last_d1, last_a), a, _), _ = jax.lax.scan(accumulate, carry, scanned)
        means = tuple(t / n for t in totals)
        torchcam = self.weighting.variant == "torchcam"
        # torch-cam averages g^2 and g^3 but takes ReLU(g) from the last noisy pass.
        derivs = (last_d1, *means[1:]) if torchcam else means
        if self.counterfactual:
            derivs = _counterfactual(derivs)
        if torchcam:
            # alpha's denominator sums the clean A times mean g^3 (mixed indices); the map
            # weighs the last noisy pass's A.
            alpha = W.mixed_index_alphas(a, derivs[1], derivs[2], eps=self.weighting.eps)
            weights, a = W.pixel_weighted_sum(alpha, derivs[0]), last_a
        else:
            weights = self.weighting(a, derivs)
        raw = jax.nn.relu(W.channel_sum(a, weights))
        return _finish(raw, x.shape[1:3], self.upsample, self.normalize)


def default_sample_chunk(n_samples: int, most: int = 8) -> int:
    """Near-equal chunks of at most ``most`` noisy copies (fewer padded copies than chunks)."""
    return -(-n_samples // -(-n_samples // most))


def _sample_mesh(devices) -> Mesh | None:
    if devices is None:
        return None
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError("devices must be a non-empty sequence of jax devices, e.g. "
                        f"devices=jax.devices(); got {devices!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices lists a device more than once: {devices}")
    return Mesh(np.array(devices), ("samples",))


def _sample_chunk(n_samples: int, sample_chunk: int | None, n_devices: int) -> int:
    """Images per scan step (the clean image and the n noisy copies: n + 1 in all), a
    multiple of the device count. ``sample_chunk >= n`` means all of them in one step."""
    per_device = -(-(n_samples + 1) // n_devices)
    if sample_chunk is None:
        return n_devices * default_sample_chunk(per_device)
    if sample_chunk >= n_samples:
        return n_devices * per_device
    return n_devices * min(-(-sample_chunk // n_devices), per_device)


@functools.partial(jax.jit, static_argnums=0)
def _run_keyed(program, split: Split, x: Array, classes: Array, key: Array) -> Array:
    return program(split, x, classes, key)


def smooth_grad_cam_pp(split: Split, x: Array, target=None, *, key: Array,
                       n_samples: int = 25, noise: float = 0.15, link: str = "exp",
                       derivatives: str = "approx", engine: str = "auto",
                       chunk_size: int | None = None, sample_chunk: int | None = None,
                       variant: str = "paper", counterfactual: bool = False, eps: float = 0.0,
                       upsample: bool = True, normalize: bool = True,
                       devices=None) -> Array:
    """Smooth Grad-CAM++ (Omeiza et al., 2019, arXiv 1908.01224).

    For n noisy copies x + N(0, sigma^2) with sigma = noise * (max(x) - min(x)) per image
    (the SmoothGrad convention; the paper's default spread is 0.15), the pure derivatives
    D1, D2, D3 of the score in the noisy activations are each averaged over the copies,
    then eq. 10 gives alpha and eq. 5 the weights. With the "exp" link the average keeps
    the true exp(S) proportions: copy i enters with D_k = exp(S_i) g_i^k (up to one
    common factor per image, which cancels in alpha), so a copy the noise makes more
    confident weighs more.

    Which activations enter the sums: the CLEAN image's A, in sum_ab A^k_ab of alpha's
    denominator and in the map sum_k w_k A^k. The noise smooths the derivatives (the
    gradient's sensitivity to tiny input changes); the map should show where the features
    of the actual image are, as in the paper's description.

    ``variant="paper"`` and ``"renormalized"`` apply their alpha (:func:`grad_cam_pp`) to
    these averages. ``variant="torchcam"`` reproduces torch-cam 0.5.0's SmoothGradCAMpp
    (with the default closed form and "exp" link, whose D_k at each copy is g^k of the
    logit): w_k = sum_ij alpha^k_ij ReLU(g_n), alpha = m2 / (2 m2 + sum_ab A_ab m3_ab +
    eps), with m2, m3 the means of g^2 and g^3 over the noisy passes with equal weights,
    A in the denominator the clean image's activations (note the mixed indices), and g_n
    and the map's A those of the LAST noisy pass; pass ``eps=1e-8`` for its constant.
    torch-cam explains the class its caller names, on every pass; its noise has an
    absolute standard deviation (0.3, with 4 samples, by default): for one image x,
    ``noise=std / (x.max() - x.min())`` draws from the same distribution.

    The target class is fixed on the clean image. The noisy copies come from ``key``
    alone, and each image's from its own values: copy i (1..n) of every image adds
    sigma * ``jax.random.normal(jax.random.split(key, n)[i - 1], x.shape[1:])``, that
    image's sigma times one standard-normal draw of one image's shape. So a map depends
    on its image, target, key and options only (up to float rounding), not on the other
    images of the batch, its position, ``sample_chunk`` or the devices, whatever
    ``jax_threefry_partitionable`` is set to (the setting changes the draws themselves,
    as it does for every ``jax.random`` call). The clean image and the copies go
    through the network ``sample_chunk`` at a time with ``vmap``, summed in a
    ``lax.scan``, so memory is bounded by the chunk. With
    ``devices``, the images of each chunk are split across those devices (data parallel
    over the samples, one all-reduce per chunk); the map is the same as on one device up
    to float rounding.

    Args:
      key: a ``jax.random`` key: typed (``jax.random.key(seed)``) or legacy
        (``jax.random.PRNGKey(seed)``); the same seed gives the same map either way.
      n_samples: the number of noisy copies (>= 1).
      noise: the noise spread relative to each image's value range (>= 0).
      sample_chunk: images evaluated together, the clean one counted (default: near-equal
        chunks of at most 8 per device; ``n_samples`` or more: all n + 1 at once); rounded
        up to a multiple of the device count.
      devices: devices to split the noisy copies across, e.g. ``jax.devices()`` (on a CPU
        host, start JAX with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` to get
        N CPU devices). Default: the default device alone.
      Others: as :func:`grad_cam_pp`.

    Returns:
      Maps (B, H, W), or (B, h, w) with ``upsample=False``.
    """
    x = _check(split, x)
    key = _check_key(key)
    n = check_positive_int("n_samples", n_samples)
    noise = check_finite_nonneg("noise", noise)
    sample_chunk = _optional_positive_int("sample_chunk", sample_chunk)
    objective, classes, weighting, derivs = _grad_cam_pp_options(
        split, x, target, link, derivatives, engine, chunk_size, variant, eps)
    mesh = _sample_mesh(devices)
    chunk = _sample_chunk(n, sample_chunk, 1 if mesh is None else mesh.size)
    program = _SmoothGradCAMPP(objective, weighting, derivs, n, noise, chunk,
                               counterfactual, upsample, normalize, mesh)
    if mesh is not None:
        split, x, classes, key = jax.device_put((split, x, classes, key),
                                                NamedSharding(mesh, PartitionSpec()))
    return _run_keyed(program, split, x, classes, key)
