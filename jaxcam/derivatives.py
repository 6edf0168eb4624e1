"""The derivative engines: pure (diagonal) derivatives of the explained score in every
activation, exact or in Grad-CAM++'s closed form, and the Taylor machinery under them."""

from jaxcam._derivatives import DERIVATIVES as DERIVATIVES
from jaxcam._derivatives import ENGINES as ENGINES
from jaxcam._derivatives import head_derivatives as head_derivatives
from jaxcam._derivatives import pooled_linear_parts as pooled_linear_parts
from jaxcam._derivatives import pure_derivatives as pure_derivatives
from jaxcam._derivatives import rounded_logits as rounded_logits
from jaxcam._lowering import directional_derivatives as directional_derivatives
from jaxcam._taylor import basis_derivatives as basis_derivatives
from jaxcam._taylor import taylor_along as taylor_along

__all__ = ["DERIVATIVES", "ENGINES", "basis_derivatives", "directional_derivatives",
           "head_derivatives", "pooled_linear_parts", "pure_derivatives", "rounded_logits",
           "taylor_along"]
