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
import platform
import sys
import time
from pathlib import Path

import jax

import jaxcam
from jaxcam import models

from benchmarks.groundtruth import commit_id
from benchmarks.study import derivatives, methods, report, sanity, scoring

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("derivatives", "groundtruth", "sanity")
DEFAULT_IMAGES = {"derivatives": 128, "groundtruth": 32, "sanity": 8}
QUICK_IMAGES = {"derivatives": 8, "groundtruth": 4, "sanity": 2}


def run_part(part: str, out: Path, *, quick: bool, images: int | None,
             methods_text: str | None = None, progress=print) -> float:
    """Runs one part (what its records lack); returns the seconds it took."""
    start = time.perf_counter()
    trained = {name: models.train_shapes(name, quick=quick) for name in derivatives.NETWORKS}
    records = scoring.Records(out / f"{part}.jsonl")
    n = images or (QUICK_IMAGES if quick else DEFAULT_IMAGES)[part]
    if part == "derivatives":
        derivatives.run(records, images=n, trained=trained, progress=progress)
    elif part == "groundtruth":
        methods.run(records, images=n, trained=trained, methods=methods_text,
                    progress=progress)
    else:
        sanity.run(records, images=n, trained=trained, methods=methods_text,
                   progress=progress)
    seconds = time.perf_counter() - start
    with open(out / "timings.jsonl", "a") as f:
        f.write(json.dumps({"part": part, "seconds": seconds, "quick": quick}) + "\n")
    return seconds


def write_report(out: Path, path: Path, command: str) -> str:
    """STUDY.md from the records in ``out``."""
    timings = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()
               ] if (out / "timings.jsonl").exists() else []
    lines = ["# The study: exact versus approximated higher-order terms", "",
             "Every number below comes from the per-image records of "
             f"`{command}`; nothing is typed in by hand.", ""]
    scored = scoring.Records(out / "groundtruth.jsonl").read()
    if scored:
        lines += report.methods_section(scored)
    records = scoring.Records(out / "derivatives.jsonl").read()
    if records:
        lines += report.derivatives_section(records) + report.probability_section(records)
    checks = scoring.Records(out / "sanity.jsonl").read()
    if checks:
        lines += report.sanity_section(checks)
    lines += ["## Reproducibility", "",
              f"- Command: `{command}` (each part: `--part NAME`).",
              f"- Machine: {platform.processor() or platform.machine()}, "
              f"{jax.devices()[0].device_kind}, Python {sys.version.split()[0]}, jax "
              f"{jax.__version__}, jaxcam {jaxcam.__version__}, commit {commit_id()}.",
              "- Seeds: the shapes networks' training seed 0, held-out images "
              f"{derivatives.HELD_OUT} onwards of the dataset's seed 0; Smooth Grad-CAM++'s "
              "noise keyed by each batch's first index.",
              "- Run time per part (last run): " + ", ".join(
                  f"{t['part']} {t['seconds']:.0f} s" for t in
                  {t["part"]: t for t in timings}.values()) + ".", ""]
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
                             f"{DEFAULT_IMAGES['groundtruth']} per split, sanity "
                             f"{DEFAULT_IMAGES['sanity']})")
    parser.add_argument("--methods", default=None,
                        help="the groundtruth and sanity parts' methods (default every "
                             "registered one, and the exact Grad-CAM++ variants)")
    parser.add_argument("--out", type=Path, default=None,
                        help="records folder (default benchmarks/study/results; --quick: "
                             "required)")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick needs --out (its records must not mix with the study's)")
    out = args.out or ROOT / "study" / "results"
    out.mkdir(parents=True, exist_ok=True)
    for part in PARTS if args.part == "all" else (args.part,):
        run_part(part, out, quick=args.quick, images=args.images, methods_text=args.methods)
    command = "python -m benchmarks.study" + (" --quick" if args.quick else "")
    write_report(out, (out / "STUDY.md") if args.quick else ROOT / "STUDY.md", command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
