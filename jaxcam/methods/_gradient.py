"""The gradient family: CAM, Grad-CAM, Grad-CAM++ (closed form and exact), XGrad-CAM,
LayerCAM, HiResCAM, the element-wise form and ShapleyCAM. Noise smoothing (Smooth
Grad-CAM++ and :func:`jaxcam.smoothed`), the eigen forms and FinerCAM build on them
(:mod:`._smoothing`, :mod:`._eigen`, :mod:`._finer`).

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

import jax
from flax import struct

from jaxcam import _weighting as W
from jaxcam._checks import check_choice, check_number
from jaxcam._chunking import per_axis
from jaxcam.derivatives._engines import DERIVATIVES, ENGINES
from jaxcam.methods._measures import Activations, HeadDerivatives
from jaxcam.methods._pipeline import Built, Evidence, Finish, Program, selection
from jaxcam.methods._registry import register_method
from jaxcam.targets._objective import resolve

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
class ShapleyCAMMap:
    """w_k A^k with w_k = (1/Z) sum_ij (g - H A / 2) (ShapleyCAM); derivs = (g, H A)."""

    order = 1

    def __call__(self, ev: Evidence) -> Array:
        return W.channel_weighted(ev.a, W.shapley_cam_weights(*ev.derivs))


# --- the methods: each a builder, checked options -> Built (the program and its traced
# arguments), declared once with register_method; jaxcam.<name> is derived from it.

def gradient_program(split, x, target, to_map, *, link: str, derivatives: str = "approx",
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
    return gradient_program(split, x, target, CAMMap(), link="logit", channels=channels,
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
    return gradient_program(split, x, target, GradCAMMap(), link=link,
                             counterfactual=counterfactual, channels=channels,
                             neurons=neurons, upsample=upsample, normalize=normalize)


GRAD_CAM_PP_HELP = {
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
                 help=GRAD_CAM_PP_HELP)
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
    built = gradient_program(
        split, x, target, to_map, link=link, derivatives=derivatives, engine=engine,
        chunk_size=per_axis(chunk_size, ("directions",))["directions"],
        counterfactual=counterfactual, channels=channels, neurons=neurons, upsample=upsample,
        normalize=normalize)
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
    return gradient_program(split, x, target, XGradCAMMap(check_number("eps", eps)),
                             link=link, counterfactual=counterfactual, channels=channels,
                             neurons=neurons, upsample=upsample, normalize=normalize)


def elementwise(split, x, target, rule: str, reduce: str = "sum", **options) -> Built:
    return gradient_program(split, x, target, ElementwiseMap(rule), reduce=reduce, **options)


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
    return elementwise(split, x, target, "layer_cam", link=link, counterfactual=counterfactual,
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
    return elementwise(split, x, target, "product", link=link, counterfactual=counterfactual,
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
    return elementwise(split, x, target, "rectified", link=link,
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
    return gradient_program(split, x, target, ShapleyCAMMap(), link=link, hvp=True,
                             channels=channels, neurons=neurons, upsample=upsample,
                             normalize=normalize)
