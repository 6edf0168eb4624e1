"""Ground truth: the shapes networks' accuracy, and every method's localisation on them.

    python -m benchmarks.groundtruth            # trains what the cache lacks, then scores
    python -m benchmarks.groundtruth --quick    # the --quick networks, a few images

Trains ``shapes-relu`` and ``shapes-smooth`` (:func:`jaxcam.models.train_shapes`, cached),
then, on held-out single-object images (never trained on), runs every registered method
at each network's default layer (``act5``) for the true class and scores its maps against
the drawn object: the pointing game (the map's maximum inside the object's mask), the
energy inside the object's box and inside its mask (:mod:`jaxcam.metrics`). Writes
``benchmarks/groundtruth/results.json``, ``benchmarks/GROUNDTRUTH.md`` and two figures in
``benchmarks/figures/``: examples of the dataset with their masks outlined, and maps of a
few methods on held-out images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import time
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from jaxcam import batch, metrics, models
from jaxcam.datasets import shapes

ROOT = Path(__file__).resolve().parent
NETWORKS = ("shapes-relu", "shapes-smooth")
# Grad-CAM++ and Smooth Grad-CAM++ twice: the closed form and the exact derivatives.
EXTRA = ("grad_cam_pp:exact", "smooth_grad_cam_pp:exact")
BATCH = 50
# Perturbation methods run hundreds to thousands of forwards per image (SS-CAM: 35 noisy
# copies of 128 masks); they are scored on the first PERTURBATION_IMAGES images only.
PERTURBATION_IMAGES = 16
# Zhang et al.'s pointing game allows 15 px at 224 px; the same share of a 64 px image.
TOLERANCE_SHARE = 15 / 224


def method_specs(methods: str | None = None) -> tuple:
    """``methods`` (``"grad_cam,grad_cam_pp:exact"``), by default every registered method
    (its defaults) and the exact variants of :data:`EXTRA`."""
    return batch.parse_methods(methods or ",".join((*jaxcam.available_methods(), *EXTRA)))


def _box_masks(boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S) bool: the first object's box (y0, x0, y1, x1) of each image, filled."""
    out = np.zeros((len(boxes), size, size), bool)
    for i, (y0, x0, y1, x1) in enumerate(boxes[:, 0]):
        out[i, y0:y1, x0:x1] = True
    return out


def _subset(data: shapes.Shapes, n: int) -> shapes.Shapes:
    fields = ("images", "labels", "target_masks", "classes", "masks", "boxes")
    return dataclasses.replace(data, **{f: getattr(data, f)[:n] for f in fields})


def _mean(values: np.ndarray) -> dict:
    """The mean and its 95 % bootstrap interval (:func:`jaxcam.metrics.summary`)."""
    s = metrics.summary(np.asarray(values, np.float64))
    return {"mean": s["mean"], "low": s["low"], "high": s["high"]}


def score_method(split, spec, data: shapes.Shapes) -> tuple[dict, np.ndarray]:
    """One method's maps of ``data`` (true classes) and their localisation scores, with
    95 % bootstrap intervals; perturbation methods on the first
    :data:`PERTURBATION_IMAGES` images."""
    if jaxcam.method_info(spec.name).kind == "perturbation":
        data = _subset(data, min(len(data), PERTURBATION_IMAGES))
    size = min(BATCH, max(1, len(data) // 2))     # two batches at least: one compiles
    x = models.preprocess_batch(data.images)
    labels = jnp.asarray(data.labels)
    key = jax.random.key(0)
    maps, seconds = [], []
    for start in range(0, len(data), size):
        t0 = time.perf_counter()
        _, _, m = batch.explain_step((split,), x[start:start + size],
                                     labels[start:start + size], key, specs=(spec,))
        m = jax.block_until_ready(m)
        seconds.append(time.perf_counter() - t0)
        maps.append(np.asarray(m[:, 0, 0, 0]))
    maps = np.concatenate(maps)
    box = _box_masks(data.boxes, data.size)
    steady = float(np.median(seconds[1:] or seconds))    # the first batch compiles
    return {
        "method": spec.label,
        "images": len(data),
        "pointing_game": _mean(metrics.pointing_game(maps, data.target_masks)),
        "pointing_game_tolerance": _mean(metrics.pointing_game(
            maps, data.target_masks, tolerance=TOLERANCE_SHARE * data.size)),
        "energy_in_box": _mean(metrics.energy_pointing_game(maps, box)),
        "energy_in_mask": _mean(metrics.energy_pointing_game(maps, data.target_masks)),
        "ms_per_image": 1000 * steady / size,
        "compile_s": max(0.0, seconds[0] - steady) if len(seconds) > 1 else None,
        "zero_maps": float(np.mean(maps.reshape(len(maps), -1).max(1) <= 0)),
    }, maps


def examples_figure(path: Path, size: int, per_row: int = 6, scale: int = 2) -> None:
    """A grid of held-out examples of each split, the labelled objects outlined in white
    and the others in black."""
    rows = []
    for split in shapes.SPLITS:
        d = shapes.generate(per_row, split=split, size=size, seed=0, start=10**6)
        cells = []
        for i in range(per_row):
            image = cv2.resize(d.images[i], (size * scale,) * 2, interpolation=cv2.INTER_NEAREST)
            for j in range(shapes.MAX_OBJECTS):
                if d.classes[i, j] < 0:
                    continue
                mask = cv2.resize(d.masks[i, j].astype(np.uint8), (size * scale,) * 2,
                                  interpolation=cv2.INTER_NEAREST)
                contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                colour = (255, 255, 255) if d.classes[i, j] == d.labels[i] else (0, 0, 0)
                cv2.drawContours(image, contours, -1, colour, 1)
            cells.append(image)
        rows.append([cells[i] for i in range(per_row)])
    titles = [f"#{i}" for i in range(per_row)]
    labels = [s.replace("_", " ") for s in shapes.SPLITS]
    jaxcam.viz.write_png(path, jaxcam.viz.grid(rows, titles, labels, height=size * scale))


def maps_figure(path: Path, data: shapes.Shapes, columns: dict[str, np.ndarray],
                n: int = 4, scale: int = 2) -> None:
    """Held-out images (rows) and the maps of a few methods (columns), over the image."""
    size = data.size * scale
    rows = []
    for i in range(n):
        image = cv2.resize(data.images[i], (size, size), interpolation=cv2.INTER_NEAREST)
        row = [image]
        for maps in columns.values():
            cam = cv2.resize(maps[i], (size, size), interpolation=cv2.INTER_LINEAR)
            row.append(jaxcam.viz.overlay(image, cam))
        rows.append(row)
    labels = [shapes.CLASSES[c] for c in data.labels[:n]]
    jaxcam.viz.write_png(path, jaxcam.viz.grid(rows, ["image", *columns], labels, height=size))


def commit_id() -> str:
    """The checkout's short commit, or \"unknown\"."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(results: dict) -> str:
    """GROUNDTRUTH.md from the results."""
    lines = ["# Ground truth: the shapes networks", "",
             f"Generated by `{results['command']}` in {results['seconds']:.0f} s on "
             f"{results['machine']} (commit {results['commit']}, jax {results['jax']}; "
             + ("both networks trained in that run" if results["trained_here"] else
                "the networks read from the cache, trained as recorded below")
             + "); every number below is from that run.", "",
             "## The networks", "",
             "Held-out accuracy (images never trained on, "
             f"{next(iter(results['networks'].values()))['config']['held_out']} per "
             "split):", "",
             "| network | activation | single object | multi-instance | training time |",
             "|---|---|---|---|---|"]
    for name, net in results["networks"].items():
        lines.append(f"| `{name}` | {net['config']['activation']} | "
                     f"{net['accuracy']['single']:.1%} | {net['accuracy']['multi_instance']:.1%} "
                     f"| {net['seconds']:.0f} s |")
    n = results["images"]
    lines += ["", "## Localisation on held-out single-object images", "",
              f"{n} images ({PERTURBATION_IMAGES} for the perturbation methods, which run "
              "hundreds to thousands of forwards per image), each method's map for the true "
              "class at `act5` (8x8, upsampled bilinearly to 64x64), means with 95 % "
              "bootstrap intervals.", "",
              "- Pointing game: a maximum of the map lies on the object (every tied maximum "
              "counts, so an all-zero map is a hit; their share is shown). Strict: on its "
              f"drawn mask; tolerant: within {TOLERANCE_SHARE * 64:.1f} px of it, Zhang et "
              "al.'s 15 px at 224 px scaled to 64 px.",
              "- Energy: the share of the map's sum inside the object's box, and inside its "
              f"mask. The box covers {results['box_area']:.1%} of the image on average and "
              f"the mask {results['mask_area']:.1%}: a uniform map scores that.",
              f"- Time: steady-state milliseconds per image, batches of up to {BATCH}.", ""]

    def cell(v):
        return f"{v['mean']:.1%} ({v['low']:.1%}, {v['high']:.1%})"

    for name in results["networks"]:
        lines += [f"### `{name}`", "",
                  "| method | images | pointing game, strict | pointing game, tolerant | "
                  "energy in box | energy in mask | all-zero maps | ms / image |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in results["methods"][name]:
            lines.append(f"| {row['method']} | {row['images']} | {cell(row['pointing_game'])} "
                         f"| {cell(row['pointing_game_tolerance'])} | "
                         f"{cell(row['energy_in_box'])} | {cell(row['energy_in_mask'])} | "
                         f"{row['zero_maps']:.1%} | {row['ms_per_image']:.2f} |")
        lines.append("")
    lines += ["![maps](figures/shapes_maps.png)", ""]
    return "\n".join(lines)


def run(quick: bool, images: int, out: Path, figures: Path, *, networks=NETWORKS,
        methods: str | None = None, progress: bool = True) -> dict:
    """Trains (or reads from the cache) ``networks`` and scores ``methods`` on ``images``
    held-out single-object images; writes ``out/results.json`` and, unless ``quick``, the
    report and its figures. Returns the results."""
    start = time.perf_counter()
    command = "python -m benchmarks.groundtruth" + (" --quick" if quick else "")
    results = {"command": command, "machine": f"{platform.processor() or platform.machine()}"
               f" ({jax.devices()[0].device_kind}, {len(jax.devices())} device(s))",
               "commit": commit_id(), "jax": jax.__version__, "images": images,
               "networks": {}, "methods": {}}
    trained = {name: models.train_shapes(name, quick=quick) for name in networks}
    results["trained_here"] = all(t.trained for t in trained.values())
    size = trained[networks[0]].config.size
    data = shapes.generate(images, split="single", size=size, seed=0, start=10**6)
    results["box_area"] = float(_box_masks(data.boxes, size).mean())
    results["mask_area"] = float(data.target_masks.mean())
    specs = method_specs(methods)
    for name, t in trained.items():
        results["networks"][name] = {"accuracy": t.accuracy, "seconds": t.seconds,
                                     "config": json.loads(t.config.record(
                                         models.info(name).activation))}
        split = models.load(name, weights=str(t.path))
        rows, shown = [], {}
        for spec in specs:
            row, maps = score_method(split, spec, data)
            rows.append(row)
            if spec.label in ("grad_cam", "grad_cam_pp", "grad_cam_pp-exact", "score_cam"):
                shown[spec.label] = maps
            if progress:
                print(f"{name:14s} {row['method']:26s} pointing "
                      f"{row['pointing_game']['mean']:6.1%} "
                      f"{row['pointing_game_tolerance']['mean']:6.1%}  box "
                      f"{row['energy_in_box']['mean']:6.1%}  {row['ms_per_image']:8.2f} ms/img",
                      flush=True)
        results["methods"][name] = rows
        if name == "shapes-relu" and not quick:
            maps_figure(figures / "shapes_maps.png", data, shown)
    if not quick:
        examples_figure(figures / "shapes_examples.png", size)
    results["seconds"] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if not quick:
        (ROOT / "GROUNDTRUTH.md").write_text(markdown(results))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.groundtruth",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the --quick networks (32 px) and 20 images; no figures")
    parser.add_argument("--images", type=int, default=None,
                        help="held-out images scored (default 500; --quick 20)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods (default every registered one, and "
                             "Grad-CAM++ and Smooth Grad-CAM++ with exact derivatives)")
    parser.add_argument("--out", type=Path, default=ROOT / "groundtruth")
    args = parser.parse_args(argv)
    images = args.images or (20 if args.quick else 500)
    run(args.quick, images, args.out, ROOT / "figures", methods=args.methods)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
