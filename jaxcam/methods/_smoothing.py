"""Noise smoothing of any gradient method: its head derivatives averaged over noisy copies
of the input (:class:`jaxcam.methods._measures.NoiseSmoothed`). Smooth Grad-CAM++
(Omeiza et al., 2019) is Grad-CAM++ smoothed; :func:`smoothed` smooths any other."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
from flax import struct

from jaxcam import _weighting as W
from jaxcam._checks import check_choice, check_number, check_positive_int
from jaxcam._chunking import chunk_size as _chunk_size
from jaxcam._chunking import per_axis
from jaxcam.methods._explain import explain
from jaxcam.methods._gradient import GRAD_CAM_PP_HELP, build_grad_cam_pp
from jaxcam.methods._measures import HeadDerivatives, NoiseSmoothed
from jaxcam.methods._pipeline import Built, Evidence, Program, check_key
from jaxcam.methods._registry import available_methods, method_info, register_method
from jaxcam.splitting._devices import method_mesh
from jaxcam.splitting._split import Split

Array = jax.Array


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
                 help={**GRAD_CAM_PP_HELP,
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


def gradient_methods(excluding: str = "") -> list[str]:
    return [name for name in available_methods()
            if method_info(name).kind == "gradient" and name != excluding]


def a_or_an(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


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
    smoothable = [n for n in gradient_methods() if "key" not in method_info(n).needs]
    if info.name not in smoothable:
        why = ("already averages over noisy copies (it takes a key)" if "key" in info.needs
               else f"is {a_or_an(info.kind)} method, with no head derivatives to average")
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
