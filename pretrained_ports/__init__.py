"""Pretrained PyTorch checkpoints to jaxcam's Flax models, without importing torch.

``read_checkpoint`` reads torch's zip and legacy pickle formats through an allow-list
unpickler; ``convert_checkpoint`` maps a state_dict onto a zoo model's variables by a
rename-and-transpose table checked against the model's shapes and dtypes (NaN/Inf and
non-float tensors refused); converted variables are stored as flax msgpack files, checked
the same way when read back, and cached under the checkpoint's sha256.
"""

from pretrained_ports._convert import ConversionReport as ConversionReport
from pretrained_ports._convert import check as check
from pretrained_ports._convert import convert as convert
from pretrained_ports._errors import CheckpointError as CheckpointError
from pretrained_ports._errors import CheckpointTooLargeError as CheckpointTooLargeError
from pretrained_ports._errors import ConversionError as ConversionError
from pretrained_ports._errors import UnsafeCheckpointError as UnsafeCheckpointError
from pretrained_ports._store import cache_dir as cache_dir
from pretrained_ports._store import convert_checkpoint as convert_checkpoint
from pretrained_ports._store import load_variables as load_variables
from pretrained_ports._store import load_weights as load_weights
from pretrained_ports._store import save_variables as save_variables
from pretrained_ports._torch_reader import read_checkpoint as read_checkpoint

__all__ = ["CheckpointError", "CheckpointTooLargeError", "ConversionError", "ConversionReport", "UnsafeCheckpointError",
           "cache_dir", "check", "convert", "convert_checkpoint", "load_variables",
           "load_weights", "read_checkpoint", "save_variables"]
