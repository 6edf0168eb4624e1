"""The model zoo: VGG, ResNet and EfficientNet-Lite0 in Flax, split at any named layer."""

from jaxcam.models._layers import depthwise as depthwise
from jaxcam.models._registry import ModelInfo as ModelInfo
from jaxcam.models._registry import available as available
from jaxcam.models._registry import default_layer as default_layer
from jaxcam.models._registry import info as info
from jaxcam.models._registry import init_variables as init_variables
from jaxcam.models._registry import layers as layers
from jaxcam.models._registry import load as load
from jaxcam.models._registry import variable_shapes as variable_shapes
from jaxcam.models._weights import cache_dir as cache_dir
from jaxcam.models._weights import convert_checkpoint as convert_checkpoint
from jaxcam.models._weights import load_variables as load_variables
from jaxcam.models._weights import load_weights as load_weights
from jaxcam.models._weights import save_variables as save_variables

__all__ = ["ModelInfo", "available", "cache_dir", "convert_checkpoint", "default_layer",
           "depthwise", "info", "init_variables", "layers", "load", "load_variables",
           "load_weights", "save_variables", "variable_shapes"]
