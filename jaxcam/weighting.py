"""The formulas of the CAM family on plain arrays (model-free): channel weights, Grad-CAM++
coefficients, maps, upsampling and normalisation.

Every function takes activations ``a`` (..., h, w, K) and derivatives of the explained
score shaped like them, so each formula can be checked on a hand-made example.
"""

from jaxcam._weighting import SPATIAL as SPATIAL
from jaxcam._weighting import VARIANTS as VARIANTS
from jaxcam._weighting import cam_weights as cam_weights
from jaxcam._weighting import channel_sum as channel_sum
from jaxcam._weighting import grad_cam_pp_alphas as grad_cam_pp_alphas
from jaxcam._weighting import grad_cam_pp_weights as grad_cam_pp_weights
from jaxcam._weighting import grad_cam_weights as grad_cam_weights
from jaxcam._weighting import mixed_index_alphas as mixed_index_alphas
from jaxcam._weighting import normalize as normalize
from jaxcam._weighting import pixel_weighted_sum as pixel_weighted_sum
from jaxcam._weighting import upsample as upsample
from jaxcam._weighting import weighted_map as weighted_map

__all__ = ["SPATIAL", "VARIANTS", "cam_weights", "channel_sum", "grad_cam_pp_alphas",
           "grad_cam_pp_weights", "grad_cam_weights", "mixed_index_alphas", "normalize",
           "pixel_weighted_sum", "upsample", "weighted_map"]
