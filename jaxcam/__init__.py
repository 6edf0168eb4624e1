"""jaxcam: class activation maps as pure, jit-compiled JAX functions.

Split a network at a layer (:func:`jaxcam.models.load` or :class:`jaxcam.Split`), then
call a method ``f(split, x, target, *, options) -> maps``. Every method is declared once
(:func:`register_method`) and found by name (:func:`available_methods`,
:func:`method_info`); ``jaxcam.<name>`` is the registry's function, so a method
registered later is public too. :func:`smoothed` adds noise smoothing to any gradient
method. The building blocks are public too:
:mod:`jaxcam.weighting` (the formulas on plain arrays), :mod:`jaxcam.derivatives` (the
derivative engines) and :mod:`jaxcam.chunking` (bounded-memory evaluation of many items).
:mod:`jaxcam.metrics` scores maps: faithfulness (average drop, deletion, insertion) and
localisation (pointing games).
"""

# the method families declare their methods, in the registry's order
from jaxcam.methods import _gradient, _smoothing, _eigen, _finer  # noqa: F401, I001
from jaxcam.methods import _perturbation, _guided  # noqa: F401, I001
from jaxcam import batch as batch
from jaxcam import chunking as chunking
from jaxcam import derivatives as derivatives
from jaxcam import metrics as metrics
from jaxcam import models as models
from jaxcam import splitting as splitting
from jaxcam import targets as targets
from jaxcam import viz as viz
from jaxcam import weighting as weighting
from jaxcam._compare import DerivativeComparison as DerivativeComparison
from jaxcam._compare import compare_derivatives as compare_derivatives
from jaxcam._compare import compare_maps as compare_maps
from jaxcam.derivatives._engines import pure_derivatives as pure_derivatives
from jaxcam.splitting import data_mesh as data_mesh
from jaxcam.splitting import padded_size as padded_size
from jaxcam.splitting import place as place
from jaxcam.splitting import shard_batch as shard_batch
from jaxcam.methods._explain import Augment as Augment
from jaxcam.methods._explain import augmentations as augmentations
from jaxcam.targets._links import LINKS as LINKS
from jaxcam.targets._links import Link as Link
from jaxcam.targets._links import links_table as links_table
from jaxcam.viz._preprocess import Preprocess as Preprocess
from jaxcam.methods._smoothing import smoothed as smoothed
from jaxcam.methods._registry import MethodInfo as MethodInfo
from jaxcam.methods._registry import Option as Option
from jaxcam.methods._registry import available_methods as available_methods
from jaxcam.methods._registry import method_info as method_info
from jaxcam.methods._registry import method_table as method_table
from jaxcam.methods._registry import options_table as options_table
from jaxcam.methods._registry import register_method as register_method
from jaxcam.splitting import split_module as split_module
from jaxcam.splitting import Split as Split
from jaxcam.splitting import TokenGrid as TokenGrid
from jaxcam.models._layers import guided_relu as guided_relu

__version__ = "0.1.0"


_API = ["Augment", "DerivativeComparison", "LINKS", "Link", "MethodInfo", "Option",
        "Preprocess", "Split", "TokenGrid", "augmentations", "available_methods",
        "batch", "chunking", "compare_derivatives", "compare_maps", "data_mesh",
        "derivatives", "guided_relu", "links_table", "method_info", "method_table",
        "metrics", "models", "options_table", "padded_size", "place",
        "pure_derivatives", "register_method", "shard_batch", "smoothed",
        "split_module", "splitting", "targets", "viz", "weighting"]


def __getattr__(name: str):
    """``jaxcam.<method>``: every registered method's public function."""
    from jaxcam.methods._registry import METHODS

    if name in METHODS:
        return METHODS[name].function
    raise AttributeError(f"module 'jaxcam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *available_methods()})


__all__ = sorted({*_API, *available_methods()})


