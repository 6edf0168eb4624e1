"""The zoo's weights on disk: converted flax msgpack files and the conversion cache.

Checkpoints are read and converted, and converted files written and checked, by
:mod:`pretrained_ports`, which knows nothing of the zoo; this module gives it the targets
(each zoo model's variable shapes and layout table) by model name, and caches conversions.

The cache holds one msgpack entry per (model, checkpoint content): the entry is named
by, and records, the sha256 of the checkpoint's bytes, so an edited checkpoint never
meets an old entry even if its path, size and mtime are unchanged. An entry that fails
any check is rebuilt from the checkpoint and replaced atomically.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pretrained_ports
from jaxcam.models._cache import cache_dir
from jaxcam.models._catalog import info, variable_shapes
from pretrained_ports import CheckpointError, ConversionError


def convert_checkpoint(name: str, checkpoint: str | os.PathLike, *,
                       max_bytes: int | None = None) -> dict[str, Any]:
    """Reads a PyTorch checkpoint and converts it to the Flax variables of zoo model ``name``.

    Args:
      name: a zoo model (see :func:`jaxcam.models.available`).
      checkpoint: a PyTorch checkpoint file (``.pth``), read without torch.
      max_bytes: bounds what reading the checkpoint may allocate (see
        :func:`pretrained_ports.read_checkpoint`; the default suits checkpoints of
        ordinary shape).

    Raises:
      ValueError: ``name`` is not a zoo model.
      CheckpointError: the checkpoint is unreadable, unsafe or too large.
      ConversionError: the checkpoint does not fit the model (the report says how).
    """
    model = info(name)
    state_dict = pretrained_ports.read_checkpoint(checkpoint, max_bytes=max_bytes)
    return pretrained_ports.convert(name, state_dict, variable_shapes(name),
                                    dict(model.nchw_flatten))


def save_variables(path: str | os.PathLike, variables: Any, *, model: str) -> Path:
    """Writes variables of zoo model ``model`` as a flax msgpack file.

    The variables are checked first (the same check :func:`load_variables` runs), so a
    file this writes always loads; the write is atomic, so no reader ever sees a
    half-written file. See :func:`pretrained_ports.save_variables`, which this calls
    with the model's shapes.

    Raises:
      ValueError: ``model`` is not a zoo model.
      ConversionError: the variables do not fit the model (the report says how).
      OSError: the file cannot be written; nothing is left behind.
    """
    return pretrained_ports.save_variables(path, variables, variable_shapes(model), model=model)


def load_variables(path: str | os.PathLike, *, model: str) -> dict[str, Any]:
    """Reads variables saved by :func:`save_variables`, checked against zoo model ``model``.

    Raises:
      ValueError: ``model`` is not a zoo model.
      FileNotFoundError: there is no file at ``path``.
      CheckpointError: the file is unreadable, too large, or not a converted jaxcam file.
      ConversionError: the file's variables do not fit ``model``: one report of missing,
        unexpected, misshapen, mistyped (not float32) and non-finite arrays.
    """
    return pretrained_ports.load_variables(path, variable_shapes(model), model=model)


def _sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in chunks (about 1 GB/s: cheap beside a
    conversion)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None


def _cache_path(name: str, sha256: str) -> Path:
    return cache_dir() / f"{name}-{sha256[:32]}.msgpack"


def load_weights(name: str, weights: str | os.PathLike) -> dict[str, Any]:
    """Variables of zoo model ``name`` from a converted ``.msgpack`` file or a PyTorch
    checkpoint; a checkpoint is converted once and cached (see :func:`cache_dir`).

    A cache entry is used only if it records the sha256 of the checkpoint's bytes and
    passes every check of :func:`load_variables`; otherwise it is rebuilt. A cache that
    cannot be written costs the conversion, never the load.

    Raises:
      FileNotFoundError: ``weights`` is not a file.
      ValueError: ``name`` is not a zoo model.
      CheckpointError: the file is unreadable, unsafe, too large or not a weights file.
      ConversionError: the weights do not fit the model (the report says how).
    """
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist; pass a PyTorch checkpoint (.pth), "
            "a converted .msgpack file, 'random' or 'pretrained'")
    if path.suffix == ".msgpack":
        return load_variables(path, model=name)
    return _convert_cached(name, path)


def _convert_cached(name: str, checkpoint: Path) -> dict[str, Any]:
    """Converts ``checkpoint`` or reads its cache entry, rebuilding a bad entry."""
    sha256 = _sha256(checkpoint)
    entry = _cache_path(name, sha256)
    shapes = variable_shapes(name)
    try:
        return pretrained_ports.load_variables(entry, shapes, model=name,
                                               metadata={"source_sha256": sha256})
    except (FileNotFoundError, CheckpointError, ConversionError):
        pass  # no entry, or a damaged, partial or foreign one: rebuilt below
    variables = convert_checkpoint(name, checkpoint)
    # Record the entry only if the checkpoint did not change while it was converted.
    if _sha256(checkpoint) == sha256:
        try:
            pretrained_ports.save_variables(entry, variables, shapes, model=name,
                                            metadata={"source_sha256": sha256})
        except OSError:
            pass  # a read-only or full cache must not stop the load
    return variables
