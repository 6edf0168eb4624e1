"""Adebayo et al.'s model-parameter randomisation test: the maps' rank correlation with the
trained model's as parameter groups are re-initialised from the output down."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._checks import check_choice
from jaxcam.methods._registry import method_info
from jaxcam.metrics._statistics import spearman

class SanityCheck(NamedTuple):
    """Spearman rank correlations of a method's maps with the trained model's, as the
    model's parameter groups are re-initialised from the output down.

    Attributes:
      layers: the parameter groups, in the order they were re-initialised.
      spearman: (L, B) per layer and image (0 where either map is constant).
      order: "cascading" (every group above too) or "independent" (that group alone).
    """

    layers: tuple[str, ...]
    spearman: np.ndarray
    order: str

    def rows(self) -> list[dict]:
        """One dict per layer: its name, the mean correlation and the per-image ones."""
        return [{"layer": name, "spearman": float(np.mean(r)), "per_image": r.tolist()}
                for name, r in zip(self.layers, self.spearman)]


def forward_order(split, x) -> list[str]:
    """The split's parameter groups (``variables["params"]`` keys) in the order the
    forward pass first uses them, read from its jaxpr."""
    params = split.variables["params"]
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    group = [str(getattr(path[0], "key", path[0])) for path, _ in leaves]
    jaxpr = jax.make_jaxpr(lambda p: split.replace(
        variables={**split.variables, "params": p}).logits(x))(params).jaxpr
    first = {id(v): len(jaxpr.eqns) for v in jaxpr.invars}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if first.get(id(v), -1) > i:
                first[id(v)] = i
    start: dict[str, int] = {}
    for name, v in zip(group, jaxpr.invars):
        start[name] = min(start.get(name, len(jaxpr.eqns)), first[id(v)])
    return sorted(start, key=start.get)


def _reinitialised(tree, key):
    """Every leaf redrawn as normal noise with that leaf's own mean and standard deviation
    (the scale the network was trained at, none of its structure)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    new = [jnp.mean(v) + jnp.std(v) * jax.random.normal(k, v.shape, v.dtype)
           for v, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, new)


def sanity_check(method, split, x, classes, *, order: str = "cascading", key=None,
                 layers=None) -> SanityCheck:
    """Adebayo et al.'s model-parameter randomisation test of a method.

    The split's parameter groups are re-initialised from the output down (each leaf
    redrawn as normal noise with its own mean and standard deviation; batch statistics
    kept), the maps recomputed for the same classes, and each compared with the trained
    model's by Spearman rank correlation. A method that explains the model decorrelates;
    one that ignores it (an edge detector) does not.

    Args:
      method: ``f(split, x, classes) -> maps`` (a jaxcam method) or a registered name.
      split: the trained model, split at the layer the method explains.
      order: "cascading" (group k and every group above it) or "independent" (group k
        alone).
      key: ``jax.random.key`` for the re-initialisation (default key 42, as Quantus).
      layers: the groups to re-initialise, output side first (default: every group of
        ``variables["params"]`` in reverse :func:`forward_order`).
    """
    check_choice("order", order, ("cascading", "independent"))
    if isinstance(method, str):
        method = method_info(method).function
    if not callable(method):
        raise TypeError(f"method must be a function (split, x, classes) -> maps or a "
                        f"registered name, got {type(method).__name__}")
    x, classes = jnp.asarray(x), jnp.asarray(classes)
    params = split.variables["params"]
    layers = tuple(forward_order(split, x)[::-1] if layers is None else layers)
    unknown = [name for name in layers if name not in params]
    if unknown:
        raise ValueError(f"unknown parameter groups {unknown}; the split has "
                         f"{list(params)}")
    key = jax.random.key(42) if key is None else key
    trained = np.asarray(method(split, x, classes))
    current, rows = dict(params), []
    for name, k in zip(layers, jax.random.split(key, len(layers))):
        source = current if order == "cascading" else dict(params)
        source[name] = _reinitialised(params[name], k)
        if order == "cascading":
            current = source
        changed = split.replace(variables={**split.variables, "params": source})
        rows.append(spearman(trained, method(changed, x, classes)))
    return SanityCheck(layers, np.stack(rows), order)
