"""The model zoo: VGG, ResNet and EfficientNet-Lite0 in Flax, split at any named layer."""

from jaxcam.models._registry import ModelInfo as ModelInfo
from jaxcam.models._registry import available as available
from jaxcam.models._registry import default_layer as default_layer
from jaxcam.models._registry import info as info
from jaxcam.models._registry import init_variables as init_variables
from jaxcam.models._registry import layers as layers
from jaxcam.models._registry import load as load
from jaxcam.models._registry import variable_shapes as variable_shapes

__all__ = ["ModelInfo", "available", "default_layer", "info", "init_variables", "layers",
           "load", "variable_shapes"]
