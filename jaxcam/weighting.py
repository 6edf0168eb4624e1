"""The formulas of the CAM family on plain arrays (model-free): channel weights, Grad-CAM++
coefficients, element-wise weights, the first principal component, maps, upsampling and
normalisation.

Every function takes activations ``a`` (..., h, w, K) and derivatives of the explained
score shaped like them, so each formula can be checked on a hand-made example.
"""

from jaxcam._weighting import SPATIAL as SPATIAL
from jaxcam._weighting import GRAD_CAM_PP_VARIANTS as GRAD_CAM_PP_VARIANTS
from jaxcam._weighting import ablation_weights as ablation_weights
from jaxcam._weighting import cam_weights as cam_weights
from jaxcam._weighting import channel_sum as channel_sum
from jaxcam._weighting import channel_weighted as channel_weighted
from jaxcam._weighting import first_component as first_component
from jaxcam._weighting import grad_cam_pp_alphas as grad_cam_pp_alphas
from jaxcam._weighting import grad_cam_pp_weights as grad_cam_pp_weights
from jaxcam._weighting import grad_cam_weights as grad_cam_weights
from jaxcam._weighting import layer_cam_weights as layer_cam_weights
from jaxcam._weighting import mixed_index_alphas as mixed_index_alphas
from jaxcam._weighting import normalize as normalize
from jaxcam._weighting import pixel_weighted_sum as pixel_weighted_sum
from jaxcam._weighting import shapley_cam_weights as shapley_cam_weights
from jaxcam._weighting import upsample as upsample
from jaxcam._weighting import weighted_map as weighted_map
from jaxcam._weighting import xgrad_cam_weights as xgrad_cam_weights

__all__ = ["SPATIAL", "GRAD_CAM_PP_VARIANTS", "ablation_weights", "cam_weights", "channel_sum",
           "channel_weighted", "first_component", "grad_cam_pp_alphas", "grad_cam_pp_weights",
           "grad_cam_weights", "layer_cam_weights", "mixed_index_alphas", "normalize",
           "pixel_weighted_sum", "shapley_cam_weights", "upsample", "weighted_map",
           "xgrad_cam_weights"]
