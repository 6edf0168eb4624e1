"""The commands about the package: bench, study, convert, train-shapes, and the lists
of models, layers and methods."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path

from jaxcam.cli._common import say

def bench(args) -> int:
    """The benchmark suite of :mod:`jaxcam.bench`."""
    from jaxcam.bench import main as bench

    return bench([o for o in args.options if o != "--"])


def study(args) -> int:
    """The study, ``python -m benchmarks.study``: it lives in the repository (its records,
    report and figures are the clone's), so it runs from a clone's root, as a process of
    its own (the installed package never imports the clone)."""
    import subprocess

    root = Path.cwd()
    if not (root / "benchmarks" / "study" / "__main__.py").is_file():
        raise ValueError("jaxcam study runs from a clone of the jaxcam repository (its "
                         "benchmarks/ folder is not part of the wheel): cd into the clone "
                         "and run `jaxcam study` or `python -m benchmarks.study` there")
    options = [o for o in args.options if o != "--"]
    return subprocess.run([sys.executable, "-m", "benchmarks.study", *options],
                          cwd=root).returncode


def convert(args) -> int:
    from pretrained_ports.__main__ import main as convert

    code = convert(["convert", args.model, args.checkpoint, "-o", args.output])
    if code:
        sys.exit(code)
    return 0


def train_bar():
    """A rich progress bar of the shapes networks' training on stderr when it is a
    terminal (a ``progress(phase, done, total)`` callback for each network), else None."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("{task.description:28s}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True))


def train_shapes(args) -> int:
    from jaxcam import models

    names = [s.strip() for s in args.model.split(",") if s.strip()]
    bar = train_bar()
    results = []
    with bar if bar is not None else contextlib.nullcontext():
        for name in names:
            tasks = {}

            def progress(phase, done, total, name=name, tasks=tasks):
                if bar is None:
                    return
                if phase not in tasks:
                    label = "images" if phase == "data" else "steps"
                    tasks[phase] = bar.add_task(f"{name} {label}", total=total)
                bar.update(tasks[phase], completed=done)

            config = models.QUICK if args.quick else models.TrainConfig()
            config = dataclasses.replace(config, seed=args.seed)
            results.append(models.train_shapes(name, config, force=args.force,
                                               progress=progress))
    for r in results:
        accuracy = ", ".join(f"{split} {value:.1%}" for split, value in r.accuracy.items())
        how = f"trained in {r.seconds:.0f} s" if r.trained else f"cached (trained in {r.seconds:.0f} s)"
        say(f"{r.name:14s} held-out accuracy {accuracy}; {how}; {r.path}")
    return 0


def list_models(args) -> int:
    from jaxcam import models

    lines = []
    for name in models.available():
        info = models.info(name)
        lines.append(f"{name:20s} default layer {info.default_layer:12s} "
                     f"{len(models.layers(name)):3d} layers  {info.weights_note}")
    say(*lines)
    return 0


def list_layers(args) -> int:
    from jaxcam import models

    default = models.default_layer(args.model)
    say(*(f"{name}{'   (default)' if name == default else ''}"
           for name in models.layers(args.model)))
    return 0


def list_methods(args) -> int:
    import jaxcam

    if args.markdown:
        say(jaxcam.method_table(), jaxcam.options_table().rstrip("\n"))
        return 0
    if args.name:
        info = jaxcam.method_info(args.name)     # an unknown name names the registered ones
        say(f"{info.name}: {info.summary} ({info.reference})", *(
            f"  {o.name} ({o.type or 'any'}, {o.default_text}): {o.help}"
            for o in info.options), "",
            f"Set an option with --method {info.name}:OPTION=VALUE (numbers, flags, words).")
        return 0
    lines = []
    for name in jaxcam.available_methods():
        info = jaxcam.method_info(name)
        needs = ", ".join(sorted(info.needs)) or "-"
        lines.append(f"{name:20s} {info.kind:12s} needs {needs:16s} {info.summary}")
    say(*lines)
    return 0
