"""The gradient family: CAM, Grad-CAM, Grad-CAM++ (closed form and exact), Smooth
Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, the element-wise and eigen forms, ShapleyCAM,
FinerCAM, and noise smoothing of any of them.

Each method is one builder declared with :func:`jaxcam.register_method`, from which
``jaxcam.<name>(split, x, target=None, *, options) -> maps`` is derived. It runs as ONE
jit-compiled program (:func:`jaxcam.methods._pipeline.run`) from the input batch to the
(upsampled, normalised) maps:

1. A = features(x) (forward only), and the derivatives of the explained score Y in A,
   back through the head alone (:class:`jaxcam.methods._measures.HeadDerivatives`), optionally
   averaged over noisy copies of the input (:class:`jaxcam.methods._measures.NoiseSmoothed`);
2. the map from channel weights w = f(A, derivatives) (:mod:`jaxcam._weighting`):
   sum_k w_k A^k;
3. ReLU, bilinear upsampling to the input size, min-max scaling.

The variables, the target classes and the numeric options (``eps``, ``noise``) are traced
arguments, so changing them never recompiles; modes, orders and chunk sizes are static.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxcam import _weighting as W
from jaxcam._checks import check_choice, check_number, check_positive_int
from jaxcam._chunking import chunk_size as _chunk_size
from jaxcam._chunking import per_axis
from jaxcam._devices import method_mesh
from jaxcam.derivatives._engines import DERIVATIVES, ENGINES
from jaxcam.methods._explain import explain
from jaxcam.methods._measures import Activations, HeadDerivatives, NoiseSmoothed
from jaxcam.methods._pipeline import Built, Evidence, Finish, Program, check_key, selection
from jaxcam.methods._registry import MethodInfo, available_methods, method_info, register_method
from jaxcam._split import Split, split_shapes
from jaxcam.targets._objective import Contrast, resolve

Array = jax.Array


# --- how the evidence becomes a map: channel weights from (A, derivatives). Each declares
# the derivative order it needs; numeric options are traced fields.

@struct.dataclass
class GradCAMMap:
    """alpha_k A^k with alpha_k = (1/Z) sum_ij D1 (Grad-CAM)."""

    order = 1

    def __call__(self, ev: Evidence) -> Array:
        return W.channel_weighted(ev.a, W.grad_cam_weights(ev.derivs[0]))


@struct.dataclass
class CAMMap:
    """sum_k W[c, k] A^k of a global-average-pool + linear head, with W[c, k] read off as
    sum_ij dS/dA^k_ij (CAM)."""

    order = 1

    def __call__(self, ev: Evidence) -> Array:
        return W.channel_weighted(ev.a, W.cam_weights(ev.derivs[0]))


@struct.dataclass
class GradCAMPPMap:
    """sum_k w_k A^k with Grad-CAM++'s w_k = sum_ij alpha^k_ij ReLU(D1) (eqs. 5, 10)."""

    eps: Array | float = 0.0
    variant: str = struct.field(pytree_node=False, default="paper")
    order = 3

    def __call__(self, ev: Evidence) -> Array:
        return W.channel_weighted(ev.a, W.grad_cam_pp_weights(ev.a, *ev.derivs, eps=self.eps,
                                                              variant=self.variant))


@struct.dataclass
class TorchcamSmoothMap:
    """torch-cam 0.5.0's SmoothGradCAMpp: alpha from the mixed-index denominator on the
    clean A and the averaged g^2, g^3 (:func:`jaxcam.weighting.mixed_index_alphas`);
    ReLU(g) and the map's A from the LAST noisy copy."""

    eps: Array | float = 0.0
    order = 3

    def __call__(self, ev: Evidence) -> Array:
        alpha = W.mixed_index_alphas(ev.a, ev.derivs[1], ev.derivs[2], eps=self.eps)
        return W.channel_weighted(ev.last.a, W.pixel_weighted_sum(alpha, ev.last.derivs[0]))


@struct.dataclass
class XGradCAMMap:
    """w_k A^k with w_k = sum_ij (A^k_ij / (sum_ab A^k_ab + eps)) D1 (XGrad-CAM)."""

    eps: Array | float = 0.0
    order = 1

    def __call__(self, ev: Evidence) -> Array:
        return W.channel_weighted(ev.a, W.xgrad_cam_weights(ev.a, ev.derivs[0], eps=self.eps))


@struct.dataclass
class ElementwiseMap:
    """Element-wise weighted activations: "layer_cam" ReLU(D1) A (LayerCAM), "product"
    D1 A (HiResCAM, and EigenGrad-CAM's input to the projection), "rectified" ReLU(D1 A)
    (pytorch-grad-cam's GradCAMElementWise)."""

    rule: str = struct.field(pytree_node=False, default="product")
    order = 1

    def __call__(self, ev: Evidence) -> Array:
        d1 = ev.derivs[0]
        if self.rule == "layer_cam":
            return W.layer_cam_weights(d1) * ev.a
        if self.rule == "rectified":
            return jax.nn.relu(d1 * ev.a)
        return d1 * ev.a


@struct.dataclass
class ActivationsMap:
    """The activations themselves (Eigen-CAM projects them)."""

    order = 0

    def __call__(self, ev: Evidence) -> Array:
        return ev.a


@struct.dataclass
class ShapleyCAMMap:
    """w_k A^k with w_k = (1/Z) sum_ij (g - H A / 2) (ShapleyCAM); derivs = (g, H A)."""

    order = 1

    def __call__(self, ev: Evidence) -> Array:
        return W.channel_weighted(ev.a, W.shapley_cam_weights(*ev.derivs))


# --- the methods: each a builder, checked options -> Built (the program and its traced
# arguments), declared once with register_method; jaxcam.<name> is derived from it.

def _gradient_program(split, x, target, to_map, *, link: str, derivatives: str = "approx",
                      engine: str = "auto", chunk_size: int | None = None,
                      counterfactual: bool = False, channels=None, neurons=None,
                      rectify: bool = True, upsample: bool = True, normalize: bool = True,
                      hvp: bool = False, reduce: str = "sum") -> Built:
    check_choice("derivatives", derivatives, DERIVATIVES)
    check_choice("engine", engine, ENGINES)
    if engine == "linearised" and not split.piecewise_linear_head:
        raise ValueError("engine='linearised' is exact only for piecewise-linear heads "
                         "(split.piecewise_linear_head is False); use engine='generic'")
    objective, classes = resolve(split, x, target, link)
    measure = (Activations() if to_map.order == 0 else
               HeadDerivatives(objective, to_map.order, derivatives, engine, chunk_size, hvp))
    program = Program(measure, to_map, Finish(rectify, bool(upsample), bool(normalize)),
                      selection(split, x, channels, neurons), bool(counterfactual), reduce)
    return Built(program, classes)


@register_method(kind="gradient", needs=("gap_linear_head",), reference="Zhou et al., CVPR 2016",
                 summary="sum_k W[c, k] A^k with the linear layer's class weights",
                 peers=("torch-cam CAM",))
def build_cam(split, x, target=None, *, channels=None, neurons=None, upsample: bool = True,
              normalize: bool = True) -> Built:
    """CAM (Zhou et al., CVPR 2016): M^c = sum_k W[c, k] A^k.

    Only for heads made of global average pooling and one linear layer (the split of a
    ResNet at ``layer4``, EfficientNet-Lite0 at ``_swish``). W[c, k] is read off the head
    exactly as sum_ij dS^c/dA^k_ij. The map is not rectified (as the paper); with
    ``normalize`` it is min-max scaled.
    """
    if not split.gap_linear_head:
        raise ValueError(
            f"CAM needs a head of global average pooling + one linear layer, but the head "
            f"after layer {split.layer!r} is not (or is not declared so: "
            "Split(gap_linear_head=True)). Split a ResNet at 'layer4' or EfficientNet-Lite0 "
            "at '_swish', or use grad_cam, which works for any head.")
    return _gradient_program(split, x, target, CAMMap(), link="logit", channels=channels,
                             neurons=neurons, rectify=False, upsample=upsample,
                             normalize=normalize)


@register_method(kind="gradient", reference="Selvaraju et al., ICCV 2017",
                 summary="ReLU(sum_k mean_ij(dY/dA^k) A^k)",
                 peers=("pytorch-grad-cam GradCAM", "torch-cam GradCAM"))
def build_grad_cam(split, x, target=None, *, link: str = "logit", counterfactual: bool = False,
                   channels=None, neurons=None, upsample: bool = True,
                   normalize: bool = True) -> Built:
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv 1610.02391).

    alpha_k = (1/Z) sum_ij dY/dA^k_ij, map = ReLU(sum_k alpha_k A^k), with Y the target's
    score through ``link`` (the paper: the logit, before the softmax).

    Example::

        split = jaxcam.models.load("efficientnet_lite0")
        maps = jaxcam.grad_cam(split, x, target=282)
    """
    return _gradient_program(split, x, target, GradCAMMap(), link=link,
                             counterfactual=counterfactual, channels=channels,
                             neurons=neurons, upsample=upsample, normalize=normalize)


_GRAD_CAM_PP_HELP = {
    "link": '"exp" (the paper: Y = exp(S)), "softmax", "log_softmax" or "logit".',
    "variant": 'whose alpha (:func:`jaxcam.weighting.grad_cam_pp_alphas`): "paper" (eq. 10; '
               "pytorch-grad-cam 1.5.7 with ``eps=1e-6``), \"torchcam\" (what torch-cam "
               "0.5.0's GradCAMpp returns: alpha = D2) or \"renormalized\" (alpha over its "
               "per-channel sum, as the authors' TensorFlow code).",
    "eps": "added to alpha's denominator (pytorch-grad-cam: 1e-6; the paper: none; no "
           "effect with ``variant=\"torchcam\"``; traced).",
}


@register_method(kind="gradient", traced=("eps",), chunks=("directions",),
                 reference="Chattopadhyay et al., WACV 2018",
                 summary="pixel-weighted gradients, alpha from D2, D3: closed form or exact",
                 peers=("pytorch-grad-cam GradCAMPlusPlus", "torch-cam GradCAMpp"),
                 help=_GRAD_CAM_PP_HELP)
def build_grad_cam_pp(split, x, target=None, *, link: str = "exp", derivatives: str = "approx",
                      engine: str = "auto", chunk_size: int | dict | None = None,
                      variant: str = "paper", counterfactual: bool = False, eps: float = 0.0,
                      channels=None, neurons=None, upsample: bool = True,
                      normalize: bool = True) -> Built:
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

    Example::

        exact = jaxcam.grad_cam_pp(split, x, 282, link="softmax", derivatives="exact")
    """
    check_choice("variant", variant, W.GRAD_CAM_PP_VARIANTS)
    to_map = GradCAMPPMap(check_number("eps", eps), variant)
    built = _gradient_program(
        split, x, target, to_map, link=link, derivatives=derivatives, engine=engine,
        chunk_size=per_axis(chunk_size, ("directions",))["directions"],
        counterfactual=counterfactual, channels=channels, neurons=neurons, upsample=upsample,
        normalize=normalize)
    return built


def build_noise_smoothed(build: Callable, split, x, target=None, *, key, n_samples: int = 25,
                         noise=0.15, chunk_size=None, devices=None,
                         equal_weights: bool = False, keep_last: bool = False,
                         **options) -> Built:
    """``build``'s program with its head derivatives averaged over noisy copies:
    ``chunk_size``'s "samples" axis bounds the copies, its others go to ``build``."""
    key = check_key(key)
    n = check_positive_int("n_samples", n_samples)
    noise = check_number("noise", noise)
    inner = method_info(build).chunks
    sizes = per_axis(chunk_size, ("samples", *inner))
    if inner:
        options["chunk_size"] = {axis: sizes[axis] for axis in inner}
    built = build(split, x, target, **options)
    program, classes = built.program, built.classes
    if not isinstance(program, Program) or not isinstance(program.measure, HeadDerivatives):
        raise ValueError("noise smoothing averages head derivatives: it applies to gradient "
                         "methods (grad_cam, grad_cam_pp, ...), not to this one")
    mesh = method_mesh(devices)
    measure = NoiseSmoothed(program.measure, noise, n,
                            _chunk_size(n, sizes["samples"], 1 if mesh is None else mesh.size),
                            mesh, equal_weights, keep_last)
    return Built(program.replace(measure=measure), classes, key, mesh)


@register_method(kind="gradient", traced=("eps", "noise"), chunks=("samples", "directions"),
                 reference="Omeiza et al., 2019",
                 summary="Grad-CAM++ with D1, D2, D3 averaged over noisy copies of the input",
                 peers=("torch-cam SmoothGradCAMpp",),
                 help={**_GRAD_CAM_PP_HELP,
                       "variant": '"paper" or "renormalized" (as :func:`jaxcam.grad_cam_pp`, '
                                  'on the averages), or "torchcam" (torch-cam 0.5.0\'s '
                                  "SmoothGradCAMpp, described above)."})
def build_smooth_grad_cam_pp(split, x, target=None, *, key, n_samples: int = 25,
                             noise: float = 0.15, link: str = "exp",
                             derivatives: str = "approx", engine: str = "auto",
                             chunk_size: int | dict | None = None,
                             variant: str = "paper", counterfactual: bool = False,
                             eps: float = 0.0, channels=None, neurons=None,
                             upsample: bool = True, normalize: bool = True,
                             devices=None) -> Built:
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
    images of the batch, its position, ``chunk_size`` or the devices, whatever
    ``jax_threefry_partitionable`` is set to (the setting changes the draws themselves,
    as it does for every ``jax.random`` call). The copies go through the network
    ``chunk_size["samples"]`` at a time with ``vmap``, summed in a ``lax.scan``
    (:func:`jaxcam.chunking.chunked_sum`), so memory is bounded by the chunk. With
    ``devices``, the images of each chunk are split across those devices (data parallel
    over the samples, one all-reduce per chunk); the map is the same as on one device up
    to float rounding. On a CPU host, start JAX with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` to get N CPU devices.
    """
    check_choice("variant", variant, W.GRAD_CAM_PP_VARIANTS)
    torchcam = variant == "torchcam"
    built = build_noise_smoothed(
        build_grad_cam_pp, split, x, target, key=key, n_samples=n_samples, noise=noise,
        chunk_size=chunk_size, devices=devices, equal_weights=torchcam,
        keep_last=torchcam, variant=variant, eps=eps, link=link, derivatives=derivatives,
        engine=engine, counterfactual=counterfactual,
        channels=channels, neurons=neurons, upsample=upsample, normalize=normalize)
    if torchcam:
        to_map = TorchcamSmoothMap(built.program.to_map.eps)
        built = dataclasses.replace(built, program=built.program.replace(to_map=to_map))
    return built


@register_method(kind="gradient", traced=("eps",), reference="Fu et al., BMVC 2020",
                 summary="sum_k w_k A^k, w_k = sum_ij (A^k_ij / sum_ab A^k_ab) dY/dA^k_ij",
                 peers=("pytorch-grad-cam XGradCAM", "torch-cam XGradCAM"),
                 help={"eps": "added to each channel's sum (the paper: 0, a channel summing "
                              "to 0 weighs 0; pytorch-grad-cam 1.5.7: 1e-7; torch-cam "
                              "0.5.0: 1e-8; traced)."})
def build_xgrad_cam(split, x, target=None, *, link: str = "logit", eps: float = 0.0,
                    counterfactual: bool = False, channels=None, neurons=None,
                    upsample: bool = True, normalize: bool = True) -> Built:
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv 2008.02312).

    w_k = sum_ij (A^k_ij / (sum_ab A^k_ab + eps)) dY/dA^k_ij, map = ReLU(sum_k w_k A^k):
    Grad-CAM with each gradient weighted by its activation's share of the channel.

    Example::

        maps = jaxcam.xgrad_cam(split, x, 282)
    """
    return _gradient_program(split, x, target, XGradCAMMap(check_number("eps", eps)),
                             link=link, counterfactual=counterfactual, channels=channels,
                             neurons=neurons, upsample=upsample, normalize=normalize)


def _elementwise(split, x, target, rule: str, reduce: str = "sum", **options) -> Built:
    return _gradient_program(split, x, target, ElementwiseMap(rule), reduce=reduce, **options)


@register_method(kind="gradient", reference="Jiang et al., IEEE TIP 2021",
                 summary="ReLU(sum_k ReLU(dY/dA^k_ij) A^k_ij), element-wise",
                 peers=("pytorch-grad-cam LayerCAM", "torch-cam LayerCAM"))
def build_layer_cam(split, x, target=None, *, link: str = "logit", counterfactual: bool = False,
                    channels=None, neurons=None, upsample: bool = True,
                    normalize: bool = True) -> Built:
    """LayerCAM (Jiang et al., IEEE TIP 2021): map = ReLU(sum_k ReLU(dY/dA^k_ij) A^k_ij).

    Element-wise weights, so shallow layers give fine maps; fuse several with
    ``layers=[...], fuse="layercam"`` (each layer's map scaled by tanh(2 M / max M), then
    the element-wise maximum: the paper's eq. 9, as torch-cam 0.5.0's ``fuse_cams``).

    Example::

        maps = jaxcam.layer_cam(split, x, 282, layers=["layer2", "layer3", "layer4"],
                                fuse="layercam")
    """
    return _elementwise(split, x, target, "layer_cam", link=link, counterfactual=counterfactual,
                        channels=channels, neurons=neurons, upsample=upsample,
                        normalize=normalize)


@register_method(kind="gradient", reference="Draelos & Carin, 2020",
                 summary="ReLU(sum_k dY/dA^k_ij A^k_ij), element-wise",
                 peers=("pytorch-grad-cam HiResCAM",))
def build_hires_cam(split, x, target=None, *, link: str = "logit", counterfactual: bool = False,
                    channels=None, neurons=None, upsample: bool = True,
                    normalize: bool = True) -> Built:
    """HiResCAM (Draelos & Carin, 2020, arXiv 2011.08891): map = ReLU(sum_k dY/dA^k ⊙ A^k).

    The gradient multiplies each activation where it is, no spatial averaging: for a
    head that ends in global average pooling and one linear layer the map is exactly the
    class's contribution of every position (so it equals CAM there).
    """
    return _elementwise(split, x, target, "product", link=link, counterfactual=counterfactual,
                        channels=channels, neurons=neurons, upsample=upsample,
                        normalize=normalize)


@register_method(kind="gradient", reference="pytorch-grad-cam 1.5.7",
                 summary="ReLU(sum_k ReLU(dY/dA^k_ij A^k_ij))",
                 peers=("pytorch-grad-cam GradCAMElementWise",))
def build_grad_cam_elementwise(split, x, target=None, *, link: str = "logit",
                               counterfactual: bool = False, channels=None, neurons=None,
                               upsample: bool = True, normalize: bool = True) -> Built:
    """Grad-CAM element-wise (pytorch-grad-cam 1.5.7's GradCAMElementWise):
    map = ReLU(sum_k ReLU(dY/dA^k_ij A^k_ij)): HiResCAM with each product rectified."""
    return _elementwise(split, x, target, "rectified", link=link,
                        counterfactual=counterfactual, channels=channels, neurons=neurons,
                        upsample=upsample, normalize=normalize)


@register_method(kind="activation", reference="Muhammad & Yeasin, IJCNN 2020",
                 summary="first principal component of A (no gradients, no class)",
                 peers=("pytorch-grad-cam EigenCAM",))
def build_eigen_cam(split, x, target=None, *, channels=None, neurons=None, upsample: bool = True,
                    normalize: bool = True) -> Built:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv 2008.00299): the activations
    projected on their first principal component, ReLU-ed.

    No gradients and no class: ``target`` is accepted (for a uniform call) and ignored.
    The projection's sign is fixed so that the component's channel loadings sum to a
    non-negative value (:func:`jaxcam.weighting.first_component`); pytorch-grad-cam
    1.5.7's EigenCAM takes whichever sign LAPACK returns, so where the two differ its map
    is the ReLU of the negated projection. A selection zeroes the other activations
    before the decomposition.
    """
    return _gradient_program(split, x, target, ActivationsMap(), link="logit",
                             channels=channels, neurons=neurons, upsample=upsample,
                             normalize=normalize, reduce="eigen")


@register_method(kind="gradient", reference="pytorch-grad-cam 1.5.7",
                 summary="first principal component of dY/dA * A",
                 peers=("pytorch-grad-cam EigenGradCAM",))
def build_eigen_grad_cam(split, x, target=None, *, link: str = "logit",
                         counterfactual: bool = False, channels=None, neurons=None,
                         upsample: bool = True, normalize: bool = True) -> Built:
    """EigenGrad-CAM (pytorch-grad-cam 1.5.7): the first principal component of
    dY/dA ⊙ A, ReLU-ed, with :func:`jaxcam.eigen_cam`'s sign convention."""
    return _elementwise(split, x, target, "product", reduce="eigen", link=link,
                        counterfactual=counterfactual, channels=channels, neurons=neurons,
                        upsample=upsample, normalize=normalize)


@register_method(kind="gradient", reference="Cai, 2025 (arXiv 2501.06261)",
                 summary="sum_k mean_ij(g - H A / 2) A^k, exact Hessian-vector product, ReST",
                 peers=("pytorch-grad-cam ShapleyCAM",),
                 help={"link": '"rest" (default), "logit", "exp", "softmax" or "log_softmax".'})
def build_shapley_cam(split, x, target=None, *, link: str = "rest", channels=None,
                      neurons=None, upsample: bool = True, normalize: bool = True) -> Built:
    """ShapleyCAM (Cai, 2025, arXiv 2501.06261), as pytorch-grad-cam 1.5.7's ShapleyCAM.

    w_k = (1/Z) sum_ij (g - (1/2) H A)^k_ij, map = ReLU(sum_k w_k A^k), with g = dY/dA and
    H A the Hessian of Y in the activations applied to A: the second-order estimate of
    the score lost when the activations are removed. H A is exact: ``jax.jvp`` of the head
    gradient along A (forward-over-reverse), the same quantity pytorch-grad-cam gets by
    double backpropagation. On a piecewise-linear head with the logit, H = 0 and the map
    is Grad-CAM's; the default ``link="rest"`` is pytorch-grad-cam's ReST target
    (``ClassifierOutputReST``: S_c - CE(S, c) = S_c + log_softmax(S)_c), whose softmax
    part gives the curvature.
    """
    return _gradient_program(split, x, target, ShapleyCAMMap(), link=link, hvp=True,
                             channels=channels, neurons=neurons, upsample=upsample,
                             normalize=normalize)


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _finer_method(method) -> MethodInfo:
    """FinerCAM's method: a registered method whose map comes from head derivatives."""
    info = method_info(method)
    if info.name == "finer_cam" or info.kind != "gradient":
        raise ValueError(
            f"finer_cam runs a gradient method on its contrast score (one whose map comes "
            f"from the head's derivatives: {', '.join(_gradient_methods('finer_cam'))}); "
            f"{info.name!r} " + ("is finer_cam itself" if info.name == "finer_cam" else
                                 f"is {_a(info.kind)} method"))
    return info


@register_method(kind="gradient", traced=("alpha",), reference="Zhang et al., CVPR 2025",
                 summary="a gradient method on the target contrasted with its nearest classes",
                 peers=("pytorch-grad-cam FinerCAM",),
                 help={"target": "None (each image's predicted class), an int or an int "
                                 "array (B,): the class c.",
                       "comparisons": "the ranks of the compared classes by logit distance "
                                      "to c (1 = the most similar; pytorch-grad-cam: 1, 2, 3).",
                       "alpha": "the weight of the compared classes' logits (1: a pure "
                                "contrast; 0: c's own logit weighted by the others' "
                                "probabilities; traced).",
                       "method": 'the gradient method run on this score ("grad_cam", as '
                                 'pytorch-grad-cam, or "grad_cam_pp", "layer_cam", ...).'})
def build_finer_cam(split, x, target=None, *, comparisons=(1, 2, 3), alpha: float = 1.0,
                    method: str = "grad_cam", **options) -> Built:
    """FinerCAM (Zhang et al., CVPR 2025, arXiv 2501.11309), as pytorch-grad-cam 1.5.7's
    FinerCAM: ``method`` explaining the target class against its most similar classes.

    The score is sum_j p_j (S_c - alpha S_j) / (sum_j p_j + 1e-9) (``FinerWeightedTarget``)
    with p = softmax(S) (differentiated too) and j the classes ranked ``comparisons`` by
    |S_j - S_c| on the clean image (rank 0 is c itself; ties in the order of the class
    index). Chosen inside the compiled program, so a new target never recompiles.

    Example::

        maps = jaxcam.finer_cam(split, x, 282, comparisons=(1, 2))
    """
    if callable(target):
        raise ValueError("finer_cam builds its own objective from the target class: pass "
                         "None, an int or an int array (B,), not a callable")
    info = _finer_method(method)
    built = info.build(split, x, target, **options)      # checks the target and logits
    n = split_shapes(split, x).outputs.shape[-1]
    ranks = tuple(int(r) for r in np.atleast_1d(comparisons))
    if not ranks or any(r < 1 or r >= n for r in ranks):
        raise ValueError(f"comparisons must be ranks 1..{n - 1} of the classes nearest the "
                         f"target by logit distance (1 = the most similar; 0 is the target "
                         f"itself); got {comparisons!r}")
    program = built.program
    if not isinstance(program.measure, (HeadDerivatives, NoiseSmoothed)):
        raise ValueError(f"finer_cam needs head derivatives; {info.name!r} has none")
    measure = program.measure
    inner = measure.inner if isinstance(measure, NoiseSmoothed) else measure
    inner = inner.replace(objective=inner.objective.contrasted(ranks))
    measure = measure.replace(inner=inner) if isinstance(measure, NoiseSmoothed) else inner
    alpha = jnp.broadcast_to(jnp.asarray(check_number("alpha", alpha, nonneg=False),
                                         x.dtype), built.classes.shape)
    return dataclasses.replace(built, program=program.replace(measure=measure),
                               classes=Contrast(built.classes, alpha))


# --- noise smoothing of any gradient method

def _gradient_methods(excluding: str = "") -> list[str]:
    return [name for name in available_methods()
            if method_info(name).kind == "gradient" and name != excluding]


def smoothed(method: str | Callable) -> Callable:
    """Noise smoothing of a gradient method: the method with its head derivatives
    averaged over ``n_samples`` noisy copies of the input (the evidence is averaged, not
    the maps: D1 for Grad-CAM, D1..D3 for Grad-CAM++, as Smooth Grad-CAM++ does).

    The returned function takes the method's options plus ``key``, ``n_samples``,
    ``noise``, ``chunk_size`` (its "samples" axis, and the method's own) and ``devices``
    (:func:`jaxcam.smooth_grad_cam_pp`).

    Example::

        smooth_grad_cam = jaxcam.smoothed("grad_cam")
        maps = smooth_grad_cam(split, x, 282, key=jax.random.key(0), n_samples=16)

    Raises:
      ValueError: an unknown method, one that is not gradient-based (no head derivatives
        to average), or one that already draws noise (it takes a ``key``).
    """
    info = method_info(method)
    smoothable = [n for n in _gradient_methods() if "key" not in method_info(n).needs]
    if info.name not in smoothable:
        why = ("already averages over noisy copies (it takes a key)" if "key" in info.needs
               else f"is {_a(info.kind)} method, with no head derivatives to average")
        raise ValueError(f"noise smoothing averages head derivatives: it applies to "
                         f"{', '.join(smoothable)}; {info.name!r} {why}")
    return noise_smoothed(info.build, info.name)


def noise_smoothed(build: Callable, name: str) -> Callable:
    """The public noise-smoothed form of a gradient method given its builder."""

    @functools.wraps(build)
    def smoothed(split: Split, x: Array, target=None, *, key: Array, n_samples: int = 25,
                 noise: float = 0.15, chunk_size=None, devices=None,
                 **options) -> Array:
        return explain(functools.partial(build_noise_smoothed, build), split, x, target,
                       key=key, n_samples=n_samples, noise=noise, chunk_size=chunk_size,
                       devices=devices, **options)

    smoothed.__name__ = smoothed.__qualname__ = f"smooth_{name}"
    smoothed.__doc__ = (
        f"``{name}`` with its head derivatives averaged over ``n_samples`` noisy copies of "
        "the input (noise smoothing; see :func:`jaxcam.smoothed`).\n\n"
        f"Options: those of :func:`jaxcam.{name}`, and key, n_samples, noise, "
        "chunk_size and devices as :func:`jaxcam.smooth_grad_cam_pp`.")
    return smoothed
