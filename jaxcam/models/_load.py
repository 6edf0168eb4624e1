"""``jaxcam.models.load``: a zoo model from the catalog, its weights resolved, split at a
layer."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from jaxcam.splitting._devices import replicate
from jaxcam.splitting._modules import split_module
from jaxcam.splitting._split import Split, TokenGrid
from jaxcam.models._catalog import ModelInfo, _unknown, info, init_variables, layers
from jaxcam.models._layers import (ACTIVATIONS, PIECEWISE_LINEAR_ACTIVATIONS, GlobalAvgPool,
                                   Linear, StagedNet, stage_index)
from jaxcam.models._weights import load_weights


@dataclasses.dataclass(frozen=True)
class _Stages:
    """Runs stages [start, stop) of a staged net: a hashable, pure ``f(variables, x)``."""

    net: StagedNet
    start: int
    stop: int | None
    activation: str = "relu"

    def __call__(self, variables, x):
        return self.net.apply(variables, x, self.start, self.stop, self.activation)


@dataclasses.dataclass(frozen=True)
class _Cut:
    """Re-splits a zoo model at another layer with the given variables (``Split.cut``)."""

    name: str
    activation: str

    def __call__(self, variables, layer: str) -> Split:
        return load(self.name, layer=layer, weights=variables, activation=self.activation)


def _resolve_weights(model: ModelInfo, weights: Any, seed: int):
    if isinstance(weights, Mapping):
        return weights
    if weights is None:
        weights = "pretrained" if model.pretrained is not None else "random"
    if weights == "random":
        return init_variables(model.name, seed)
    if weights == "pretrained":
        if model.pretrained is None:
            raise ValueError(
                f"{model.name} has no bundled weights: pass weights='path/to/checkpoint.pth' "
                "(a torchvision checkpoint) or a file converted with "
                "`python -m pretrained_ports convert`, or weights='random'")
        weights = model.pretrained()
    return load_weights(model.name, weights)


def _split_index(model: ModelInfo, layer) -> int:
    """The index of the stage named ``layer``, which must output a spatial map."""
    valid = layers(model.name)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str) of {model.name}, e.g. "
                        f"{model.default_layer!r}; got {type(layer).__name__}")
    index = (stage_index(model.stages, layer) if model.module is None
             else (valid.index(layer) if layer in valid else None))
    if index is None:
        raise _unknown(f"layer of {model.name}", layer, valid,
                       f"See jaxcam.models.layers({model.name!r}) for all {len(valid)}.")
    if layer not in valid:
        raise ValueError(
            f"layer {layer!r} of {model.name} is not spatial: it comes after global pooling "
            f"or flattening, so its output has no (h, w) map for a CAM to show. Split at a "
            f"spatial layer; the last ones are {', '.join(map(repr, valid[-3:]))} (the usual "
            f"target is {model.default_layer!r}).")
    return index


def load(name: str, *, layer: str | None = None,
         weights: str | os.PathLike | Mapping | None = None, activation: str | None = None,
         seed: int = 0) -> Split:
    """Loads a zoo model split at ``layer``.

    Args:
      name: a name from :func:`available`.
      layer: where to split (a name from :func:`layers`: a stage whose output is a
        spatial map); default :func:`default_layer`.
      weights: ``None`` for the model's default (the bundled ImageNet weights of
        ``efficientnet_lite0``, the cached trained weights of ``shapes-relu`` and
        ``shapes-smooth`` (see :func:`jaxcam.models.train_shapes`), seeded random
        variables otherwise), ``"random"``,
        ``"pretrained"``, a PyTorch checkpoint path (``.pth``; converted once and cached
        in ``$JAXCAM_CACHE`` or ``~/.cache/jaxcam``), a converted ``.msgpack`` file, or
        variables already loaded (``other_split.variables``: re-split at another layer).
      activation: the activation of the head (everything after the split); default the
        model's own (ReLU/ReLU6 for the ImageNet CNNs and ``shapes-relu``, GELU for
        ``shapes-smooth``). ``"relu"`` or a smooth ``"gelu"``, ``"silu"``,
        ``"softplus"``: on a network trained with ReLU the smooth ones are a study tool
        for exact higher-order derivatives.
      seed: seed of the random initialisation.

    Returns:
      A :class:`jaxcam.Split`.

    Example::

        split = jaxcam.models.load("resnet50", layer="layer4", weights="resnet50-0676ba61.pth")
    """
    model = info(name)
    layer = model.default_layer if layer is None else layer
    index = _split_index(model, layer)
    activation = model.activation if activation is None else activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    variables = replicate(_resolve_weights(model, weights, seed))  # on the device, once
    if model.module is not None:
        return _load_module(model, layer, variables, activation)
    head_stages = model.stages[index + 1:]
    piecewise_linear = (activation in PIECEWISE_LINEAR_ACTIVATIONS
                        or not any(s.activates for s in head_stages))
    return Split(
        variables=variables,
        features=_Stages(model.net, 0, index + 1, model.activation),
        head=_Stages(model.net, index + 1, None, activation),
        layer=layer,
        preprocess=model.preprocess,
        piecewise_linear_head=piecewise_linear,
        gap_linear_head=[type(s.op) for s in head_stages] == [GlobalAvgPool, Linear],
        guided=_Stages(model.net, 0, None, _guided(model.activation)),
        cut=_Cut(model.name, activation),
    )


def _guided(activation: str) -> str:
    """The activation of the guided-backpropagation pass: guided ReLU for a ReLU
    network; a smooth network has no rectifier to guide, so its pass is the plain one."""
    return "guided_relu" if activation == "relu" else activation


def _load_module(model: ModelInfo, layer: str, variables, activation: str) -> Split:
    """A module model split at ``layer`` by :func:`jaxcam.split_module`: token layers
    through a :class:`jaxcam.TokenGrid` that drops the class token (held fixed)."""
    if activation != "relu":
        raise ValueError(f"{model.name} runs its own activations (GELU): activation= "
                         "applies to the zoo's CNNs; leave it at 'relu'")
    tokens = dict(model.module_layers)[layer]
    split = split_module(model.module, variables, layer.replace(".", "/"),
                         reshape=TokenGrid(prefix=1) if tokens else None,
                         preprocess=model.preprocess)
    # no guided pass: the network has no ReLU to guide (GELU), and its plain gradient
    # passed off as guided backpropagation would be a silent substitute
    return split.replace(layer=layer, guided=None, cut=_Cut(model.name, activation))
