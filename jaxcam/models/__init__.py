"""The model zoo: VGG, ResNet, EfficientNet-Lite0, ViT-B/16 and the shapes networks in Flax,
split at any named layer."""

from jaxcam.models._layers import depthwise as depthwise
from jaxcam.models._catalog import ModelInfo as ModelInfo
from jaxcam.models._catalog import available as available
from jaxcam.models._catalog import default_layer as default_layer
from jaxcam.models._catalog import info as info
from jaxcam.models._catalog import init_variables as init_variables
from jaxcam.models._catalog import layers as layers
from jaxcam.models._load import load as load
from jaxcam.models._catalog import variable_shapes as variable_shapes
from jaxcam.models._training import QUICK as QUICK
from jaxcam.models._training import TrainConfig as TrainConfig
from jaxcam.models._training import Trained as Trained
from jaxcam.models._training import preprocess_batch as preprocess_batch
from jaxcam.models._training import train_shapes as train_shapes
from jaxcam.models._cache import cache_dir as cache_dir
from jaxcam.models._weights import convert_checkpoint as convert_checkpoint
from jaxcam.models._weights import load_variables as load_variables
from jaxcam.models._weights import load_weights as load_weights
from jaxcam.models._weights import save_variables as save_variables

__all__ = ["QUICK", "ModelInfo", "TrainConfig", "Trained", "available", "cache_dir",
           "convert_checkpoint", "default_layer", "depthwise", "info", "init_variables",
           "layers", "load", "load_variables", "load_weights", "preprocess_batch",
           "save_variables", "train_shapes", "variable_shapes"]
