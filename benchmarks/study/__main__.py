"""The study: exact versus approximated higher-order terms, as one reproducible report.

    python -m benchmarks.study --part derivatives     # one part, under 10 minutes
    python -m benchmarks.study                        # every part, then STUDY.md
    python -m benchmarks.study --quick --out /tmp/s   # the --quick networks, a few images

Each part appends its per-image records to ``OUT/<part>.jsonl`` one unit (network,
method, link) at a time, so a rerun continues where a run stopped; the report is rebuilt
from the records alone. The shapes networks are trained first if the cache lacks them
(:func:`jaxcam.models.train_shapes`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax

import jaxcam
from jaxcam import models

from benchmarks.groundtruth import commit_id
from benchmarks.study import derivatives, figures, lite0, methods, report, sanity, scoring

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("groundtruth", "lite0", "derivatives", "sanity")
DEFAULT_IMAGES = {"derivatives": 64, "groundtruth": 24, "lite0": 4, "sanity": 8}
QUICK_IMAGES = {"derivatives": 8, "groundtruth": 4, "lite0": 2, "sanity": 2}


def run_part(part: str, out: Path, *, quick: bool, images: int | None,
             methods_text: str | None = None, progress=print) -> float:
    """Runs one part (what its records lack); returns the seconds it took (training the
    shapes networks, when the cache lacks them, recorded apart)."""
    records = scoring.Records(out / f"{part}.jsonl")
    n = images or (QUICK_IMAGES if quick else DEFAULT_IMAGES)[part]
    if part == "lite0":
        start = time.perf_counter()
        lite0.run(records, images=n, methods=methods_text, progress=progress)
        return _timed(out, part, start, quick)
    trained = _networks(out, quick)
    start = time.perf_counter()
    if part == "derivatives":
        derivatives.run(records, images=n, trained=trained, progress=progress)
    elif part == "groundtruth":
        methods.run(records, images=n, trained=trained, methods=methods_text,
                    progress=progress)
    else:
        sanity.run(records, images=n, trained=trained, methods=methods_text,
                   progress=progress)
    return _timed(out, part, start, quick)


def _networks(out: Path, quick: bool) -> dict:
    """The shapes networks, trained first if the cache lacks them (that time recorded as
    the part ``training``)."""
    trained = {name: models.train_shapes(name, quick=quick) for name in derivatives.NETWORKS}
    seconds = sum(t.seconds for t in trained.values() if t.trained)
    if seconds:
        with open(out / "timings.jsonl", "a") as f:
            f.write(json.dumps({"part": "training", "seconds": seconds, "quick": quick}) + "\n")
    return trained


def _timed(out: Path, part: str, start: float, quick: bool) -> float:
    """Appends the part's run time to ``out/timings.jsonl``; returns it."""
    seconds = time.perf_counter() - start
    with open(out / "timings.jsonl", "a") as f:
        f.write(json.dumps({"part": part, "seconds": seconds, "quick": quick}) + "\n")
    return seconds


def machine() -> str:
    """The CPU's model name and core count, and JAX's device."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, JAX device {jax.devices()[0].device_kind}"


def versions() -> str:
    """The versions of Python and the packages the numbers depend on."""
    import flax
    import jaxlib
    import numpy
    import optax

    return (f"Python {sys.version.split()[0]}, jax {jax.__version__}, jaxlib "
            f"{jaxlib.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
            f"numpy {numpy.__version__}, jaxcam {jaxcam.__version__}")


def write_report(out: Path, path: Path, command: str, *, quick: bool = False,
                 figures_dir: Path | None = None) -> str:
    """STUDY.md (at ``path``) and its figures (in ``figures_dir``, default ``figures``
    beside it) from the records in ``out``."""
    figures_dir = figures_dir or path.parent / "figures"

    def link(name: str) -> str:
        return os.path.relpath(figures_dir / name, path.parent)

    timings = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()
               ] if (out / "timings.jsonl").exists() else []
    lines = ["# The study: exact versus approximated higher-order terms", "",
             "Every number below comes from the per-image records of "
             f"`{command}`; nothing is typed in by hand.", ""]
    records = scoring.Records(out / "derivatives.jsonl").read()
    if records:
        paired = report.paired_metrics(records)
        lines += report.findings(records, paired)
    scored = scoring.Records(out / "groundtruth.jsonl").read()
    photos = scoring.Records(out / "lite0.jsonl").read()
    if records:
        figures.maps_figure(figures_dir / "study_maps.png", records, quick=quick)
        figures.differences_figure(figures_dir / "study_differences.png", records,
                                   report.METRICS)
        figures.probability_figure(figures_dir / "study_probability.png", records,
                                   report.PROBABILITY_BINS)
        lines += report.derivatives_section(records, paired)
        lines += [f"![exact and closed-form maps]({link('study_maps.png')})", "",
                  "The held-out images whose exact and closed-form Grad-CAM++ maps (softmax "
                  "link) agree least, per network; the difference is on the maps' scale.", "",
                  f"![paired differences]({link('study_differences.png')})", ""]
        lines += report.probability_section(records)
        lines += [f"![sign changes by probability]({link('study_probability.png')})", ""]
    if scored or photos:
        figures.methods_figure(figures_dir / "study_methods.png",
                               [r for r in scored + photos if r["split"] in
                                ("single", "multi_class", "mosaics")],
                               ("pointing_game", "energy_in_box", "deletion", "insertion"))
    if scored:
        lines += report.methods_section(scored, "Every method on the shapes networks",
                                        report.SHAPES_INTRO)
    if photos:
        lines += report.methods_section(photos, "Every method on EfficientNet-Lite0 with "
                                        "real photos", report.lite0_intro())
    if scored or photos:
        lines += [f"![every method's scores]({link('study_methods.png')})", "",
                  "Means with 95 % bootstrap intervals on the single-object and "
                  "multi-class shapes images and the Lite0 mosaics.", ""]
    checks = scoring.Records(out / "sanity.jsonl").read()
    if checks:
        lines += report.sanity_section(checks)
    spent = {part: scoring.Records(out / f"{part}.jsonl").seconds() for part in PARTS}
    spent = {part: seconds for part, seconds in spent.items() if seconds > 0}
    training = [t for t in timings if t["part"] == "training"]
    lines += ["## Reproducibility", "",
              f"- Command: `{command}` (each part: `--part NAME`; a rerun continues from "
              "the records in `benchmarks/study/results/`).",
              f"- Machine: {machine()}.",
              f"- Versions: {versions()}; commit {commit_id()}.",
              "- Seeds: the shapes networks' training seed 0; held-out shapes images "
              f"{derivatives.HELD_OUT} onwards of the dataset's seed 0; the noise of "
              "Smooth Grad-CAM++ keyed by each batch's first index, of the other methods "
              "and of ROAD by key 0; bootstrap intervals with 2,000 resamples of seed 0.",
              "- Run time of the records (each unit timed from its first map to its last "
              "score, compilation included): " + (", ".join(
                  f"{part} {seconds:.0f} s" for part, seconds in spent.items())
                  + f"; {sum(spent.values()) / 60:.1f} min in all" if spent else "none")
              + ("; training the shapes networks, when the cache lacked them, "
                 f"{training[-1]['seconds']:.0f} s more" if training else "") + "."]
    whole = [t for t in timings if t["part"] == "all"]
    if whole:
        lines.append(f"- The last run of every part (`{command}`) took "
                     f"{whole[-1]['seconds'] / 60:.1f} min wall-clock, the report and "
                     "figures apart.")
    lines.append("")
    text = "\n".join(lines)
    path.write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="all", choices=(*PARTS, "all"))
    parser.add_argument("--quick", action="store_true",
                        help="the --quick shapes networks and a few images")
    parser.add_argument("--images", type=int, default=None,
                        help="held-out images per part (default: derivatives "
                             f"{DEFAULT_IMAGES['derivatives']}, groundtruth "
                             f"{DEFAULT_IMAGES['groundtruth']} per split, lite0 "
                             f"{DEFAULT_IMAGES['lite0']} per group, sanity "
                             f"{DEFAULT_IMAGES['sanity']})")
    parser.add_argument("--methods", default=None,
                        help="the groundtruth, lite0 and sanity parts' methods (default every "
                             "registered one, and the exact Grad-CAM++ variants)")
    parser.add_argument("--out", type=Path, default=None,
                        help="records folder (default benchmarks/study/results; --quick: "
                             "required)")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick needs --out (its records must not mix with the study's)")
    out = args.out or ROOT / "study" / "results"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for part in PARTS if args.part == "all" else (args.part,):
        run_part(part, out, quick=args.quick, images=args.images, methods_text=args.methods)
    if args.part == "all":
        _timed(out, "all", start, args.quick)
    command = "python -m benchmarks.study" + (" --quick" if args.quick else "")
    write_report(out, (out / "STUDY.md") if args.quick else ROOT / "STUDY.md", command,
                 quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
