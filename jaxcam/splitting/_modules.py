"""Split a user's own Flax model (linen or NNX) at a named submodule, without rewriting it.

``features(variables, x)`` runs the model and returns the submodule's output A (its first
call); ``head(variables, A, x)`` runs the model again on x with the submodule's output
replaced by A. Under ``jit`` the unused parts are removed: where the submodule is a cut
of the network (every path from x to the outputs goes through it), the head never
recomputes the trunk. Where it is not (a skip connection bypasses it; a token model's
class token is dropped by ``reshape``), what does not flow through A is recomputed from
x and held fixed, so the derivatives in A are those a PyTorch forward hook on that
module gives (the autograd graph through the hooked output only).

Linen models are intercepted with :func:`flax.linen.intercept_methods`, matching the
submodule by its path (``"encoder/layers/encoder_layer_11/ln_1"``, the names in its
variables). NNX models are merged from their state for every call and the submodule is
replaced, on that copy, by a tap that records or substitutes its output.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
from flax import nnx

from jaxcam.splitting._devices import replicate
from jaxcam.splitting._split import Split, TokenGrid


def _parse(path) -> tuple[str, ...]:
    if isinstance(path, str):
        parts = tuple(p for p in path.split("/") if p)
    elif isinstance(path, (tuple, list)) and all(isinstance(p, (str, int)) for p in path):
        parts = tuple(str(p) for p in path)
    else:
        raise TypeError(f"path must be a submodule path such as 'layer4' or "
                        f"'encoder/layers/encoder_layer_11/ln_1', got {path!r}")
    if not parts:
        raise ValueError("path is empty: name the submodule to split at, e.g. 'layer4'")
    return parts


def _missing(path: tuple[str, ...], seen: list[tuple[str, ...]], kind: str) -> ValueError:
    names = ["/".join(p) for p in seen if p]
    wanted = "/".join(path)
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.4)
    near = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    listed = ", ".join(map(repr, names[:12])) + (" ..." if len(names) > 12 else "")
    return ValueError(f"no submodule {wanted!r} was called by the {kind} model's forward "
                      f"pass.{near} Submodules called: {listed or 'none'}")


def _called_once(path, calls: int, kind: str) -> None:
    if calls > 1:
        raise ValueError(f"submodule {'/'.join(path)!r} is called {calls} times in one "
                         f"forward pass of the {kind} model (a shared module): its output "
                         "is not one activation map. Split at a module called once.")


# --- linen

@dataclasses.dataclass(frozen=True)
class _Linen:
    """One forward pass of a linen model, tapping (A is None) or substituting the
    submodule at ``path``: a hashable, pure function of (variables, x[, A])."""

    model: nn.Module
    path: tuple[str, ...]
    method: str
    kwargs: tuple[tuple[str, Any], ...]

    def run(self, variables, x, a=None):
        found, seen = [], []

        def interceptor(next_fun, args, kwargs, context):
            module_path = tuple(context.module.path)
            if context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            seen.append(module_path)
            if module_path != self.path:
                return next_fun(*args, **kwargs)
            if a is not None:
                found.append(None)
                return a
            out = next_fun(*args, **kwargs)
            found.append(out)
            return out

        with nn.intercept_methods(interceptor):
            out = self.model.apply(variables, x, method=self.method, **dict(self.kwargs))
        if not found:
            raise _missing(self.path, seen, "linen")
        _called_once(self.path, len(found), "linen")
        return found[0] if a is None else out


@dataclasses.dataclass(frozen=True)
class _Features:
    run: Any

    def __call__(self, variables, x):
        return self.run.run(variables, x)


@dataclasses.dataclass(frozen=True)
class _Head:
    run: Any

    def __call__(self, variables, a, x):
        return self.run.run(variables, x, a)


# --- NNX

class _Tap:
    """Stands in for an NNX submodule on a merged copy: records its output, or returns A."""

    def __init__(self, inner, a):
        self.inner, self.a, self.outputs = inner, a, []

    def __call__(self, *args, **kwargs):
        if self.a is not None:
            self.outputs.append(None)
            return self.a
        out = self.inner(*args, **kwargs)
        self.outputs.append(out)
        return out


def _is_index(parent, name: str) -> bool:
    return name.isdigit() and not hasattr(parent, name) and hasattr(parent, "__getitem__")


def _nnx_children(module) -> list[tuple[str, ...]]:
    return [tuple(str(p) for p in path) for path, _ in nnx.iter_modules(module) if path]


@dataclasses.dataclass(frozen=True)
class _Nnx:
    """One forward pass of an NNX model merged from (graphdef, state), tapping or
    substituting the submodule at ``path``."""

    graphdef: Any
    path: tuple[str, ...]
    method: str
    kwargs: tuple[tuple[str, Any], ...]

    def run(self, state, x, a=None):
        model = nnx.merge(self.graphdef, state)
        parent = model
        try:
            for name in self.path[:-1]:
                parent = parent[int(name)] if _is_index(parent, name) else getattr(parent, name)
            last = self.path[-1]
            inner = parent[int(last)] if _is_index(parent, last) else getattr(parent, last)
        except (AttributeError, IndexError, KeyError, TypeError):
            raise _missing(self.path, _nnx_children(model), "NNX") from None
        tap = _Tap(inner, a)
        if _is_index(parent, last):
            parent[int(last)] = tap
        else:
            setattr(parent, last, tap)
        out = getattr(model, self.method)(x, **dict(self.kwargs))
        if not tap.outputs:
            raise _missing(self.path, _nnx_children(model), "NNX")
        _called_once(self.path, len(tap.outputs), "NNX")
        return tap.outputs[0] if a is None else out


# --- the public function

@dataclasses.dataclass(frozen=True)
class _ModuleCut:
    """Re-splits the same model at another submodule (``Split.cut``)."""

    make: Any            # _Linen or _Nnx with the path left out
    options: tuple[tuple[str, Any], ...]

    def __call__(self, variables, layer: str) -> Split:
        run = dataclasses.replace(self.make, path=_parse(layer))
        return _split(run, variables, layer, dict(self.options), self)


def _split(run, variables, layer: str, options: dict, cut) -> Split:
    return Split(variables=replicate(variables), features=_Features(run), head=_Head(run), layer=layer,
                 head_takes_input=True, cut=cut, **options)


def split_module(model, variables=None, path=None, *, reshape: TokenGrid | None = None,
                 method: str = "__call__", apply_kwargs: Mapping[str, Any] | None = None,
                 preprocess=None, piecewise_linear_head: bool = False,
                 gap_linear_head: bool = False) -> Split:
    """A :class:`jaxcam.Split` of any Flax model at the submodule ``path``.

    Args:
      model: a ``flax.linen`` Module (with its ``variables``) or a ``flax.nnx`` Module
        (``variables`` None: its state is taken with ``nnx.split``).
      variables: the linen model's variables (``{"params": ..., "batch_stats": ...}``).
      path: the submodule, as the names in its variables path: ``"layer4"``,
        ``"encoder/layers/encoder_layer_11/ln_1"`` (NNX: attribute names and list
        indices, ``"blocks/3"``). Its output (its first call's) is A.
      reshape: a :class:`jaxcam.TokenGrid` when the submodule returns tokens (B, N, D).
      method: the model's method to run (default ``__call__``).
      apply_kwargs: keyword arguments of every forward pass, e.g. ``{"train": False}``.
      preprocess: the model's image transform (a :class:`jaxcam.Preprocess`), or None.
      piecewise_linear_head, gap_linear_head: as :class:`jaxcam.Split` (enable the
        linearised exact engine and CAM); leave False when unsure.

    The head is ``head(variables, A, x)``: the model run on x with the submodule's output
    replaced by A. Where the submodule is not a cut of the network (a skip connection
    bypasses it), the rest is recomputed from x and held fixed, so the derivatives are
    those a PyTorch hook on that module gives.

    Example::

        split = jaxcam.split_module(model, variables, "layer4",
                                    apply_kwargs={"train": False})
        maps = jaxcam.grad_cam(split, x)
    """
    kwargs = tuple(sorted((apply_kwargs or {}).items()))
    if path is None and isinstance(variables, (str, tuple, list)):
        variables, path = None, variables
    if path is None:
        raise TypeError("split_module needs the submodule path, e.g. "
                        "split_module(model, variables, 'layer4')")
    parts = _parse(path)
    if reshape is not None and not isinstance(reshape, TokenGrid):
        raise TypeError(f"reshape must be a jaxcam.TokenGrid, got {type(reshape).__name__}")
    if isinstance(model, nnx.Module):
        if variables is not None:
            raise TypeError("an NNX model carries its own state: call "
                            "split_module(model, path) without variables")
        graphdef, variables = nnx.split(model)
        run = _Nnx(graphdef, parts, method, kwargs)
    elif isinstance(model, nn.Module):
        if not isinstance(variables, Mapping):
            raise TypeError(f"a linen model needs its variables (a dict such as "
                            f"{{'params': ...}}, from model.init), got "
                            f"{type(variables).__name__}")
        run = _Linen(model, parts, method, kwargs)
    else:
        raise TypeError(f"model must be a flax.linen or flax.nnx Module, got "
                        f"{type(model).__name__}; for any other function build "
                        "jaxcam.Split(features=..., head=...) by hand")
    options = {"reshape": reshape, "preprocess": preprocess,
               "piecewise_linear_head": bool(piecewise_linear_head),
               "gap_linear_head": bool(gap_linear_head)}
    cut = _ModuleCut(run, tuple(options.items()))
    return _split(run, variables, "/".join(parts), options, cut)
