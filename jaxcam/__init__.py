"""jaxcam: class activation maps as pure, jit-compiled JAX functions.

Split a network at a layer (:func:`jaxcam.models.load` or :class:`jaxcam.Split`), then
call a method ``f(split, x, target, *, options) -> maps``.
"""

from jaxcam import models as models
from jaxcam import viz as viz
from jaxcam._methods import cam as cam
from jaxcam._methods import grad_cam as grad_cam
from jaxcam._methods import grad_cam_pp as grad_cam_pp
from jaxcam._methods import guided_backprop as guided_backprop
from jaxcam._methods import guided_grad_cam as guided_grad_cam
from jaxcam._methods import smooth_grad_cam_pp as smooth_grad_cam_pp
from jaxcam._compare import DerivativeComparison as DerivativeComparison
from jaxcam._compare import compare_derivatives as compare_derivatives
from jaxcam._derivatives import pure_derivatives as pure_derivatives
from jaxcam._preprocess import Preprocess as Preprocess
from jaxcam._split import Split as Split
from jaxcam.models._layers import guided_relu as guided_relu

__version__ = "0.1.0"

__all__ = ["DerivativeComparison", "Preprocess", "Split", "cam", "compare_derivatives", "grad_cam", "grad_cam_pp", "guided_backprop",
           "guided_grad_cam", "guided_relu", "models", "pure_derivatives", "smooth_grad_cam_pp",
           "viz"]
