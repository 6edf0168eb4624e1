"""The eigen forms: the first principal component of the activations (Eigen-CAM), or of
the gradients times the activations (Eigen-Grad-CAM)."""

from __future__ import annotations

import jax
from flax import struct

from jaxcam.methods._gradient import elementwise, gradient_program
from jaxcam.methods._pipeline import Built, Evidence
from jaxcam.methods._registry import register_method

Array = jax.Array


@struct.dataclass
class ActivationsMap:
    """The activations themselves (Eigen-CAM projects them)."""

    order = 0

    def __call__(self, ev: Evidence) -> Array:
        return ev.a


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
    return gradient_program(split, x, target, ActivationsMap(), link="logit",
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
    return elementwise(split, x, target, "product", reduce="eigen", link=link,
                        counterfactual=counterfactual, channels=channels, neurons=neurons,
                        upsample=upsample, normalize=normalize)
