"""PyTorch checkpoints to Flax variables, without importing torch (nor jax, nor jaxcam).

``read_checkpoint`` reads torch's zip and legacy pickle formats through an allow-list
unpickler; ``convert`` maps a state_dict onto a tree of target shapes by a
rename-and-transpose table, checked against those shapes and dtypes (NaN/Inf and
non-float tensors refused); ``check`` reports what does not fit. A leaf package: the zoo's
by-name loading, the converted-file store and the cache are in :mod:`jaxcam.models`
(``convert_checkpoint``, ``load_weights``, ``save_variables``, ``load_variables``,
``cache_dir``); ``python -m pretrained_ports convert`` uses them.
"""

from pretrained_ports._convert import ConversionReport as ConversionReport
from pretrained_ports._convert import check as check
from pretrained_ports._convert import convert as convert
from pretrained_ports._errors import CheckpointError as CheckpointError
from pretrained_ports._errors import CheckpointTooLargeError as CheckpointTooLargeError
from pretrained_ports._errors import ConversionError as ConversionError
from pretrained_ports._errors import UnsafeCheckpointError as UnsafeCheckpointError
from pretrained_ports._torch_reader import read_checkpoint as read_checkpoint

__all__ = ["CheckpointError", "CheckpointTooLargeError", "ConversionError", "ConversionReport",
           "UnsafeCheckpointError", "check", "convert", "read_checkpoint"]
