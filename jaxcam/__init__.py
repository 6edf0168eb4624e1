"""jaxcam: class activation maps as pure, jit-compiled JAX functions.

Split a network at a layer (:func:`jaxcam.models.load` or :class:`jaxcam.Split`), then
call a method ``f(split, x, target, *, options) -> maps``. Every method is registered by
name (:func:`available_methods`, :func:`method_info`); :func:`smoothed` adds noise
smoothing to any gradient method. The building blocks are public too:
:mod:`jaxcam.weighting` (the formulas on plain arrays), :mod:`jaxcam.derivatives` (the
derivative engines) and :mod:`jaxcam.chunking` (bounded-memory evaluation of many items).
:mod:`jaxcam.metrics` scores maps: faithfulness (average drop, deletion, insertion) and
localisation (pointing games).
"""

from jaxcam import batch as batch
from jaxcam import chunking as chunking
from jaxcam import derivatives as derivatives
from jaxcam import metrics as metrics
from jaxcam import models as models
from jaxcam import targets as targets
from jaxcam import viz as viz
from jaxcam import weighting as weighting
from jaxcam._compare import DerivativeComparison as DerivativeComparison
from jaxcam._compare import compare_derivatives as compare_derivatives
from jaxcam._compare import compare_maps as compare_maps
from jaxcam._derivatives import pure_derivatives as pure_derivatives
from jaxcam._devices import data_mesh as data_mesh
from jaxcam._devices import padded_size as padded_size
from jaxcam._devices import place as place
from jaxcam._devices import shard_batch as shard_batch
from jaxcam._explain import Augment as Augment
from jaxcam._explain import augmentations as augmentations
from jaxcam._methods import cam as cam
from jaxcam._methods import eigen_cam as eigen_cam
from jaxcam._methods import eigen_grad_cam as eigen_grad_cam
from jaxcam._methods import finer_cam as finer_cam
from jaxcam._methods import grad_cam as grad_cam
from jaxcam._methods import grad_cam_elementwise as grad_cam_elementwise
from jaxcam._methods import grad_cam_pp as grad_cam_pp
from jaxcam._methods import guided_backprop as guided_backprop
from jaxcam._methods import guided_grad_cam as guided_grad_cam
from jaxcam._methods import hires_cam as hires_cam
from jaxcam._methods import layer_cam as layer_cam
from jaxcam._methods import shapley_cam as shapley_cam
from jaxcam._methods import smooth_grad_cam_pp as smooth_grad_cam_pp
from jaxcam._methods import xgrad_cam as xgrad_cam
from jaxcam._perturbation import ablation_cam as ablation_cam
from jaxcam._perturbation import is_cam as is_cam
from jaxcam._perturbation import score_cam as score_cam
from jaxcam._perturbation import ss_cam as ss_cam
from jaxcam._preprocess import Preprocess as Preprocess
from jaxcam._registry import MethodInfo as MethodInfo
from jaxcam._registry import available_methods as available_methods
from jaxcam._registry import method_info as method_info
from jaxcam._registry import method_table as method_table
from jaxcam._registry import smoothed as smoothed
from jaxcam._modules import split_module as split_module
from jaxcam._split import Split as Split
from jaxcam._split import TokenGrid as TokenGrid
from jaxcam.models._layers import guided_relu as guided_relu

__version__ = "0.1.0"

__all__ = ["Augment", "DerivativeComparison", "MethodInfo", "Preprocess", "Split", "TokenGrid",
           "ablation_cam", "augmentations", "available_methods", "batch", "cam", "chunking",
           "compare_derivatives", "compare_maps", "data_mesh", "derivatives", "eigen_cam", "eigen_grad_cam", "finer_cam",
           "grad_cam", "grad_cam_elementwise", "grad_cam_pp", "guided_backprop",
           "guided_grad_cam", "guided_relu", "hires_cam", "is_cam", "layer_cam",
           "method_info", "method_table", "metrics", "models", "padded_size", "place", "pure_derivatives", "score_cam",
           "shard_batch", "shapley_cam", "smooth_grad_cam_pp", "smoothed", "split_module", "ss_cam",
           "targets", "viz",
           "weighting",
           "xgrad_cam"]
