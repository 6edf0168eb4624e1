"""The zoo's weights on disk: converted flax msgpack files and the conversion cache.

Checkpoints are read and converted by :mod:`pretrained_ports` (which knows nothing of the
zoo); this module gives the conversion its targets (each zoo model's variable shapes and
layout table), stores the results, and caches conversions.

A msgpack file is hostile until checked, whoever wrote it: it is read only up to a
small multiple of the model's size, decoded by msgpack (which checks every declared
length against the bytes it has), and then its structure, names, shapes, dtypes and
values are checked by ``_convert.compare``, the same check a conversion runs. Only
the checked arrays are returned.

The cache holds one msgpack entry per (model, checkpoint content): the entry is named
by, and records, the sha256 of the checkpoint's bytes, so an edited checkpoint never
meets an old entry even if its path, size and mtime are unchanged. An entry that fails
any check is rebuilt from the checkpoint and replaced atomically.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from pretrained_ports import CheckpointError, ConversionError, convert, read_checkpoint
from pretrained_ports._atomic import atomic_write
from pretrained_ports._convert import Spec, compare

# Bump when the file layout or the conversion changes: older files and cache entries
# are then refused (and cache entries rebuilt).
FORMAT = "jaxcam-variables-1"
# A converted file is its arrays plus a little msgpack framing (names, shapes, dtype
# names: tens of bytes per array). Anything much larger is not a converted file.
_SIZE_FACTOR = 2
_SIZE_SLACK = 1 << 20
# The zoo's variable trees are a few levels deep; deeper nesting is malformed.
_MAX_DEPTH = 16


def cache_dir() -> Path:
    """``$JAXCAM_CACHE`` if set, else ``~/.cache/jaxcam``."""
    return Path(os.environ.get("JAXCAM_CACHE") or Path.home() / ".cache" / "jaxcam")


def _model(name: str):
    from jaxcam.models._registry import info, variable_shapes  # the zoo: target shapes

    return info(name), variable_shapes(name)


def _specs(shapes: Mapping[str, Any]) -> dict[str, Spec]:
    """``{"params/fc/kernel": (shape, dtype)}`` for a tree of shape-and-dtype leaves."""
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in _flatten(shapes).items()}


def convert_checkpoint(name: str, checkpoint: str | os.PathLike, *,
                       max_bytes: int | None = None) -> dict[str, Any]:
    """Reads a PyTorch checkpoint and converts it to the Flax variables of zoo model ``name``.

    ``max_bytes`` bounds what reading the checkpoint may allocate (see
    :func:`read_checkpoint`; the default suits checkpoints of ordinary shape).
    """
    model, shapes = _model(name)
    return convert(name, read_checkpoint(checkpoint, max_bytes=max_bytes), shapes,
                   dict(model.nchw_flatten))


def save_variables(path: str | os.PathLike, variables: Any, *, model: str) -> Path:
    """Writes variables of zoo model ``model`` as a flax msgpack file.

    The variables are checked first (the same check :func:`load_variables` runs), so a
    file this writes always loads; the write is atomic, so no reader ever sees a
    half-written file.

    Raises:
      ConversionError: the variables do not fit the model (the report says how).
      OSError: the file cannot be written; nothing is left behind.
    """
    return _save(Path(path), variables, model)


def _save(path: Path, variables: Any, model: str, **extra: str) -> Path:
    # What is written is exactly what was checked.
    variables = _checked(f"variables for {path}", serialization.to_state_dict(variables), model)
    payload = {"format": FORMAT, "model": model, **extra, "variables": variables}
    atomic_write(path, serialization.msgpack_serialize(payload))
    return path


def load_variables(path: str | os.PathLike, *, model: str) -> dict[str, Any]:
    """Reads variables saved by :func:`save_variables`, checked against zoo model ``model``.

    Raises:
      FileNotFoundError: there is no file at ``path``.
      CheckpointError: the file is unreadable, too large, or not a converted jaxcam file.
      ConversionError: the file's variables do not fit ``model``: one report of missing,
        unexpected, misshapen, mistyped (not float32) and non-finite arrays.
    """
    return _load(Path(path), model)


def _load(path: Path, model: str, source_sha256: str | None = None) -> dict[str, Any]:
    """:func:`load_variables`, also requiring the entry to record ``source_sha256``."""
    _, shapes = _model(model)
    specs = _specs(shapes)
    limit = _SIZE_FACTOR * sum(int(np.prod(s)) * d.itemsize for s, d in specs.values())
    payload = _decode(path, _read_at_most(path, limit + _SIZE_SLACK))
    if payload["model"] != model:
        raise ConversionError(
            f"{path} holds weights for {payload['model'][:60]!r}, not {model!r}")
    if source_sha256 is not None and payload.get("source_sha256") != source_sha256:
        raise CheckpointError(f"{path} was made from a different checkpoint")
    return _checked(str(path), payload["variables"], model, specs)


def _read_at_most(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, refusing (before reading) a file over ``limit`` bytes."""
    if not path.exists():
        raise FileNotFoundError(f"no converted weights at {path}")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(limit + 1) if size <= limit else b""
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if size > limit or len(data) > limit:  # the second: it grew while being read
        raise CheckpointError(
            f"{path} is {max(size, len(data)):,} bytes, more than a converted file of this "
            f"model can be ({limit:,}); it is not a converted jaxcam weights file")
    return data


def _decode(path: Path, data: bytes) -> dict[str, Any]:
    """The payload dict of a converted file, its fields' types checked."""
    hint = "convert the checkpoint again with `python -m pretrained_ports convert`"
    try:
        # msgpack bounds every declared length by len(data), so nothing larger than
        # the file is allocated.
        payload = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack, numpy and flax raise many unrelated types
        why = " ".join(f"{type(e).__name__} {e}".split())[:200]
        raise CheckpointError(
            f"{path} is not a converted jaxcam weights file (undecodable: {why}); {hint}"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a converted jaxcam weights file "
                              f"(a msgpack {type(payload).__name__}, not a dict); {hint}")
    for field, kind in (("format", str), ("model", str), ("variables", dict)):
        if not isinstance(payload.get(field), kind):
            raise CheckpointError(f"{path} is not a converted jaxcam weights file "
                                  f"(no {kind.__name__} {field!r}); {hint}")
    if payload["format"] != FORMAT:
        raise CheckpointError(f"{path} is in format {payload['format'][:40]!r}, not {FORMAT!r}; "
                              f"{hint}")
    return payload


def _checked(source: str, variables: Mapping[str, Any], model: str,
             specs: dict[str, Spec] | None = None) -> dict[str, Any]:
    """The variables of ``model`` in ``variables``, rebuilt from exactly the checked arrays.

    ``source`` names where the variables come from, for the error messages.

    Raises:
      CheckpointError: the tree is malformed (too deep, or two leaves with one name).
      ConversionError: the report of ``_convert.compare`` is not clean.
    """
    if specs is None:
        specs = _specs(_model(model)[1])
    try:
        flat = _flatten(variables)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    report = compare(model, flat, specs, convertible=False)
    if not report.ok:
        raise ConversionError(f"{source}: {report}")
    return _unflatten({k: np.asarray(flat[k]) for k in specs})


def _flatten(tree: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """``{"params/fc/kernel": leaf}``; raises ValueError on deep nesting or clashing names
    (a key ``"a/b"`` beside a subtree ``a`` holding ``b``)."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"variables nested deeper than {_MAX_DEPTH} levels")
    out: dict[str, Any] = {}
    for k, v in tree.items():
        items = (_flatten(v, f"{prefix}{k}/", depth + 1) if isinstance(v, Mapping)
                 else {f"{prefix}{k}": v})
        for key, leaf in items.items():
            if key in out:
                raise ValueError(f"two variables named {key!r}")
            out[key] = leaf
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, leaf in flat.items():
        *parents, name = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = leaf
    return tree


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
    checkpoint; a checkpoint is converted once and cached (see :func:`cache_dir`)."""
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
    try:
        return _load(entry, name, source_sha256=sha256)
    except (FileNotFoundError, CheckpointError, ConversionError):
        pass  # no entry, or a damaged, partial or foreign one: rebuilt below
    variables = convert_checkpoint(name, checkpoint)
    # Record the entry only if the checkpoint did not change while it was converted.
    if _sha256(checkpoint) == sha256:
        try:
            _save(entry, variables, name, source_sha256=sha256)
        except OSError:
            pass  # a read-only or full cache must not stop the load
    return variables
