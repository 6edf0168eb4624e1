"""jaxcam: class activation maps as pure, jit-compiled JAX functions."""

from jaxcam import models as models
from jaxcam import viz as viz
from jaxcam._preprocess import Preprocess as Preprocess
from jaxcam._split import Split as Split

__version__ = "0.1.0"

__all__ = ["Preprocess", "Split", "models", "viz"]
