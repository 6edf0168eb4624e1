"""PyTorch state_dicts to Flax variables: a rename table plus layout transposes.

The zoo's Flax modules carry the PyTorch module names (``layer4.2.conv1``), so every
Flax leaf maps to exactly one PyTorch key by a fixed suffix table, and a fixed layout
change per leaf kind. Names, shapes, dtypes and finiteness are checked against
``jax.eval_shape`` of the model's ``init`` before anything is converted, and every
problem is reported at once. :func:`compare` is that one check; the msgpack store runs
it too, on files it reads back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from pretrained_ports._errors import ConversionError

# (Flax collection, Flax leaf name) -> PyTorch parameter suffix. Any other "params" leaf
# is a raw parameter named and laid out as in PyTorch (a ViT's class_token, in_proj_weight).
SUFFIXES = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
# PyTorch keys that carry no inference-time information.
IGNORED_SUFFIXES = ("num_batches_tracked",)

# What a model expects under one name: (shape, dtype).
Spec = tuple[tuple[int, ...], np.dtype]


@dataclasses.dataclass(frozen=True)
class _Rule:
    """How one Flax leaf is read from a PyTorch tensor."""

    path: tuple[str, ...]         # (collection, module..., leaf)
    key: str                      # PyTorch state_dict key
    expected: tuple[int, ...]     # the Flax shape
    dtype: np.dtype               # the Flax dtype
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
        value = np.asarray(value, self.dtype)
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
    """What does not match between a checkpoint (or a converted file) and a model.

    Attributes:
      model: the zoo model's name.
      missing: keys the model needs that the checkpoint lacks.
      unexpected: keys in the checkpoint that the model has no use for.
      misshapen: ``(key, checkpoint shape, expected shape)``.
      mistyped: ``(key, checkpoint dtype or Python type, expected dtype)``: integer, bool
        or complex tensors where floats are expected, or values that are not arrays.
      nonfinite: keys whose tensor holds NaN or infinity (or overflows to it as float32).
    """

    model: str
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    misshapen: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    mistyped: tuple[tuple[str, str, str], ...] = ()
    nonfinite: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshapen or self.mistyped
                    or self.nonfinite)

    def __str__(self) -> str:
        if self.ok:
            return f"checkpoint matches {self.model}"
        lines = [f"checkpoint does not match {self.model}:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): {_short(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}): {_short(self.unexpected)}")
        lines += _first_lines("misshapen", self.misshapen)
        lines += _first_lines("mistyped", self.mistyped)
        if self.nonfinite:
            lines.append(f"  non-finite values (NaN or Inf) in {len(self.nonfinite)} tensors: "
                         f"{_short(self.nonfinite)}")
        if self.missing or self.unexpected or self.misshapen:
            lines.append("  Is this checkpoint for a different model? "
                         "See jaxcam.models.available().")
        if self.mistyped or self.nonfinite:
            lines.append("  These weights are damaged or were not saved as floats: "
                         "use the original checkpoint.")
        return "\n".join(lines)


def _short(keys: tuple[str, ...], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _first_lines(kind: str, items: tuple[tuple[str, Any, Any], ...], n: int = 10) -> list[str]:
    lines = [f"  {kind} {key}: checkpoint {got}, model expects {want}"
             for key, got, want in items[:n]]
    if len(items) > n:
        lines.append(f"  ... and {len(items) - n} more {kind} keys")
    return lines


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
        module = ".".join(modules)
        suffix = SUFFIXES.get((collection, name))
        if suffix is not None:
            key = f"{module}.{suffix}"
        elif collection == "params":   # a raw parameter, kept in PyTorch's name and layout
            key = ".".join([*modules, name])
        else:
            raise ValueError(f"no PyTorch name for the {collection!r} leaf {'/'.join(path)}: "
                             f"only {sorted({c for c, _ in SUFFIXES})} have a rename rule")
        rules.append(_Rule(tuple(path), key, tuple(leaf.shape), np.dtype(leaf.dtype),
                           nchw.get(module)))
    return rules


def compare(model: str, tensors: Mapping[str, Any], expected: Mapping[str, Spec], *,
            convertible: bool, ignored: tuple[str, ...] = ()) -> ConversionReport:
    """Checks named tensors against the ``(shape, dtype)`` a model expects under each name.

    The one validation of weights, whether they come from a PyTorch checkpoint (before
    conversion) or from a msgpack file (before use): each expected name must hold an
    array of the expected shape and dtype whose values are all finite. Nothing is
    converted; the only temporary is one boolean mask at a time.

    Args:
      model: the model's name, for the report.
      tensors: ``{name: value}``; values of any type (a hostile file may hold anything).
      expected: ``{name: (shape, dtype)}``.
      convertible: accept any real floating dtype where a float is expected (the
        conversion casts it); otherwise the dtype must be exactly the expected one.
      ignored: name suffixes that are neither used nor unexpected.

    Returns:
      The report of missing, unexpected, misshapen, mistyped and non-finite tensors.
    """
    misshapen, mistyped, nonfinite = [], [], []
    for key, (shape, dtype) in expected.items():
        if key not in tensors:
            continue
        value = _as_array(tensors[key])
        if value is None:
            mistyped.append((key, type(tensors[key]).__name__, str(dtype)))
            continue
        if value.shape != tuple(shape):
            misshapen.append((key, value.shape, tuple(shape)))
        if not _dtype_fits(value.dtype, dtype, convertible):
            mistyped.append((key, str(value.dtype), str(dtype)))
        elif not _finite_as(value, dtype):
            nonfinite.append(key)
    return ConversionReport(
        model,
        missing=tuple(k for k in expected if k not in tensors),
        unexpected=tuple(k for k in tensors
                         if k not in expected and not (ignored and k.endswith(ignored))),
        misshapen=tuple(misshapen), mistyped=tuple(mistyped), nonfinite=tuple(nonfinite))


def _as_array(value: Any) -> np.ndarray | None:
    """``value`` as a NumPy array if it is an array (NumPy, JAX, torch), else None.

    Python scalars, strings, lists and dicts are not weights, even where NumPy would
    make an array of them."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__array__") and not isinstance(value, type):
        return np.asarray(value)
    return None


def _dtype_fits(got: np.dtype, want: np.dtype, convertible: bool) -> bool:
    if got == want:
        return True
    # float16, bfloat16 and float64 convert to float32 losslessly enough; integers,
    # bools and complex numbers in place of float weights mean a mislabelled file.
    return convertible and want.kind == "f" and (got.kind == "f" or got.name == "bfloat16")


def _finite_as(value: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every value is finite once cast to ``dtype`` (a float64 1e300 is not)."""
    if dtype.kind != "f":
        return True
    with np.errstate(over="ignore"):  # overflow to inf is what is being detected
        return bool(np.isfinite(value.astype(dtype, copy=False)).all())


def check(model: str, state_dict: Mapping[str, np.ndarray], shapes: Mapping[str, Any],
          nchw: Mapping[str, tuple[int, int, int]] | None = None) -> ConversionReport:
    """Compares a state_dict with a model's variables without converting anything.

    Reports, in PyTorch names and layouts, missing, unexpected and misshapen keys,
    tensors that are not floating point (mistyped) and tensors holding NaN or Inf
    (non-finite). See :func:`compare`.
    """
    state_dict = _strip_data_parallel(state_dict)
    expected = {r.key: (r.torch_shape(), r.dtype) for r in _rules(shapes, nchw or {})}
    return compare(model, state_dict, expected, convertible=True, ignored=IGNORED_SUFFIXES)


def convert(model: str, state_dict: Mapping[str, np.ndarray], shapes: Mapping[str, Any],
            nchw: Mapping[str, tuple[int, int, int]] | None = None) -> dict[str, Any]:
    """Converts a PyTorch state_dict to Flax variables of the given shapes (float32).

    float16, bfloat16 and float64 tensors are cast to the model's float32.

    Raises:
      ConversionError: with the report of :func:`check` (missing, unexpected, misshapen,
        mistyped and non-finite tensors), before converting anything.
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
