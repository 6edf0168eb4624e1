"""``python -m benchmarks curves --axis AXIS``: how a method's cost grows along one axis,
against its floor on the same axes.

Each axis is a list of points; at each point the method and its floor (the plain work it
is made of) are jit-compiled once (``compile_s``), then timed interleaved, ``repeats``
calls each after one warm-up (``median_s``, every call ending in
``jax.block_until_ready``). Memory is XLA's own account of each compiled program:
arguments, outputs and temporaries (``memory_analysis()``), the same on any backend and
unaffected by other processes.

- ``batch``: Grad-CAM on EfficientNet-Lite0 (``_swish``, 224 px) at batch 1 to 64;
  floor: the plain forward of the batch.
- ``samples``: Smooth Grad-CAM++ on EfficientNet-Lite0, one image, 1 to 50 noisy copies;
  floor: the forward of the n copies as one batch.
- ``masks``: Score-CAM on ResNet-18 (``layer4``, 512 masks, 112 px), one image,
  ``chunk_size`` 4 to 128 masked images per chunk; floor: the 512 masked images through
  the forward, the same chunk at a time.
- ``depth``: Grad-CAM on ResNet-50 (224 px, batch 8) split at ``layer1`` to ``layer4``;
  floor: the plain forward.
- ``engine``: exact Grad-CAM++ (``link="softmax"``) on the ReLU shapes network (64 px,
  batch 4), split ever earlier (a larger head), by the generic and the linearised engines;
  floor: the closed form at the same cut.

Each writes ``benchmarks/curves/AXIS.json`` and ``AXIS.md`` and the plot
``benchmarks/figures/curve_AXIS.png`` (matplotlib, the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from benchmarks._timing import machine, measure_many

ROOT = Path(__file__).resolve().parent
AXES = ("batch", "samples", "masks", "depth", "engine")
QUICK = {"batch": [1, 2], "samples": [1, 2], "masks": [8, 16], "depth": ["layer3", "layer4"],
         "engine": ["act5"]}


def memory_bytes(fn, *args) -> int:
    """XLA's peak estimate of ``jax.jit(fn)(*args)``: arguments + outputs + temporaries."""
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               + stats.temp_size_in_bytes)


def _images(n: int, size: int) -> jax.Array:
    return jax.random.normal(jax.random.key(0), (n, size, size, 3), jnp.float32)


def _point(x, calls: dict, repeats: int) -> dict:
    """One point: ``calls`` is ``label -> (fn, args)``; each timed and measured."""
    jitted = {label: (jax.jit(fn), args) for label, (fn, args) in calls.items()}
    timed = measure_many(jitted, repeats=repeats)
    return {"x": x, **{label: {"compile_s": timed[label]["compile_s"],
                               "median_s": timed[label]["median_s"],
                               "memory_bytes": memory_bytes(fn, *args)}
                       for label, (fn, args) in calls.items()}}


def batch_points(points, repeats):
    split = jaxcam.models.load("efficientnet_lite0")
    for b in points:
        x = _images(b, 224)
        yield _point(b, {"grad_cam": (lambda s, x: jaxcam.grad_cam(s, x, 1), (split, x)),
                         "floor": (lambda s, x: s.logits(x), (split, x))}, repeats)


def samples_points(points, repeats):
    split = jaxcam.models.load("efficientnet_lite0")
    x, key = _images(1, 224), jax.random.key(0)
    for n in points:
        copies = jnp.repeat(x, n, axis=0)
        yield _point(n, {
            "smooth_grad_cam_pp": (lambda s, x: jaxcam.smooth_grad_cam_pp(
                s, x, 1, key=key, n_samples=n), (split, x)),
            "floor": (lambda s, c: s.logits(c), (split, copies))}, repeats)


def masks_points(points, repeats):
    split = jaxcam.models.load("resnet18", layer="layer4", weights="random")
    x = _images(1, 112)
    k = split.activations(x).shape[-1]
    for chunk in points:
        def floor(s, x, chunk=chunk):     # the K masked images, ``chunk`` at a time
            masked = jnp.broadcast_to(x, (k, *x.shape[1:])).reshape(-1, chunk, *x.shape[1:])
            return jax.lax.map(s.logits, masked)

        yield _point(chunk, {
            "score_cam": (lambda s, x, chunk=chunk: jaxcam.score_cam(s, x, 1, chunk_size=chunk),
                          (split, x)),
            "floor": (floor, (split, x))}, repeats)


def depth_points(points, repeats):
    x = _images(8, 224)
    variables = jaxcam.models.init_variables("resnet50")
    for layer in points:
        split = jaxcam.models.load("resnet50", layer=layer, weights=variables)
        yield _point(layer, {"grad_cam": (lambda s, x: jaxcam.grad_cam(s, x, 1), (split, x)),
                             "floor": (lambda s, x: s.logits(x), (split, x))}, repeats)


def engine_points(points, repeats):
    x = _images(4, 64)
    variables = jaxcam.models.init_variables("shapes-relu")
    for layer in points:
        split = jaxcam.models.load("shapes-relu", layer=layer, weights=variables)
        calls = {engine: (lambda s, x, engine=engine: jaxcam.grad_cam_pp(
                     s, x, 1, link="softmax", derivatives="exact", engine=engine), (split, x))
                 for engine in ("generic", "linearised")}
        calls["floor"] = (lambda s, x: jaxcam.grad_cam_pp(s, x, 1, link="softmax"),
                          (split, x))
        yield {**_point(layer, calls, repeats), "head_activations": int(
            np.prod(split.activations(x).shape[1:]))}


DEFAULT_POINTS = {
    "batch": [1, 2, 4, 8, 16, 32, 64],
    "samples": [1, 2, 5, 10, 25, 50],
    "masks": [4, 8, 16, 32, 64, 128],
    "depth": ["layer1", "layer2", "layer3", "layer4"],
    "engine": ["act5", "conv5", "pool4", "act4"],
}
RUNNERS = {"batch": batch_points, "samples": samples_points, "masks": masks_points,
           "depth": depth_points, "engine": engine_points}
LOG_X = {"batch", "samples", "masks"}
LOG_Y = LOG_X | {"engine"}
XLABEL = {"batch": "batch size", "samples": "noisy copies", "masks": "masked images per chunk",
          "depth": "cut (ResNet-50)", "engine": "cut (a larger head to the right)"}
WHAT = {
    "batch": "Grad-CAM on EfficientNet-Lite0 (`_swish`, 224 px) against the batch size; "
             "floor: the plain forward of the batch.",
    "samples": "Smooth Grad-CAM++ on EfficientNet-Lite0 (224 px, one image) against the "
               "noisy copies; floor: the forward of the n copies as one batch.",
    "masks": "Score-CAM on ResNet-18 (`layer4`, 512 masks, 112 px, one image) against "
             "`chunk_size`, the masked images per chunk; floor: the 512 masked images "
             "through the forward, the same chunk at a time (the floor holds all 512 "
             "images at once, 77 MB; Score-CAM builds each chunk's masks inside the chunk).",
    "depth": "Grad-CAM on ResNet-50 (224 px, batch 8) against the cut, `layer1` to "
             "`layer4`; floor: the plain forward.",
    "engine": "Exact Grad-CAM++ (softmax link) on the ReLU shapes network (64 px, batch 4) "
              "split ever earlier (a larger head), generic and linearised engines; floor: "
              "the closed form at the same cut.",
}


def markdown(result: dict) -> str:
    """The table of one curve: per point, each call's steady-state time, its ratio to the
    floor, compile time and memory."""
    labels = [k for k in result["points"][0] if isinstance(result["points"][0][k], dict)]
    head = ["| " + result["axis"] + " | " + " | ".join(
        f"{label} ms | {label} compile s | {label} MB" for label in labels)
        + " | " + " | ".join(f"{label} / floor" for label in labels if label != "floor")
        + " |"]
    head.append("|" + "---|" * (1 + 3 * len(labels) + len(labels) - 1))
    rows = []
    for p in result["points"]:
        cells = [str(p["x"])]
        for label in labels:
            cells += [f"{1000 * p[label]['median_s']:.2f}", f"{p[label]['compile_s']:.2f}",
                      f"{p[label]['memory_bytes'] / 2**20:.1f}"]
        cells += [f"{p[label]['median_s'] / p['floor']['median_s']:.2f}"
                  for label in labels if label != "floor"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([f"### Curve: {result['axis']}", "", result["what"], "",
                      f"{result['machine']}; `{result['command']}`; {result['seconds']:.0f} s.",
                      "", *head, *rows, ""])


def plot(result: dict, path: Path) -> None:
    """Time and memory against the axis, the floor on the same axes (log-log where the
    axis is a count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["points"]
    labels = [k for k in points[0] if isinstance(points[0][k], dict)]
    xs = list(range(len(points))) if result["axis"] not in LOG_X else [p["x"] for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, unit, scale in ((axes[0], "median_s", "ms", 1000),
                                 (axes[1], "memory_bytes", "MB", 1 / 2**20)):
        for label in labels:
            style = dict(color="0.4", linestyle="--") if label == "floor" else {}
            ax.plot(xs, [p[label][key] * scale for p in points], marker="o", label=label,
                    **style)
        if result["axis"] in LOG_X:
            ax.set_xscale("log")
        else:
            ax.set_xticks(xs, [str(p["x"]) for p in points])
        if result["axis"] in LOG_Y:
            ax.set_yscale("log")
        ax.set_xlabel(XLABEL[result["axis"]])
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0].set_title("steady-state time per call")
    axes[1].set_title("XLA memory (args + outputs + temps)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(axis: str, *, points=None, repeats: int = 5, out: Path | None = None,
        figures: Path | None = None, command: str = "") -> dict:
    """Measures one curve; writes ``out/AXIS.json``, ``out/AXIS.md`` and the PNG."""
    out = out or ROOT / "curves"
    figures = figures or ROOT / "figures"
    start = time.perf_counter()
    rows = []
    for p in RUNNERS[axis](points or DEFAULT_POINTS[axis], repeats):
        rows.append(p)
        print(f"{axis} {p['x']}: " + ", ".join(
            f"{k} {1000 * v['median_s']:.1f} ms" for k, v in p.items() if isinstance(v, dict)),
            flush=True)
    result = {"axis": axis, "what": WHAT[axis], "machine": machine(),
              "command": command or f"python -m benchmarks curves --axis {axis}",
              "repeats": repeats, "seconds": time.perf_counter() - start, "points": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{axis}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{axis}.md").write_text(markdown(result))
    plot(result, figures / f"curve_{axis}.png")
    return result


RESULTS = ROOT / "RESULTS.md"
BEGIN, END = "<!-- curves: python -m benchmarks curves --results -->", "<!-- /curves -->"


def results_section(folder: Path | None = None) -> str:
    """RESULTS.md's section: every measured curve's table and plot, in AXES order."""
    folder = folder or ROOT / "curves"
    parts = [BEGIN, "## Cost curves (`python -m benchmarks curves --axis AXIS`)", "",
             "How the cost grows along one axis, with the floor (the plain work a method is "
             "made of) on the same axes; memory is XLA's account of each compiled program "
             "(arguments, outputs, temporaries). Each curve's JSON is in "
             "`benchmarks/curves/`.", ""]
    for axis in AXES:
        if (folder / f"{axis}.md").exists():
            parts += [(folder / f"{axis}.md").read_text().rstrip("\n"), "",
                      f"![{axis}](figures/curve_{axis}.png)", ""]
    missing = [axis for axis in AXES if not (folder / f"{axis}.md").exists()]
    if missing:
        parts += [f"Not measured yet: {', '.join(missing)}.", ""]
    return "\n".join(parts + [END])


def write_results(path: Path = RESULTS, folder: Path | None = None) -> None:
    """Replaces (or appends) the curves section of RESULTS.md."""
    text = path.read_text()
    section = results_section(folder)
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks curves",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--axis", choices=AXES)
    parser.add_argument("--results", action="store_true",
                        help="rewrite RESULTS.md's curves section from benchmarks/curves/")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="two small points and 2 repeats (a smoke test); needs --out")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default benchmarks/curves; figures beside it "
                             "in figures/ when given)")
    args = parser.parse_args(argv)
    if args.results:
        write_results()
        return 0
    if args.axis is None:
        parser.error("--axis is required (or --results)")
    if args.quick and args.out is None:
        parser.error("--quick needs --out (its results must not replace the curves')")
    figures = None if args.out is None else args.out / "figures"
    command = "python -m benchmarks curves --axis " + args.axis + (
        " --quick" if args.quick else "")
    run(args.axis, points=QUICK[args.axis] if args.quick else None,
        repeats=2 if args.quick else args.repeats, out=args.out, figures=figures,
        command=command)
    return 0
