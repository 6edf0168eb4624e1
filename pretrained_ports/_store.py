"""Converted variables on disk: flax msgpack files and the conversion cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from jaxcam._io import atomic_write

from pretrained_ports._convert import ConversionReport, convert
from pretrained_ports._errors import CheckpointError, ConversionError
from pretrained_ports._torch_reader import read_checkpoint

FORMAT = "jaxcam-variables-1"


def cache_dir() -> Path:
    """``$JAXCAM_CACHE`` if set, else ``~/.cache/jaxcam``."""
    return Path(os.environ.get("JAXCAM_CACHE") or Path.home() / ".cache" / "jaxcam")


def _model(name: str):
    import jaxcam.models  # the zoo defines the target shapes

    model = jaxcam.models.info(name)
    return model, jaxcam.models.variable_shapes(name)


def convert_checkpoint(name: str, checkpoint: str | os.PathLike) -> dict[str, Any]:
    """Reads a PyTorch checkpoint and converts it to the Flax variables of zoo model ``name``."""
    model, shapes = _model(name)
    return convert(name, read_checkpoint(checkpoint), shapes, dict(model.nchw_flatten))


def save_variables(path: str | os.PathLike, variables: Any, *, model: str) -> Path:
    """Writes variables as a flax msgpack file (atomically: never a half-written file)."""
    path = Path(path)
    payload = {"format": FORMAT, "model": model,
               "variables": serialization.to_state_dict(variables)}
    atomic_write(path, serialization.msgpack_serialize(payload))
    return path


def load_variables(path: str | os.PathLike, *, model: str) -> dict[str, Any]:
    """Reads variables saved by :func:`save_variables`, checked against model ``model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no converted weights at {path}")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types
        raise CheckpointError(f"{path} is not a converted jaxcam weights file: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a converted jaxcam weights file")
    if payload["model"] != model:
        raise ConversionError(f"{path} holds weights for {payload['model']!r}, not {model!r}")
    variables = payload["variables"]
    _, shapes = _model(model)
    got = {k: tuple(np.shape(v)) for k, v in _flatten(variables).items()}
    want = {k: tuple(v.shape) for k, v in _flatten(shapes).items()}
    report = ConversionReport(
        model,
        missing=tuple(k for k in want if k not in got),
        unexpected=tuple(k for k in got if k not in want),
        misshapen=tuple((k, got[k], want[k]) for k in want if k in got and got[k] != want[k]))
    if not report.ok:
        raise ConversionError(f"{path}: {report}")
    return variables


def _flatten(tree, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if hasattr(v, "items"):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _cache_path(name: str, checkpoint: Path) -> Path:
    stat = checkpoint.stat()
    tag = f"{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{FORMAT}"
    digest = hashlib.sha256(tag.encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{checkpoint.stem}-{digest}.msgpack"


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
    cached = _cache_path(name, path)
    if cached.is_file():
        try:
            return load_variables(cached, model=name)
        except (CheckpointError, ConversionError):
            cached.unlink(missing_ok=True)  # stale or damaged cache entry: convert again
    variables = convert_checkpoint(name, path)
    try:
        save_variables(cached, variables, model=name)
    except OSError:
        pass  # a read-only cache must not stop the load
    return variables
