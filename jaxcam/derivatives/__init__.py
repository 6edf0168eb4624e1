"""The derivative engines: pure (diagonal) derivatives of the explained score in every
activation, exact or in Grad-CAM++'s closed form, and the Taylor machinery under them."""

from jaxcam.derivatives._engines import DERIVATIVES as DERIVATIVES
from jaxcam.derivatives._engines import ENGINES as ENGINES
from jaxcam.derivatives._engines import head_derivatives as head_derivatives
from jaxcam.derivatives._engines import pooled_linear_parts as pooled_linear_parts
from jaxcam.derivatives._engines import pure_derivatives as pure_derivatives
from jaxcam.derivatives._engines import rounded_logits as rounded_logits
from jaxcam.derivatives._lowering import directional_derivatives as directional_derivatives
from jaxcam.derivatives._taylor import basis_derivatives as basis_derivatives
from jaxcam.derivatives._series import taylor_along as taylor_along

__all__ = ["DERIVATIVES", "ENGINES", "basis_derivatives", "directional_derivatives",
           "head_derivatives", "pooled_linear_parts", "pure_derivatives", "rounded_logits",
           "taylor_along"]
