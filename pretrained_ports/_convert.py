"""PyTorch state_dicts to Flax variables: a rename table plus layout transposes.

The zoo's Flax modules carry the PyTorch module names (``layer4.2.conv1``), so every
Flax leaf maps to exactly one PyTorch key by a fixed suffix table, and a fixed layout
change per leaf kind. Shapes are checked against ``jax.eval_shape`` of the model's
``init`` before any array is touched; every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from pretrained_ports._errors import ConversionError

# (Flax collection, Flax leaf name) -> PyTorch parameter suffix.
SUFFIXES = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
# PyTorch keys that carry no inference-time information.
IGNORED_SUFFIXES = ("num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class _Rule:
    """How one Flax leaf is read from a PyTorch tensor."""

    path: tuple[str, ...]         # (collection, module..., leaf)
    key: str                      # PyTorch state_dict key
    expected: tuple[int, ...]     # the Flax shape
    nchw: tuple[int, int, int] | None = None  # Linear reading an NCHW-flattened map

    def torch_shape(self) -> tuple[int, ...]:
        """The PyTorch shape that converts to ``expected``."""
        e = self.expected
        if self.path[-1] != "kernel":
            return e
        if len(e) == 4:   # conv: (kh, kw, in, out) <- (out, in, kh, kw)
            return (e[3], e[2], e[0], e[1])
        return (e[1], e[0])  # linear: (in, out) <- (out, in)

    def convert(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, np.float32)
        if self.path[-1] != "kernel":
            return value
        if value.ndim == 4:
            return value.transpose(2, 3, 1, 0)
        if self.nchw is not None:  # (out, C*H*W in NCHW order) -> (H*W*C in NHWC order, out)
            c, h, w = self.nchw
            return value.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(c * h * w, -1)
        return value.T


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What did not match between a checkpoint and a model."""

    model: str
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    misshapen: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshapen)

    def __str__(self) -> str:
        if self.ok:
            return f"checkpoint matches {self.model}"
        lines = [f"checkpoint does not match {self.model}:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): {_short(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}): {_short(self.unexpected)}")
        for key, got, want in self.misshapen[:10]:
            lines.append(f"  misshapen {key}: checkpoint {got}, model expects {want}")
        if len(self.misshapen) > 10:
            lines.append(f"  ... and {len(self.misshapen) - 10} more misshapen keys")
        lines.append("  Is this checkpoint for a different model? See jaxcam.models.available().")
        return "\n".join(lines)


def _short(keys: tuple[str, ...], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
    for name, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, prefix + (name,))
        else:
            yield prefix + (name,), value


def _strip_data_parallel(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _rules(shapes: Mapping[str, Any], nchw: Mapping[str, tuple[int, int, int]]) -> list[_Rule]:
    rules = []
    for path, leaf in _leaves(shapes):
        collection, *modules, name = path
        suffix = SUFFIXES[(collection, name)]
        module = ".".join(modules)
        rules.append(_Rule(tuple(path), f"{module}.{suffix}", tuple(leaf.shape), nchw.get(module)))
    return rules


def check(model: str, state_dict: Mapping[str, np.ndarray], shapes: Mapping[str, Any],
          nchw: Mapping[str, tuple[int, int, int]] | None = None) -> ConversionReport:
    """Compares a state_dict with a model's variable shapes without converting anything."""
    state_dict = _strip_data_parallel(state_dict)
    rules = _rules(shapes, nchw or {})
    used = {r.key for r in rules}
    missing = tuple(r.key for r in rules if r.key not in state_dict)
    unexpected = tuple(k for k in state_dict
                       if k not in used and not k.endswith(IGNORED_SUFFIXES))
    misshapen = tuple((r.key, tuple(state_dict[r.key].shape), r.torch_shape()) for r in rules
                      if r.key in state_dict and tuple(state_dict[r.key].shape) != r.torch_shape())
    return ConversionReport(model, missing, unexpected, misshapen)


def convert(model: str, state_dict: Mapping[str, np.ndarray], shapes: Mapping[str, Any],
            nchw: Mapping[str, tuple[int, int, int]] | None = None) -> dict[str, Any]:
    """Converts a PyTorch state_dict to Flax variables of the given shapes (float32).

    Raises:
      ConversionError: with a report of missing, unexpected and misshapen keys, before
        converting anything.
    """
    report = check(model, state_dict, shapes, nchw)
    if not report.ok:
        raise ConversionError(str(report))
    state_dict = _strip_data_parallel(state_dict)
    variables: dict[str, Any] = {}
    for rule in _rules(shapes, nchw or {}):
        node = variables
        for name in rule.path[:-1]:
            node = node.setdefault(name, {})
        node[rule.path[-1]] = rule.convert(state_dict[rule.key])
    return variables
