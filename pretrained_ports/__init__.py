"""PyTorch checkpoints to Flax variables, without importing torch (nor jaxcam).

``read_checkpoint`` reads torch's zip and legacy pickle formats through an allow-list
unpickler; ``convert`` maps a state_dict onto a tree of target shapes by a
rename-and-transpose table, checked against those shapes and dtypes (NaN/Inf and
non-float tensors refused); ``check`` reports what does not fit. ``save_variables`` and
``load_variables`` write and read converted variables as flax msgpack files (atomic
writes, size-bounded reads), checked against target shapes the same way; they import
flax when called. Every function that needs target shapes takes them as an argument.

A leaf package: importing it imports neither jaxcam, nor jax, nor OpenCV. The zoo's
by-name API (``convert_checkpoint``, ``load_weights``, ``save_variables``,
``load_variables`` taking a model name, and the conversion cache ``cache_dir``) is in
:mod:`jaxcam.models`; ``python -m pretrained_ports convert`` uses it.
"""

from pretrained_ports._convert import ConversionReport as ConversionReport
from pretrained_ports._convert import check as check
from pretrained_ports._convert import convert as convert
from pretrained_ports._errors import CheckpointError as CheckpointError
from pretrained_ports._errors import CheckpointTooLargeError as CheckpointTooLargeError
from pretrained_ports._errors import ConversionError as ConversionError
from pretrained_ports._errors import UnsafeCheckpointError as UnsafeCheckpointError
from pretrained_ports._store import FORMAT as FORMAT
from pretrained_ports._store import load_variables as load_variables
from pretrained_ports._store import read_metadata as read_metadata
from pretrained_ports._store import save_variables as save_variables
from pretrained_ports._torch_reader import read_checkpoint as read_checkpoint

__all__ = ["FORMAT", "CheckpointError", "CheckpointTooLargeError", "ConversionError",
           "ConversionReport", "UnsafeCheckpointError", "check", "convert", "load_variables",
           "read_checkpoint", "read_metadata", "save_variables"]
