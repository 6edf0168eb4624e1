"""Every CAM method by name, each declared once.

A method is its builder, ``build(split, x, target=None, *, options) -> Built`` (the
program and its traced arguments), decorated with :func:`register_method`: the decorator
reads the options, their defaults and types from the builder's signature and their help
from :data:`OPTION_HELP` (or the declaration's own ``help``), and derives everything else:

- the public function ``jaxcam.<name>(split, x, target=None, **options) -> maps``, with
  its signature and a docstring whose option list is generated;
- the :class:`MethodInfo` that the command line (``--method`` choices and
  ``name:option=value``), the README's method table and the shared test suite read.

This module imports no method: the families (:mod:`jaxcam.methods._gradient`,
:mod:`jaxcam.methods._perturbation`, :mod:`jaxcam.methods._guided`) import it and declare theirs.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from collections.abc import Callable
from typing import Any

from jaxcam._chunking import DEFAULT_CHUNKS
from jaxcam.methods._explain import explain
from jaxcam.targets._links import LINKS

KINDS = ("gradient", "activation", "perturbation", "guided")
NEEDS = ("key", "guided", "gap_linear_head")
RETURNS = ("map", "input_gradients")
# what a chunked axis holds, and its default chunk (a method's ``chunk_size``)
CHUNK_AXES = {
    "directions": "activations the exact engines differentiate together (default "
                  f"{DEFAULT_CHUNKS['directions']})",
    "samples": "noisy copies of the input (default: near-equal chunks of at most 8 per "
               "device, rounded up to a multiple of the device count)",
    "masks": f"masked inputs through the whole network (default {DEFAULT_CHUNKS['masks']})",
    "channels": "ablated copies of the activations through the head (default "
                f"{DEFAULT_CHUNKS['channels']})",
}
# the options every map method takes (:func:`jaxcam.methods._explain.explain`), with their defaults
SHARED_OPTIONS = {"layers": None, "fuse": "mean", "aug_smooth": False, "augmentations": None,
                  "eigen_smooth": False}

# The vocabulary: one line of help per option name, every built-in method's options among
# them (one name per idea); a declaration's ``help`` overrides an entry where the option
# means something particular to its method, and may add a user method's own options.
OPTION_HELP = {
    "split": "the model split at the target layer (:func:`jaxcam.models.load`).",
    "x": "preprocessed images (B, H, W, C).",
    "target": "None (each image's predicted class), an int, an int array (B,), a target "
              "of :mod:`jaxcam.targets` (segmentation, boxes, embeddings, ...; traced) or a "
              "callable ``outputs -> scores (B,)``.",
    "link": f"{', '.join(repr(n).replace(chr(39), chr(34)) for n in LINKS)}: the function "
            "of the logits whose score is explained (the table of links, ``jaxcam.LINKS``).",
    "counterfactual": "explain what lowers the score (negated gradients).",
    "channels": "feature-map selection (Omeiza et al., 2019): channel indices k whose maps "
                "alone contribute (the others' activations and derivatives set to 0); "
                "None: all. Traced.",
    "neurons": "neuron selection: a box ``(i0, j0, i1, j1)`` (rows i0..i1-1, columns "
               "j0..j1-1, feature-map coordinates) or a list of ``(i, j)``; every other "
               "activation set to 0; the derivatives are the unmodified network's. Traced.",
    "upsample": "bilinearly resize the maps to the input's (H, W).",
    "normalize": "min-max scale each map to [0, 1] (an all-zero map stays zero).",
    "derivatives": '"approx" (the closed form g^2, g^3 of eq. 19) or "exact" (the true pure '
                   "derivatives, :func:`jaxcam.pure_derivatives`).",
    "engine": 'the exact derivatives\' engine: "linearised" (piecewise-linear heads), '
              '"generic" (any head; one Taylor expansion per activation) or "auto" '
              "(linearised when ``split.piecewise_linear_head``).",
    "chunk_size": "items evaluated together (``vmap``) along each of the method's chunked "
                  "axes, so memory is that of one chunk: an int for every axis, a dict per "
                  "axis (e.g. ``{'samples': 4}``) or None (each axis's default).",
    "steps": "integration steps (>= 1).",
    "variant": "whose computation to reproduce, where the papers and the peer libraries "
               "differ (each method lists its variants).",
    "baseline": "the reference input a score is compared with (traced).",
    "value": "what an ablated activation is set to (traced).",
    "comparisons": "the ranks of the compared classes by logit distance to the target (1 = "
                   "the most similar).",
    "alpha": "the weight of the compared classes' logits (traced).",
    "method": "the registered method run on the score.",
    "eps": "added to the weights' denominator (traced).",
    "key": "a ``jax.random`` key, typed (``jax.random.key(seed)``) or legacy "
           "(``jax.random.PRNGKey(seed)``); the same seed gives the same map either way.",
    "n_samples": "the number of noisy copies (>= 1).",
    "noise": "the noise spread relative to each image's value range (>= 0; traced).",
    "devices": "devices to split the copies, masks or ablations across, e.g. "
               "``jax.devices()`` (None: the default device alone).",
    "top_n": "Faster Score-CAM: score only the ``top_n`` channels of largest spatial "
             "variance of each image; the others weigh 0 (None: every channel).",
    "layers": "several cuts of the same network: layer names (re-cut by "
              ":meth:`jaxcam.Split.at`) or :class:`jaxcam.Split` objects; each layer's map "
              "is normalised at its own resolution, resized to the input and fused by "
              "``fuse`` (None: the split's layer).",
    "fuse": '"mean" (pytorch-grad-cam), "max", or "layercam" (tanh(2 M / max M) per layer, '
            "then the element-wise maximum, as torch-cam's LayerCAM).",
    "aug_smooth": "test-time augmentation: the maps of pytorch-grad-cam's six copies "
                  "(horizontal flip x intensity 0.9, 1, 1.1), each flipped back, averaged.",
    "augmentations": "the copies to average instead: a list of :class:`jaxcam.Augment`.",
    "eigen_smooth": "the map is the first principal component of the weighted activations "
                    "(:func:`jaxcam.weighting.first_component`) instead of their channel sum.",
}


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a method, read from its builder's signature.

    Attributes:
      name: the keyword.
      default: its default (:data:`inspect.Parameter.empty` when it is required).
      type: the annotation, as written (e.g. ``"int | None"``; "" when there is none).
      help: one line.
      traced: a new value never recompiles.
    """

    name: str
    default: Any
    type: str
    help: str
    traced: bool = False

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    @property
    def default_text(self) -> str:
        """"required", or "default X" ("; traced" when it is)."""
        if self.required:
            return "required"
        return f"default {self.default!r}" + ("; traced" if self.traced else "")

    def parse(self, text: str):
        """The value of ``text`` given on the command line (``name:option=value``).

        Raises:
          ValueError: the text is not a value of the option's type, or the option is not
            a number, a flag or a word.
        """
        kinds = [t.strip() for t in self.type.split("|")]
        if text == "None" and "None" in kinds:
            return None
        for kind, convert in (("bool", _parse_bool), ("int", int), ("float", float),
                              ("str", str)):
            if kind in kinds:
                try:
                    return convert(text)
                except ValueError:
                    continue
        if not set(kinds) & {"bool", "int", "float", "str"}:
            raise ValueError(f"option {self.name!r} ({self.type or 'untyped'}) cannot be set "
                             "from the command line; call the method from Python")
        raise ValueError(f"option {self.name}={text!r}: expected {self.type}")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(text)


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """A registered method.

    Attributes:
      name: the public function's name, ``jaxcam.<name>``.
      function: ``f(split, x, target=None, *, options) -> maps``, derived from ``build``.
      build: ``build(split, x, target, **options) -> Built`` (the program and its traced
        arguments); noise smoothing (:func:`jaxcam.smoothed`) and FinerCAM build on it.
      kind: "gradient" (head derivatives at the cut; noise smoothing applies),
        "activation" (the activations alone), "perturbation" (forward passes of masked
        inputs, or head passes of ablated activations) or "guided" (input gradients).
      returns: "map" (B, H, W) in [0, 1], or "input_gradients" (B, H, W, C).
      needs: what the call needs beyond a split and images: "key" (a ``jax.random``
        key), "guided" (``Split(guided=...)``), "gap_linear_head" (a global-average-pool
        + linear head).
      options: the method's own options, in its signature's order.
      chunks: the axes its ``chunk_size`` bounds (:data:`CHUNK_AXES`), in its order.
      traced: the names of the numeric options that are traced (a new value never
        recompiles).
      selectable: takes ``channels=`` and ``neurons=`` (feature-map and neuron
        selection, traced too).
      reference: the paper (or library) the method follows.
      summary: one line: what the map is.
      peers: the peer libraries' equivalents, e.g. ``("pytorch-grad-cam GradCAM",)``.
      passes_options: the builder takes ``**options`` on to another method's.
    """

    name: str
    function: Callable
    build: Callable
    kind: str
    returns: str = "map"
    needs: frozenset = frozenset()
    options: tuple[Option, ...] = ()
    chunks: tuple[str, ...] = ()
    traced: tuple[str, ...] = ()
    selectable: bool = False
    reference: str = ""
    summary: str = ""
    peers: tuple[str, ...] = ()
    passes_options: bool = False

    def option(self, name: str) -> Option:
        """The option called ``name``.

        Raises:
          ValueError: the method has no such option, naming those it has.
        """
        for option in self.options:
            if option.name == name:
                return option
        raise ValueError(f"{self.name} has no option {name!r}; its options are "
                         f"{', '.join(o.name for o in self.options)}")


METHODS: dict[str, MethodInfo] = {}


def register_method(*, kind: str, reference: str, summary: str, returns: str = "map",
                    needs=(), traced=(), chunks=(), peers=(), help: dict | None = None,
                    name: str | None = None) -> Callable:
    """Declares a method: decorates its builder ``build_<name>`` and registers it.

    The builder is ``build(split, x, target=None, *, options) -> Built`` with every option
    keyword-only, annotated and defaulted (a required option, like ``key``, has no
    default). The method's public function, its docstring's option list, the command
    line's choices and the README's table are derived from the declaration.

    Args:
      kind, returns, needs, reference, summary, peers: as :class:`MethodInfo`; "key" is
        added to ``needs`` when the builder requires a ``key``.
      traced: the options whose new values never recompile.
      chunks: the axes (:data:`CHUNK_AXES`) its ``chunk_size`` option bounds; a method with
        a ``chunk_size`` option declares them, and the option's help lists them.
      help: one line per option that :data:`OPTION_HELP` lacks, or that means something
        particular to this method.
      name: the public name (default: the builder's name without ``build_``).

    Returns:
      The decorator, which returns the builder unchanged.

    Example::

        @jaxcam.register_method(kind="gradient", reference="my paper, 2026",
                                summary="Grad-CAM of the softmax")
        def build_softmax_grad_cam(split, x, target=None, *, upsample: bool = True):
            return jaxcam.method_info("grad_cam").build(split, x, target, link="softmax",
                                                        upsample=upsample)

        maps = jaxcam.softmax_grad_cam(split, x, 282)
    """
    def declare(build: Callable) -> Callable:
        info = _method_info(build, name or build.__name__.removeprefix("build_"), kind=kind,
                            returns=returns, needs=frozenset(needs), traced=tuple(traced),
                            chunks=tuple(chunks),
                            reference=reference, summary=summary, peers=tuple(peers),
                            help=dict(help or {}))
        if info.name in METHODS:
            raise ValueError(f"a method named {info.name!r} is already registered")
        METHODS[info.name] = info
        return build

    return declare


def _method_info(build: Callable, name: str, *, help: dict, **fields) -> MethodInfo:
    if not name.isidentifier():
        raise ValueError(f"a method's name must be a Python identifier, got {name!r}")
    if fields["kind"] not in KINDS or fields["returns"] not in RETURNS:
        raise ValueError(f"kind must be one of {KINDS} and returns one of {RETURNS}")
    params = list(inspect.signature(build).parameters.values())
    if [p.name for p in params[:3]] != ["split", "x", "target"]:
        raise ValueError(f"build_{name} must begin (split, x, target=None, *, ...)")
    passes = any(p.kind is p.VAR_KEYWORD for p in params)
    options = []
    for p in params[3:]:
        if p.kind is p.VAR_KEYWORD:
            continue
        if p.kind is not p.KEYWORD_ONLY:
            raise ValueError(f"build_{name}: option {p.name!r} must be keyword-only")
        text = help.get(p.name, OPTION_HELP.get(p.name))
        if p.name == "chunk_size" and text:
            text += " Axes: " + "; ".join(f"{a}: {CHUNK_AXES.get(a, a)}"
                                          for a in fields["chunks"]) + "."
        if not text:
            raise ValueError(f"build_{name}: option {p.name!r} has no help: declare "
                             f"help={{{p.name!r}: '...'}}")
        annotation = "" if p.annotation is p.empty else str(p.annotation)
        options.append(Option(p.name, p.default, annotation, text,
                              p.name in fields["traced"]))
    names = {o.name for o in options}
    if bool(fields["chunks"]) != ("chunk_size" in names) or not set(fields["chunks"]) <= set(
            CHUNK_AXES):
        raise ValueError(f"build_{name}: a chunk_size option goes with chunks=(axes...), "
                         f"axes of {tuple(CHUNK_AXES)}")
    unknown = set(fields["traced"]) - names
    if unknown or not set(fields["needs"]) <= set(NEEDS):
        raise ValueError(f"build_{name}: traced options {sorted(unknown)} are not options, "
                         f"or needs is not a subset of {NEEDS}")
    needs = fields.pop("needs") | {o.name for o in options if o.name == "key" and o.required}
    # a method that passes its options on (FinerCAM) takes its inner method's selection
    selectable = {"channels", "neurons"} <= names or passes
    info = MethodInfo(name=name, function=build, build=build, needs=frozenset(needs),
                      options=tuple(options), selectable=selectable,
                      passes_options=passes, **fields)
    return dataclasses.replace(info, function=_public_function(info, build.__doc__ or "", help))


def _public_function(info: MethodInfo, doc: str, help: dict) -> Callable:
    """``jaxcam.<name>``: the options checked against the declaration, then
    :func:`jaxcam.methods._explain.explain` of the builder."""
    known = {o.name for o in info.options} | set(SHARED_OPTIONS)
    required = [o.name for o in info.options if o.required]

    def method(split, x, target=None, **options):
        unknown = sorted(set(options) - known)
        if unknown and not info.passes_options:
            raise TypeError(f"{info.name}() got an unexpected keyword argument "
                            f"{unknown[0]!r}; its options are "
                            f"{', '.join(o.name for o in info.options)} and "
                            f"{', '.join(SHARED_OPTIONS)}")
        missing = [o for o in required if o not in options]
        if missing:
            raise TypeError(f"{info.name}() missing required keyword argument "
                            f"{missing[0]!r}: {info.option(missing[0]).help}")
        return explain(info.build, split, x, target, **options)

    method.__name__ = method.__qualname__ = info.name
    method.__module__ = "jaxcam"
    method.__doc__ = _docstring(info, doc, help)
    method.__signature__ = _signature(info)
    return method


def _signature(info: MethodInfo) -> inspect.Signature:
    P = inspect.Parameter
    params = [P("split", P.POSITIONAL_OR_KEYWORD), P("x", P.POSITIONAL_OR_KEYWORD),
              P("target", P.POSITIONAL_OR_KEYWORD, default=None)]
    params += [P(o.name, P.KEYWORD_ONLY, default=o.default,
                 annotation=o.type or P.empty) for o in info.options]
    params += [P(n, P.KEYWORD_ONLY, default=d) for n, d in SHARED_OPTIONS.items()]
    if info.passes_options:
        params.append(P("options", P.VAR_KEYWORD))
    return inspect.Signature(params)


def _docstring(info: MethodInfo, doc: str, help: dict) -> str:
    """The builder's description, then the generated arguments, returns, peers and the
    builder's example."""
    doc = inspect.cleandoc(doc)
    description, _, example = doc.partition("Example::")
    lines = [description.rstrip(), "", "Args:"]
    for name in ("split", "x", "target"):
        lines += _wrap(f"{name}: {help.get(name, OPTION_HELP[name])}")
    for option in info.options:
        lines += _wrap(f"{option.name} ({option.default_text}): {option.help}")
    if info.passes_options:
        lines += _wrap("options: passed on to the method it runs.")
    if info.returns == "map" and info.name == "grad_cam":
        for name, default in SHARED_OPTIONS.items():
            lines += _wrap(f"{name} (default {default!r}): {OPTION_HELP[name]}")
    elif info.returns == "map":
        lines += _wrap(f"{', '.join(SHARED_OPTIONS)}: the options every map method takes, "
                       "as :func:`jaxcam.grad_cam`.")
    lines += ["", "Returns:"]
    lines += _wrap("Maps (B, H, W) in [0, 1], or (B, h, w) at the layer's resolution with "
                  "``upsample=False``." if info.returns == "map" else
                  "Input gradients (B, H, W, C).")
    if info.peers:
        lines += ["", f"Peers: {'; '.join(info.peers)}."]
    lines += ["", f"Reference: {info.reference}."]
    if example.strip():
        lines += ["", "Example::", "", textwrap.indent(textwrap.dedent(example.strip("\n")),
                                                       "    ")]
    return "\n".join(lines)


def _wrap(text: str) -> list[str]:
    """One docstring entry, wrapped at 88 columns with a hanging indent."""
    return textwrap.wrap(text, 86, initial_indent="  ", subsequent_indent="    ")


def available_methods() -> list[str]:
    """The names of every registered method, in the registry's order."""
    return list(METHODS)


def method_info(method: str | Callable) -> MethodInfo:
    """The :class:`MethodInfo` of a method given by name, public function or builder.

    Raises:
      ValueError: not a registered method, naming the registered ones.
    """
    for info in METHODS.values():
        if method == info.name or method is info.function or method is info.build:
            return info
    raise ValueError(f"unknown method {getattr(method, '__name__', method)!r}; the "
                     f"registered methods are {available_methods()}")


def options_table() -> str:
    """The vocabulary as a Markdown table (the README's options table): every option of a
    registered method, what it means, and the methods that take it (with the axes each
    one's ``chunk_size`` bounds)."""
    names: dict[str, list[str]] = {}
    for info in METHODS.values():
        for option in info.options:
            names.setdefault(option.name, []).append(
                f"`{info.name}`" + (f" ({', '.join(info.chunks)})"
                                    if option.name == "chunk_size" else ""))
    names.update({name: ["every map method"] for name in SHARED_OPTIONS})
    rows = ["| option | meaning | methods |", "|---|---|---|"]
    for name, methods in names.items():
        meaning = OPTION_HELP.get(name) or next(
            o.help for i in METHODS.values() for o in i.options if o.name == name)
        rows.append(f"| `{name}` | {_markdown(meaning)} | {', '.join(methods)} |")
    return "\n".join(rows) + "\n"


def _markdown(text: str) -> str:
    """Docstring markup as Markdown: ``:func:`x``` and ````x```` become ```x```."""
    return re.sub(r":\w+:`([^`]+)`", r"`\1`", text).replace("``", "`")


def _needs_text(info: MethodInfo) -> str:
    return ", ".join(sorted(info.needs)) or "-"


def method_table() -> str:
    """The registry as a Markdown table (the README's method table)."""
    rows = ["| method | map | needs | returns | traced options | reference | peers |",
            "|---|---|---|---|---|---|---|"]
    for info in METHODS.values():
        traced = [f"`{t}`" for t in info.traced] + (["selection"] if info.selectable else [])
        rows.append(f"| `{info.name}` | {info.summary} | {_needs_text(info)} | {info.returns} "
                    f"| {', '.join(traced) or '-'} | {info.reference} "
                    f"| {'; '.join(info.peers) or '-'} |")
    return "\n".join(rows) + "\n"
