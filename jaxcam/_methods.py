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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam import _weighting as W
from jaxcam._derivatives import DERIVATIVES, cam_derivatives, head_gradient
from jaxcam._split import Split
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
    order = 3
    rectify = True

    def __call__(self, a, derivs):
        return W.grad_cam_pp_weights(a, *derivs, eps=self.eps)


@dataclasses.dataclass(frozen=True)
class _GradientCAM:
    """The whole pipeline of one gradient-weighted method, with its static options."""

    objective: Objective
    weighting: Any
    derivatives: str = "approx"
    counterfactual: bool = False
    upsample: bool = True
    normalize: bool = True

    def maps(self, split: Split, x: Array, classes: Array) -> Array:
        a = split.activations(x)
        derivs = cam_derivatives(split, a, self.objective, classes,
                                 order=self.weighting.order, mode=self.derivatives)
        if self.counterfactual:
            # Explaining a decrease: derivatives along -e_i, i.e. D_k -> (-1)^k D_k.
            derivs = tuple(d if k % 2 == 0 else -d for k, d in enumerate(derivs, start=1))
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
        def score(x):
            logits = split.guided(split.variables, x)
            c = self.objective.classes(jax.lax.stop_gradient(logits), classes)
            return jnp.sum(self.objective(logits, c))

        return jax.grad(score)(x)


@dataclasses.dataclass(frozen=True)
class _GuidedGradCAM:
    cam: _GradientCAM
    guided: _GuidedBackprop

    def __call__(self, split: Split, x: Array, classes: Array) -> Array:
        return self.cam(split, x, classes)[..., None] * self.guided(split, x, classes)


@functools.partial(jax.jit, static_argnums=0)
def _run(program, split: Split, x: Array, classes: Array) -> Array:
    return program(split, x, classes)


# --- input checks (only on concrete values: under a user's jit/vmap they are skipped)

def _check(split, x) -> Array:
    if not isinstance(split, Split):
        raise TypeError(f"expected a jaxcam.Split (from jaxcam.models.load or "
                        f"jaxcam.Split(...)), got {type(split).__name__}")
    if not isinstance(x, jax.core.Tracer):
        x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of preprocessed images (B, H, W, C); got shape "
                         f"{x.shape}. For one image use x[None].")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a float array of preprocessed images, got {x.dtype}; "
                         "apply split.preprocess(image) to uint8 photos first")
    if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x contains NaN or infinite values")
    return x


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(choices)}")


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
    program = _GradientCAM(objective, GradCAMWeights(), "approx", counterfactual, upsample,
                           normalize)
    return _run(program, split, x, classes)


def grad_cam_pp(split: Split, x: Array, target=None, *, link: str = "exp",
                derivatives: str = "approx", counterfactual: bool = False, eps: float = 0.0,
                upsample: bool = True, normalize: bool = True) -> Array:
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv 1710.11063).

    w_k = sum_ij alpha^k_ij ReLU(D1), alpha^k_ij = D2 / (2 D2 + (sum_ab A^k_ab) D3) (eq. 10),
    map = ReLU(sum_k w_k A^k), where D1, D2, D3 are the pure first, second and third
    derivatives of the score Y = link(S)_c in each activation A^k_ij.

    ``derivatives="approx"`` is the closed form (eq. 19) every other library computes:
    D_k = g^k with g = dY/dA, exact for the "exp" link on a piecewise-linear head
    (alpha = g^2 / (2 g^2 + (sum_ab A_ab) g^3); alpha = 0 where g = 0).

    Args:
      split, x, target, counterfactual, upsample, normalize: as :func:`grad_cam`.
      link: the paper's choice is "exp" (Y = exp(S)).
      derivatives: "approx" (closed form).
      eps: added to alpha's denominator (pytorch-grad-cam uses 1e-6; the paper none).

    Returns:
      Maps (B, H, W), or (B, h, w) with ``upsample=False``.
    """
    x = _check(split, x)
    _check_choice("derivatives", derivatives, DERIVATIVES)
    objective, classes = resolve(split, x, target, link)
    program = _GradientCAM(objective, GradCAMPPWeights(float(eps)), derivatives,
                           counterfactual, upsample, normalize)
    return _run(program, split, x, classes)


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
    program = _GradientCAM(objective, CAMWeights(), "approx", False, upsample, normalize)
    return _run(program, split, x, classes)


def _check_guided(split: Split) -> None:
    if split.guided is None:
        raise ValueError(
            "guided backpropagation needs the network's forward pass with guided ReLUs: "
            "build the split with Split(guided=f), where f(variables, x) -> logits runs the "
            "whole network with jaxcam.guided_relu in place of every ReLU (the zoo models "
            "provide it)")


def guided_backprop(split: Split, x: Array, target=None, *, link: str = "logit") -> Array:
    """Guided Backpropagation (Springenberg et al., 2015): dY/dx (B, H, W, C) through
    ReLUs that pass gradient only where both their input and the gradient are positive."""
    x = _check(split, x)
    _check_guided(split)
    objective, classes = resolve(split, x, target, link)
    return _run(_GuidedBackprop(objective), split, x, classes)


def guided_grad_cam(split: Split, x: Array, target=None, *, link: str = "logit",
                    counterfactual: bool = False) -> Array:
    """Guided Grad-CAM (Selvaraju et al., 2017): the upsampled, [0, 1]-scaled Grad-CAM map
    times the guided-backpropagation gradients, (B, H, W, C)."""
    x = _check(split, x)
    _check_guided(split)
    objective, classes = resolve(split, x, target, link)
    program = _GuidedGradCAM(
        _GradientCAM(objective, GradCAMWeights(), "approx", counterfactual, True, True),
        _GuidedBackprop(objective))
    return _run(program, split, x, classes)
