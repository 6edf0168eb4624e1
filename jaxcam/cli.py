"""The ``jaxcam`` command line: ``demo``, ``explain IMAGE``, ``compare IMAGE``, ``models``,
``methods``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import resources
from pathlib import Path

import numpy as np

WEIGHTS_HELP = ("a torchvision .pth, a converted .msgpack, or 'random'; required for models "
                "without bundled weights (efficientnet_lite0 has them)")


def class_names() -> list[str]:
    """The 1000 ImageNet class names, by class index."""
    return json.loads(resources.files("jaxcam").joinpath("assets/imagenet_classes.json").read_text())


def _top5(probs: np.ndarray, names: list[str] | None) -> str:
    lines = []
    for c in np.argsort(-probs)[:5]:
        name = names[c] if names and len(names) == probs.shape[-1] else ""
        lines.append(f"  {c:4d}  {probs[c]:6.1%}  {name}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other jaxcam error."""

    def error(self, message):
        _fail(f"{message} (see `{self.prog} --help`)")


def _fail(message: str):
    """Prints ``jaxcam: error: message`` as one line on stderr and exits with status 2."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    print(f"jaxcam: error: {'; '.join(lines)}", file=sys.stderr)
    sys.exit(2)


def _say(*lines: str) -> None:
    """Prints to stdout; a closed pipe (``jaxcam ... | head -1``) silences the rest of the
    output instead of failing: the files are written by then, the reader left early."""
    try:
        print(*lines, sep="\n", flush=True)
    except BrokenPipeError:
        # The Python docs' recipe: point stdout at devnull so that the interpreter's final
        # flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _weights(model: str, weights: str | None) -> str | None:
    """The ``weights`` argument of ``jaxcam.models.load`` for a command line's --weights.

    Models without bundled weights need --weights: explaining a random network by accident
    draws maps that mean nothing. ``--weights random`` asks for one on purpose.
    """
    from jaxcam import models

    if weights is None and models.info(model).pretrained is None:
        raise ValueError(
            f"{model} has no bundled weights: pass --weights FILE, a torchvision checkpoint "
            f"(.pth) or a file converted with `python -m pretrained_ports convert {model} "
            f"FILE.pth -o {model}.msgpack`; or --weights random for a randomly initialised "
            "network")
    if weights == "random":
        print(f"jaxcam: note: {model} has random weights (--weights random): its maps explain "
              "no learned features", file=sys.stderr)
    return weights


def _explain(image_path, out_dir: Path, *, model: str, weights, layer, methods, target,
             prefix: str, seed: int = 0) -> list[Path]:
    import jax

    import jaxcam

    image = jaxcam.viz.read_image(image_path)
    split = jaxcam.models.load(model, layer=layer, weights=_weights(model, weights))
    x = split.preprocess(image)[None]
    probs = np.asarray(jax.nn.softmax(split.logits(x), axis=-1))[0]
    target = int(np.argmax(probs)) if target is None else target
    overlays = {}
    for method in methods:
        info = jaxcam.method_info(method)
        options = {"key": jax.random.key(seed)} if "key" in info.needs else {}
        maps = info.function(split, x, target, **options)
        if info.returns == "input_gradients":  # an image of gradients: show its magnitude
            maps = jaxcam.weighting.normalize(np.abs(maps).sum(-1))
        overlays[out_dir / f"{prefix}{method}_class{target}.png"] = jaxcam.viz.overlay(
            image, np.asarray(maps[0]), preprocess=split.preprocess)
    written = jaxcam.viz.write_all(overlays)  # files first: printing cannot stop them
    _say(f"{model} on {image_path}, top-5 classes:", _top5(probs, class_names()),
         f"explained class {target} at layer {split.layer!r}; wrote:",
         *(f"  {path.resolve()}" for path in written))
    return written


def _demo(args) -> int:
    photo = resources.files("jaxcam").joinpath("assets/chelsea.png")
    with resources.as_file(photo) as path:
        _explain(path, Path(args.out), model="efficientnet_lite0", weights=None, layer=None,
                 methods=("grad_cam", "grad_cam_pp"), target=None, prefix="chelsea_")
    return 0


def _explain_cmd(args) -> int:
    _explain(args.image, Path(args.out), model=args.model, weights=args.weights,
             layer=args.layer, methods=(args.method,), target=args.target,
             prefix=f"{Path(args.image).stem}_", seed=args.seed)
    return 0


def _compare(args) -> int:
    import jax

    import jaxcam

    image = jaxcam.viz.read_image(args.image)
    split = jaxcam.models.load(args.model, layer=args.layer,
                               weights=_weights(args.model, args.weights),
                               activation=args.activation)
    x = split.preprocess(image)[None]
    target = args.target
    if target is None:
        target = int(np.argmax(np.asarray(split.logits(x))[0]))
    result = jaxcam.compare_derivatives(split, x, target, link=args.link,
                                        chunk_size=args.chunk_size)
    jax.block_until_ready(result)
    out, stem = Path(args.out), f"{Path(args.image).stem}_{args.link}_class{target}"
    diff = np.abs(np.asarray(result.maps_exact[0]) - np.asarray(result.maps_approx[0]))
    maps = {"exact": np.asarray(result.maps_exact[0]),
            "approx": np.asarray(result.maps_approx[0]),
            "difference": diff / diff.max() if diff.max() > 0 else diff}
    files = {out / f"{stem}_{name}.png": jaxcam.viz.overlay(image, m,
                                                            preprocess=split.preprocess)
             for name, m in maps.items()}
    stats = {"image": str(args.image), "model": args.model, "layer": split.layer,
             "activation": args.activation, "link": args.link, "class": target,
             "piecewise_linear_head": split.piecewise_linear_head,
             "max_abs_map_difference": float(diff.max()),
             **{k: v[0] for k, v in result.summary().items()}}
    files[out / f"{stem}_stats.json"] = json.dumps(stats, indent=2) + "\n"
    written = jaxcam.viz.write_all(files)  # all four or none; files first, then printing
    _say(f"exact vs closed-form Grad-CAM++, {args.model} at {split.layer!r}, link "
         f"{args.link!r}, class {target}:",
         *(f"  {key:16s} {stats[key]:.6g}"
           for key in ("spearman", "relative_l2", "iou_top20", "max_alpha_diff",
                       "kink_activations")),
         "wrote:", *(f"  {path.resolve()}" for path in written))
    return 0


def _models(args) -> int:
    from jaxcam import models

    lines = []
    for name in models.available():
        info = models.info(name)
        weights = "bundled ImageNet weights" if info.pretrained else "weights: a torchvision .pth"
        lines.append(f"{name:20s} default layer {info.default_layer:12s} "
                     f"{len(models.layers(name)):3d} layers  {weights}")
    _say(*lines)
    return 0


def _methods(args) -> int:
    import jaxcam

    if args.markdown:
        _say(jaxcam.method_table().rstrip("\n"))
        return 0
    lines = []
    for name in jaxcam.available_methods():
        info = jaxcam.method_info(name)
        needs = ", ".join(sorted(info.needs)) or "-"
        lines.append(f"{name:20s} {info.kind:12s} needs {needs:16s} {info.summary}")
    _say(*lines)
    return 0


def main(argv: list[str] | None = None) -> int:
    from jaxcam import available_methods

    parser = _Parser(prog="jaxcam", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="explain the bundled cat photo with EfficientNet-Lite0")
    demo.add_argument("--out", default="jaxcam-demo", help="output folder (default ./jaxcam-demo)")
    demo.set_defaults(run=_demo)
    explain = sub.add_parser("explain", help="explain your own photo")
    explain.add_argument("image", help="a photo: PNG, JPEG, WebP, BMP or TIFF")
    explain.add_argument("--model", default="efficientnet_lite0", help="see `jaxcam models`")
    explain.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    explain.add_argument("--layer", default=None, help="target layer (default: the model's)")
    explain.add_argument("--method", default="grad_cam", choices=available_methods(),
                         help="see `jaxcam methods`")
    explain.add_argument("--seed", type=int, default=0,
                         help="random seed of the methods that draw noise (default 0)")
    explain.add_argument("--class", dest="target", type=int, default=None,
                         help="class index to explain (default: the predicted class)")
    explain.add_argument("--out", default="jaxcam-out", help="output folder")
    explain.set_defaults(run=_explain_cmd)
    compare = sub.add_parser("compare", help="exact versus closed-form Grad-CAM++ on a photo")
    compare.add_argument("image", help="a photo: PNG, JPEG, WebP, BMP or TIFF")
    compare.add_argument("--model", default="efficientnet_lite0", help="see `jaxcam models`")
    compare.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    compare.add_argument("--layer", default=None, help="target layer (default: the model's)")
    compare.add_argument("--activation", default="relu",
                         choices=("relu", "gelu", "silu", "softplus"),
                         help="activation after the split (smooth ones: a study tool)")
    compare.add_argument("--link", default="softmax",
                         choices=("exp", "softmax", "log_softmax", "logit"))
    compare.add_argument("--class", dest="target", type=int, default=None)
    compare.add_argument("--chunk-size", type=int, default=None,
                         help="directions per batch of the exact engines (memory)")
    compare.add_argument("--out", default="jaxcam-compare", help="output folder")
    compare.set_defaults(run=_compare)
    sub.add_parser("models", help="list the model zoo").set_defaults(run=_models)
    methods = sub.add_parser("methods", help="list the CAM methods")
    methods.add_argument("--markdown", action="store_true",
                         help="print the README's Markdown table")
    methods.set_defaults(run=_methods)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as e:  # bad input: images, weights files, paths, options
        _fail(str(e) or type(e).__name__)


if __name__ == "__main__":
    sys.exit(main())
