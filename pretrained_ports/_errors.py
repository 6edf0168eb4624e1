"""Exceptions raised while reading pretrained checkpoints."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, truncated or unsupported.

    Every problem ``read_checkpoint`` finds in a file is reported as this class or a
    subclass, with one line naming the file and the problem.
    """


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint's pickle references a global outside the allow-list, or tries to alter one.

    Such a file may execute arbitrary code when loaded with plain :mod:`pickle`
    (or ``torch.load(..., weights_only=False)``), so it is refused before anything
    it references is imported or called.
    """


class CheckpointTooLargeError(CheckpointError):
    """Reading a checkpoint would allocate more than its byte budget (``max_bytes``).

    Raised before the allocation happens. A trusted file that is simply large can be
    read by passing a larger ``max_bytes`` to ``read_checkpoint``.
    """


class ConversionError(ValueError):
    """A checkpoint's tensors do not match the model (missing, unexpected or misshapen keys)."""
