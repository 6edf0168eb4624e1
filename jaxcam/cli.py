"""The ``jaxcam`` command line: ``demo``, ``explain IMAGE``, ``compare IMAGE``, ``models``."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np

METHODS = ("grad_cam", "grad_cam_pp", "cam", "guided_grad_cam")


def class_names() -> list[str]:
    """The 1000 ImageNet class names, by class index."""
    return json.loads(resources.files("jaxcam").joinpath("assets/imagenet_classes.json").read_text())


def _top5(probs: np.ndarray, names: list[str] | None) -> str:
    lines = []
    for c in np.argsort(-probs)[:5]:
        name = names[c] if names and len(names) == probs.shape[-1] else ""
        lines.append(f"  {c:4d}  {probs[c]:6.1%}  {name}")
    return "\n".join(lines)


def _explain(image_path, out_dir: Path, *, model: str, weights, layer, methods, target,
             prefix: str) -> list[Path]:
    import jax

    import jaxcam

    split = jaxcam.models.load(model, layer=layer, weights=weights)
    image = jaxcam.viz.read_image(image_path)
    x = split.preprocess(image)[None]
    probs = np.asarray(jax.nn.softmax(split.logits(x), axis=-1))[0]
    target = int(np.argmax(probs)) if target is None else target
    print(f"{model} on {image_path}, top-5 classes:")
    print(_top5(probs, class_names()))
    written = []
    for method in methods:
        maps = getattr(jaxcam, method)(split, x, target)
        if method == "guided_grad_cam":  # an image of gradients: show its magnitude
            maps = jaxcam._weighting.normalize(np.abs(maps).sum(-1))
        path = out_dir / f"{prefix}{method}_class{target}.png"
        jaxcam.viz.write_png(path, jaxcam.viz.overlay(image, np.asarray(maps[0]),
                                                      preprocess=split.preprocess))
        written.append(path)
    print(f"explained class {target} at layer {split.layer!r}; wrote:")
    for path in written:
        print(f"  {path.resolve()}")
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
             prefix=f"{Path(args.image).stem}_")
    return 0


def _compare(args) -> int:
    import jax

    import jaxcam

    split = jaxcam.models.load(args.model, layer=args.layer, weights=args.weights,
                               activation=args.activation)
    image = jaxcam.viz.read_image(args.image)
    x = split.preprocess(image)[None]
    target = args.target
    if target is None:
        target = int(np.argmax(np.asarray(split.logits(x))[0]))
    result = jaxcam.compare_derivatives(split, x, target, link=args.link,
                                        chunk_size=args.chunk_size)
    jax.block_until_ready(result)
    out, stem = Path(args.out), f"{Path(args.image).stem}_{args.link}_class{target}"
    diff = np.abs(np.asarray(result.maps_exact[0]) - np.asarray(result.maps_approx[0]))
    images = {"exact": np.asarray(result.maps_exact[0]),
              "approx": np.asarray(result.maps_approx[0]),
              "difference": diff / diff.max() if diff.max() > 0 else diff}
    written = [jaxcam.viz.write_png(out / f"{stem}_{name}.png",
                                    jaxcam.viz.overlay(image, m, preprocess=split.preprocess))
               for name, m in images.items()]
    stats = {"image": str(args.image), "model": args.model, "layer": split.layer,
             "activation": args.activation, "link": args.link, "class": target,
             "piecewise_linear_head": split.piecewise_linear_head,
             "max_abs_map_difference": float(diff.max()),
             **{k: v[0] for k, v in result.summary().items()}}
    written.append(jaxcam.viz.write_text(out / f"{stem}_stats.json",
                                         json.dumps(stats, indent=2) + "\n"))
    print(f"exact vs closed-form Grad-CAM++, {args.model} at {split.layer!r}, link "
          f"{args.link!r}, class {target}:")
    for key in ("spearman", "relative_l2", "iou_top20", "max_alpha_diff"):
        print(f"  {key:15s} {stats[key]:.6g}")
    print("wrote:")
    for path in written:
        print(f"  {path.resolve()}")
    return 0


def _models(args) -> int:
    from jaxcam import models

    for name in models.available():
        info = models.info(name)
        weights = "bundled ImageNet weights" if info.pretrained else "weights: a torchvision .pth"
        print(f"{name:20s} default layer {info.default_layer:12s} "
              f"{len(models.layers(name)):3d} layers  {weights}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxcam", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="explain the bundled cat photo with EfficientNet-Lite0")
    demo.add_argument("--out", default="jaxcam-demo", help="output folder (default ./jaxcam-demo)")
    demo.set_defaults(run=_demo)
    explain = sub.add_parser("explain", help="explain your own photo")
    explain.add_argument("image", help="a photo (PNG, JPEG, ...)")
    explain.add_argument("--model", default="efficientnet_lite0", help="see `jaxcam models`")
    explain.add_argument("--weights", default=None,
                         help="torchvision .pth or converted .msgpack (default: bundled)")
    explain.add_argument("--layer", default=None, help="target layer (default: the model's)")
    explain.add_argument("--method", default="grad_cam", choices=METHODS)
    explain.add_argument("--class", dest="target", type=int, default=None,
                         help="class index to explain (default: the predicted class)")
    explain.add_argument("--out", default="jaxcam-out", help="output folder")
    explain.set_defaults(run=_explain_cmd)
    compare = sub.add_parser("compare", help="exact versus closed-form Grad-CAM++ on a photo")
    compare.add_argument("image", help="a photo (PNG, JPEG, ...)")
    compare.add_argument("--model", default="efficientnet_lite0", help="see `jaxcam models`")
    compare.add_argument("--weights", default=None, help="as for explain")
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
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"jaxcam: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
