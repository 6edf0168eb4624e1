"""Guided backpropagation and Guided Grad-CAM: input gradients (B, H, W, C) through the
network's guided ReLUs (``Split(guided=...)``), not maps at the cut."""

from __future__ import annotations

import jax
from flax import struct

from jaxcam.methods._gradient import build_grad_cam
from jaxcam.methods._pipeline import Built, Program
from jaxcam.methods._registry import register_method
from jaxcam.splitting._split import Split, check_guided
from jaxcam.targets._objective import Objective, resolve

Array = jax.Array


@struct.dataclass
class GuidedBackprop:
    """dY/dx through guided ReLUs: (B, H, W, C)."""

    objective: Objective = struct.field(pytree_node=False)

    def __call__(self, split: Split, x: Array, classes: Array, key=None) -> Array:
        logits, guided_vjp = jax.vjp(lambda x: split.guided(split.variables, x), x)
        logits = jax.lax.stop_gradient(logits)
        c = self.objective.classes(logits, classes)
        (g,) = guided_vjp(self.objective.gradient(logits, c))   # accurate in float32
        return g


@struct.dataclass
class GuidedGradCAM:
    """The Grad-CAM map times the guided gradients: (B, H, W, C)."""

    cam: Program
    guided: GuidedBackprop

    def __call__(self, split: Split, x: Array, classes: Array, key=None) -> Array:
        return self.cam(split, x, classes, key)[..., None] * self.guided(split, x, classes)


def _check_guided(split: Split, x: Array) -> None:
    if split.guided is None:
        raise ValueError(
            "guided backpropagation needs the network's forward pass with guided ReLUs: "
            "build the split with Split(guided=f), where f(variables, x) -> logits runs the "
            "whole network with jaxcam.guided_relu in place of every ReLU (the zoo's ReLU "
            "CNNs provide it; a network without ReLUs, such as ViT, has none)")
    check_guided(split, x)


@register_method(kind="guided", returns="input_gradients", needs=("guided",),
                 reference="Springenberg et al., ICLR-W 2015",
                 summary="dY/dx through ReLUs that pass only positive gradients",
                 peers=("pytorch-grad-cam GuidedBackpropReLUModel",))
def build_guided_backprop(split, x, target=None, *, link: str = "logit") -> Built:
    """Guided Backpropagation (Springenberg et al., 2015): dY/dx (B, H, W, C) through
    ReLUs that pass gradient only where both their input and the gradient are positive."""
    _check_guided(split, x)
    objective, classes = resolve(split, x, target, link)
    return Built(GuidedBackprop(objective), classes)


@register_method(kind="guided", returns="input_gradients", needs=("guided",),
                 reference="Selvaraju et al., ICCV 2017",
                 summary="the Grad-CAM map times the guided-backpropagation gradients")
def build_guided_grad_cam(split, x, target=None, *, link: str = "logit",
                          counterfactual: bool = False, channels=None, neurons=None) -> Built:
    """Guided Grad-CAM (Selvaraju et al., 2017): the upsampled, [0, 1]-scaled Grad-CAM map
    times the guided-backpropagation gradients, (B, H, W, C)."""
    _check_guided(split, x)
    built = build_grad_cam(split, x, target, link=link, counterfactual=counterfactual,
                           channels=channels, neurons=neurons)
    program = built.program
    return Built(GuidedGradCAM(program, GuidedBackprop(program.measure.objective)),
                 built.classes)
