"""Converted variables on disk: flax msgpack files, checked against target shapes.

A file holds one msgpack map: ``format`` (:data:`FORMAT`), ``model`` (the name the
variables were made for), any string metadata fields, and ``variables`` (the tree of
arrays). Writes are atomic (:mod:`pretrained_ports._atomic`), and what is written is
checked first, so a file this module writes always loads.

A msgpack file is hostile until checked, whoever wrote it: it is read only up to a
small multiple of the size its target shapes imply, decoded by msgpack (which checks
every declared length against the bytes it has), and then its structure, names, shapes,
dtypes and values are checked by :func:`pretrained_ports._convert.compare`, the same
check a conversion runs. Only the checked arrays are returned.

Flax's msgpack encoding is used, so flax (and with it jax) is imported on the first
save or load, not by ``import pretrained_ports``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pretrained_ports._atomic import atomic_write
from pretrained_ports._convert import Spec, compare
from pretrained_ports._errors import CheckpointError, ConversionError

# Bump when the file layout or the conversion changes: older files are then refused
# (and cache entries rebuilt).
FORMAT = "jaxcam-variables-1"
# A converted file is its arrays plus a little msgpack framing (names, shapes, dtype
# names: tens of bytes per array). Anything much larger is not a converted file.
_SIZE_FACTOR = 2
_SIZE_SLACK = 1 << 20
# Variable trees are a few levels deep; deeper nesting is malformed.
_MAX_DEPTH = 16
# Fields every file has; metadata may not reuse them.
_FIELDS = ("format", "model", "variables")
_HINT = "convert the checkpoint again with `python -m pretrained_ports convert`"


def save_variables(path: str | os.PathLike, variables: Any, shapes: Mapping[str, Any], *,
                   model: str, metadata: Mapping[str, str] | None = None) -> Path:
    """Writes variables as a flax msgpack file, after checking them against ``shapes``.

    The check is the one :func:`load_variables` runs, so a file this writes always loads
    with the same ``shapes``; the write is atomic, so no reader ever sees a half-written
    file.

    Args:
      path: the file to write (missing folders are created).
      variables: a tree of arrays (nested dicts, or a flax ``FrozenDict``).
      shapes: the target tree of leaves with ``shape`` and ``dtype`` (``jax.eval_shape``
        of the model's ``init``, or ``jax.ShapeDtypeStruct`` leaves).
      model: the name the variables are for; recorded in the file and in reports.
      metadata: string fields recorded beside the variables (e.g. the sha256 of the
        source checkpoint); :func:`load_variables` can require them.

    Returns:
      ``path``, as a :class:`~pathlib.Path`.

    Raises:
      ConversionError: the variables do not fit ``shapes`` (the report says how).
      CheckpointError: the tree is malformed (too deep, or two leaves with one name).
      TypeError: a metadata field or value is not a string.
      ValueError: a metadata field reuses a reserved name.
      OSError: the file cannot be written; nothing is left behind.
    """
    # Imported on use, so that `import pretrained_ports` imports neither flax nor jax.
    from flax import serialization

    path = Path(path)
    extra = _metadata(metadata)
    # What is written is exactly what was checked.
    checked = _checked(f"variables for {path}", serialization.to_state_dict(variables),
                       model, _specs(shapes))
    payload = {"format": FORMAT, "model": model, **extra, "variables": checked}
    atomic_write(path, serialization.msgpack_serialize(payload))
    return path


def load_variables(path: str | os.PathLike, shapes: Mapping[str, Any], *, model: str,
                   metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Reads variables saved by :func:`save_variables`, checked against ``shapes``.

    Args:
      path: a file written by :func:`save_variables`.
      shapes: the target tree of leaves with ``shape`` and ``dtype``.
      model: the name the file must record.
      metadata: string fields the file must record with exactly these values.

    Returns:
      The variables, as nested dicts of NumPy arrays of exactly the target shapes.

    Raises:
      FileNotFoundError: there is no file at ``path``.
      CheckpointError: the file is unreadable, larger than variables of ``shapes`` can
        be, not a converted file, or records other metadata.
      ConversionError: the file is for another model, or its variables do not fit
        ``shapes``: one report of missing, unexpected, misshapen, mistyped and
        non-finite arrays.
    """
    path = Path(path)
    required = _metadata(metadata)
    specs = _specs(shapes)
    payload = _payload(path, specs, model)
    for field, want in required.items():
        found = payload.get(field)
        if found != want:
            shown = "nothing" if found is None else repr(str(found)[:80])
            raise CheckpointError(f"{path} records {shown} as {field!r}, not {want!r}; "
                                  "it was made from another source")
    return _checked(str(path), payload["variables"], model, specs)


def read_metadata(path: str | os.PathLike, shapes: Mapping[str, Any], *,
                  model: str) -> dict[str, str]:
    """The metadata fields a file written by :func:`save_variables` records.

    The file is read and decoded with the bounds :func:`load_variables` uses; its
    variables are not checked (load them with :func:`load_variables`).

    Raises:
      FileNotFoundError, CheckpointError, ConversionError: as :func:`load_variables`.
    """
    payload = _payload(Path(path), _specs(shapes), model)
    return {k: v for k, v in payload.items() if k not in _FIELDS and isinstance(v, str)}


def _payload(path: Path, specs: Mapping[str, Spec], model: str) -> dict[str, Any]:
    """The decoded payload of a file of variables for ``model``, read only up to a small
    multiple of the size variables of ``specs`` take."""
    limit = _SIZE_FACTOR * sum(int(np.prod(s)) * d.itemsize for s, d in specs.values())
    payload = _decode(path, _read_at_most(path, limit + _SIZE_SLACK))
    if payload["model"] != model:
        raise ConversionError(
            f"{path} holds weights for {payload['model'][:60]!r}, not {model!r}")
    return payload


def _metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``metadata`` as a dict, its fields checked to be strings outside :data:`_FIELDS`."""
    extra = dict(metadata or {})
    for field, value in extra.items():
        if not isinstance(field, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map strings to strings, not {field!r}: "
                            f"{type(value).__name__}")
        if field in _FIELDS:
            raise ValueError(f"metadata field {field!r} is reserved (every file has "
                             f"{', '.join(_FIELDS)}); choose another name")
    return extra


def _specs(shapes: Mapping[str, Any]) -> dict[str, Spec]:
    """``{"params/fc/kernel": (shape, dtype)}`` for a tree of shape-and-dtype leaves."""
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in _flatten(shapes).items()}


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
    from flax import serialization

    try:
        # msgpack bounds every declared length by len(data), so nothing larger than
        # the file is allocated.
        payload = serialization.msgpack_restore(data)
    except Exception as e:  # noqa: BLE001 (msgpack, numpy and flax raise many unrelated types)
        why = " ".join(f"{type(e).__name__} {e}".split())[:200]
        raise CheckpointError(
            f"{path} is not a converted jaxcam weights file (undecodable: {why}); {_HINT}"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a converted jaxcam weights file "
                              f"(a msgpack {type(payload).__name__}, not a dict); {_HINT}")
    for field, kind in (("format", str), ("model", str), ("variables", dict)):
        if not isinstance(payload.get(field), kind):
            raise CheckpointError(f"{path} is not a converted jaxcam weights file "
                                  f"(no {kind.__name__} {field!r}); {_HINT}")
    if payload["format"] != FORMAT:
        raise CheckpointError(f"{path} is in format {payload['format'][:40]!r}, not {FORMAT!r}; "
                              f"{_HINT}")
    return payload


def _checked(source: str, variables: Mapping[str, Any], model: str,
             specs: Mapping[str, Spec]) -> dict[str, Any]:
    """The variables in ``variables`` named by ``specs``, rebuilt from exactly the checked
    arrays.

    ``source`` names where the variables come from, for the error messages.

    Raises:
      CheckpointError: the tree is malformed (too deep, or two leaves with one name).
      ConversionError: the report of :func:`~pretrained_ports._convert.compare` is not
        clean.
    """
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
    """The nested dicts of ``{"params/fc/kernel": leaf}``."""
    tree: dict[str, Any] = {}
    for key, leaf in flat.items():
        *parents, name = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = leaf
    return tree
