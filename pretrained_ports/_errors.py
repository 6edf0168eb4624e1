"""Exceptions raised while reading pretrained checkpoints."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, truncated or unsupported."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint's pickle references a global (or record type) outside the allow-list.

    Such a file may execute arbitrary code when loaded with plain :mod:`pickle`
    (or ``torch.load(..., weights_only=False)``), so it is refused before anything
    it references is imported or called.
    """


class ConversionError(ValueError):
    """A checkpoint's tensors do not match the model (missing, unexpected or misshapen keys)."""
