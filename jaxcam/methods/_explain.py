"""What every map method shares beyond its program: several layers, test-time augmentation
and eigen smoothing, all in the one jit-compiled call.

Every public map method is ``explain(build, split, x, target, **options)``: its builder
(:mod:`jaxcam.methods._gradient`, :mod:`jaxcam.methods._perturbation`) turns the options into a
:class:`jaxcam.methods._pipeline.Program`, and this module adds the options any method takes:

* ``layers=[...]``: the same method at several cuts of one network (layer names, re-cut by
  :meth:`jaxcam.Split.at`, or :class:`jaxcam.Split` objects), each layer's map normalised
  at its own resolution and resized to the input (pytorch-grad-cam's order), then fused
  (:data:`FUSIONS`);
* ``aug_smooth`` / ``augmentations``: the maps of flipped and intensity-scaled copies of
  the input, each mapped back to the input's frame, averaged (pytorch-grad-cam's
  ``aug_smooth``);
* ``eigen_smooth``: the weighted activations reduced by their first principal component
  instead of their channel sum (pytorch-grad-cam's ``eigen_smooth``).

With several layers or augmentations the target is resolved once, on the clean image
through the first layer's split, and every layer and copy explains it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from jaxcam import _weighting as W
from jaxcam._checks import check_choice
from jaxcam.methods._pipeline import Program, check_inputs, run_on
from jaxcam.splitting._split import Split
from jaxcam.targets._objective import Objective

Array = jax.Array
FUSIONS = ("mean", "max", "layercam")


@struct.dataclass
class Augment:
    """One test-time augmentation: an optional horizontal flip and an intensity factor.

    The copy is ``flip(x) * multiply``; its map is flipped back (intensity needs no
    undoing). pytorch-grad-cam's default ``aug_smooth`` uses the six combinations of
    flip in (False, True) and multiply in (0.9, 1, 1.1) (ttach's HorizontalFlip and
    Multiply). ``Augment()`` is the identity.
    """

    flip: bool = struct.field(pytree_node=False, default=False)
    multiply: float = struct.field(pytree_node=False, default=1.0)

    def apply(self, x: Array) -> Array:
        x = x[:, :, ::-1] if self.flip else x
        return x if self.multiply == 1.0 else x * jnp.asarray(self.multiply, x.dtype)

    def undo(self, maps: Array) -> Array:
        return maps[..., ::-1] if self.flip else maps


def augmentations(flips: Sequence[bool] = (False, True),
                  multiply: Sequence[float] = (0.9, 1.0, 1.1)) -> tuple[Augment, ...]:
    """Every combination of ``flips`` and intensity factors ``multiply``, in
    pytorch-grad-cam's order (flip outermost). The default is its ``aug_smooth``."""
    return tuple(Augment(bool(f), float(m)) for f in flips for m in multiply)


def _check_augmentations(aug_smooth, given) -> tuple[Augment, ...] | None:
    if given is None:
        return augmentations() if aug_smooth else None
    given = tuple(given)
    if not given or not all(isinstance(a, Augment) for a in given):
        raise TypeError("augmentations must be a non-empty list of jaxcam.Augment, e.g. "
                        "jaxcam.augmentations(flips=(False, True), multiply=(1.0,))")
    return given


def fuse_maps(maps: Sequence[Array], how: str,
              size: tuple[int, int] | None = None) -> Array:
    """Fuses per-layer maps (each (B, h_l, w_l), non-negative), resized (bilinear) to
    ``size`` (default: the largest layer's): "mean" (pytorch-grad-cam: the mean of the
    layers' maps), "max" (their element-wise maximum), "layercam" (LayerCAM, Jiang et al.
    2021, eq. 9 as torch-cam 0.5.0's ``fuse_cams``: each map scaled to tanh(2 M / max M)
    at its own resolution, then resized, then the element-wise maximum)."""
    if size is None:
        size = tuple(max(m.shape[-2 + i] for m in maps) for i in range(2))
    if how == "layercam":  # at each layer's own resolution, then resized (torch-cam's order)
        maps = [jnp.tanh(2.0 * W.safe_ratio(m, jnp.max(m, axis=(-2, -1), keepdims=True)))
                for m in maps]
    maps = [W.upsample(m, size) for m in maps]
    stacked = jnp.stack(maps)
    return jnp.mean(stacked, axis=0) if how == "mean" else jnp.max(stacked, axis=0)


def _objectives(node):
    """Every :class:`Objective` held by a program's (nested) dataclass fields."""
    if isinstance(node, Objective):
        yield node
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            yield from _objectives(getattr(node, f.name))


def _given_targets(node):
    """The program with every objective told its targets are given (already resolved)."""
    if isinstance(node, Objective):
        return node.resolved()
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return dataclasses.replace(node, **{f.name: _given_targets(getattr(node, f.name))
                                            for f in dataclasses.fields(node)})
    return node


@struct.dataclass
class Fused:
    """A method at several layers and augmented copies: per-layer maps (each finished at
    its layer's resolution, as pytorch-grad-cam scales them before resizing) fused at the
    input's size (``upsample``) or the largest layer's, copies averaged, normalised once
    more when the layers' maps are."""

    programs: tuple
    augments: tuple = struct.field(pytree_node=False, default=(Augment(),))
    fuse: str = struct.field(pytree_node=False, default="mean")
    normalize: bool = struct.field(pytree_node=False, default=True)
    upsample: bool = struct.field(pytree_node=False, default=True)

    def __call__(self, splits: tuple, x: Array, classes, key) -> Array:
        objective = next(_objectives(self.programs[0]), None)
        programs = self.programs
        if objective is not None:
            classes = objective.classes(splits[0].logits(x), classes)
            programs = tuple(_given_targets(p) for p in programs)
        copies = []
        for aug in self.augments:
            xa = aug.apply(x)
            maps = [p(s, xa, classes, key) for p, s in zip(programs, splits)]
            size = xa.shape[1:3] if self.upsample else None
            copies.append(aug.undo(maps[0] if len(maps) == 1 else
                                   fuse_maps(maps, self.fuse, size)))
        out = sum(copies[1:], copies[0]) / len(copies) if len(copies) > 1 else copies[0]
        return W.normalize(out) if self.normalize else out


def layer_splits(split: Split, layers) -> tuple[Split, ...]:
    """The splits of ``layers``: names re-cut with :meth:`Split.at`, or splits as given."""
    if layers is None:
        return (split,)
    if isinstance(layers, (str, Split)):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty: name at least one layer, or pass layers=None "
                         "for the split's own layer")
    out = []
    for layer in layers:
        if isinstance(layer, Split):
            out.append(layer)
        elif isinstance(layer, str):
            out.append(split if layer == split.layer else split.at(layer))
        else:
            raise TypeError(f"layers must list layer names (str) or jaxcam.Split objects; "
                            f"got {type(layer).__name__}")
    return tuple(out)


def explain(build: Callable, split: Split, x, target=None, *, layers=None, fuse: str = "mean",
            aug_smooth: bool = False, augmentations=None, eigen_smooth: bool = False,
            **options) -> Array:
    """Runs the method ``build`` makes, with the options every map method shares.

    Args:
      build: ``build(split, x, target, **options) -> Built``.
      layers: None (the split's layer), or a list of layer names and splits of the same
        network; their maps are fused by ``fuse``.
      fuse: "mean", "max" or "layercam" (:func:`fuse_maps`).
      aug_smooth: average the maps of pytorch-grad-cam's six augmented copies.
      augmentations: the copies to average instead (a list of :class:`Augment`).
      eigen_smooth: reduce the weighted activations by their first principal component.
    """
    x = check_inputs(split, x)
    check_choice("fuse", fuse, FUSIONS)
    splits = layer_splits(split, layers)
    augments = _check_augmentations(aug_smooth, augmentations)
    built = [build(s, x, target, **options) for s in splits]
    programs = [b.program for b in built]
    plain = len(splits) == 1 and augments is None
    shared = eigen_smooth or layers is not None or augments is not None
    if shared and not all(isinstance(p, Program) for p in programs):
        raise ValueError("layers, aug_smooth, augmentations and eigen_smooth apply to methods "
                         "that return maps, not to guided backpropagation's input gradients")
    if eigen_smooth:
        programs = [p.replace(reduce="eigen") for p in programs]
    first = built[0]
    if plain:
        return run_on(first.mesh, programs[0], splits[0], x, first.classes, first.key)
    finish = programs[0].finish
    if len(programs) > 1:  # each layer scaled at its own resolution, resized when fused
        programs = [p.replace(finish=p.finish.replace(upsample=False)) for p in programs]
    fused = Fused(tuple(programs), augments or (Augment(),), fuse, bool(finish.normalize),
                  bool(finish.upsample))
    return run_on(first.mesh, fused, splits, x, first.classes, first.key)


