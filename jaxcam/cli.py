"""The jaxcam command line.

  jaxcam demo                          the bundled photo: every main method and a grid
  jaxcam explain PATH... [options]     photos and folders, in batches on every device
  jaxcam grid IMAGE --method a,b,c     methods (and layers) side by side in one figure
  jaxcam compare IMAGE                 exact vs closed-form Grad-CAM++ and Smooth Grad-CAM++
  jaxcam convert MODEL CKPT -o OUT     a torchvision checkpoint to a .msgpack (no torch)
  jaxcam models | layers MODEL | methods
  jaxcam bench [--suite quick|full]    the benchmark suite
  jaxcam study [--part P] [--quick]    the study (benchmarks/STUDY.md), from a clone

Errors are one line on stderr with exit status 2 (--debug shows the traceback). Compiled
programs are cached in the jaxcam cache folder ($JAXCAM_CACHE or ~/.cache/jaxcam), so a
second run does not compile again (--no-compile-cache turns that off).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from jaxcam import LINKS

WEIGHTS_HELP = ("a torchvision .pth, a converted .msgpack, or 'random'; required for models "
                "without bundled weights (efficientnet_lite0 has them)")
DEMO_METHODS = ("grad_cam,grad_cam_pp,grad_cam_pp:exact,smooth_grad_cam_pp,xgrad_cam,"
                "layer_cam,eigen_cam,ablation_cam")

EXPLAIN_EPILOG = """examples:
  jaxcam explain photo.jpg                                  # Grad-CAM, bundled Lite0
  jaxcam explain photos/ --method grad_cam,grad_cam_pp:exact --top 3 --batch-size 32
  jaxcam explain photos/ --model resnet50 --weights resnet50-0676ba61.pth --layer layer3,layer4
  jaxcam explain photos/ --format both --out maps/ --resume  # go on after an interruption
  jaxcam explain photos/ --distributed                       # one process per host

Each photo gets an overlay on the original photo per (layer, method, class), optional raw
maps (.npy, at the model's input size) and one line of OUT/results.jsonl: path, model,
layer, method, class, name, probability, targets, top5, maps, seconds. A photo that cannot
be read gets {"path", "error"} and the run goes on. Exit status: 0, 1 when some photos
were skipped, 2 when nothing could be explained.

Several hosts: start one process per host with --distributed (jax.distributed.initialize
reads the cluster from SLURM, Open MPI or a TPU pod), or give --coordinator HOST:PORT
--num-processes N --process-id I. Each process explains every N-th photo on its own
devices and writes OUT/results-0000I-of-0000N.jsonl; --resume reads every shard."""

EVALUATE_EPILOG = """examples:
  jaxcam evaluate photos/                                  # Grad-CAM on the bundled Lite0
  jaxcam evaluate photos/ --method grad_cam,grad_cam_pp,grad_cam_pp:exact \\
      --metrics deletion,insertion,average_drop,road_combined --batch-size 16
  jaxcam evaluate photos/ --out scores/ --resume           # go on after an interruption

Each photo's maps (normalised to [0, 1] at the input size) are scored for its predicted
class (or --class) in one compiled call per batch, and the photo gets one line of
OUT/results.jsonl: path, model, layer, class, probability, metrics {method: {metric:
value}}, seconds. OUT/summary.json and OUT/summary.md hold each metric's mean with its 95 %
bootstrap interval over every photo in the results. Deletion and insertion follow
jaxcam.metrics (zeros and RISE's blur as substrates); the scores are softmax
probabilities. Exit status: 0, 1 when some photos were skipped, 2 when none was scored."""


def class_names() -> list[str]:
    """The 1000 ImageNet class names, by class index."""
    return json.loads(resources.files("jaxcam").joinpath("assets/imagenet_classes.json").read_text())


def _names_for(n: int) -> tuple[str, ...] | None:
    names = class_names()
    return tuple(names) if len(names) == n else None


def _top5(probs: np.ndarray, names) -> str:
    lines = []
    for c in np.argsort(-probs, kind="stable")[:5]:
        name = names[c] if names else ""
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


def _compile_cache(enabled: bool) -> None:
    """JAX's persistent compilation cache in the jaxcam cache folder, for every program
    (the default minimum of 1 s of compile time would skip most of them)."""
    if not enabled:
        return
    import jax

    from jaxcam.models import cache_dir

    if jax.config.jax_compilation_cache_dir is None:      # the user's own setting wins
        folder = cache_dir() / "xla"
        _private_folder(folder)
        jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _private_folder(folder: Path) -> None:
    """Creates ``folder`` (and missing parents) as 0700, and refuses it, or its parent,
    when another user owns it or may write in it: the compilation cache holds native
    executables that the next run loads and runs, so a cache others can write is code
    they can run as this user."""
    for path in (folder.parent, folder):
        if not path.exists():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            whose = ("owned by another user" if st.st_uid != os.getuid()
                     else "writable by other users")
            raise ValueError(
                f"the compilation cache folder {path} is {whose}: "
                "the executables cached there would run in this process; make it yours "
                f"and private (chmod 700 {path}), set $JAXCAM_CACHE to a private folder, or "
                "pass --no-compile-cache")


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


def _splits(model: str, weights, layers: str | None, mesh=None) -> tuple:
    """The model split at each of the comma-separated ``layers`` (default: the model's
    layer), its variables placed once on the devices of ``mesh``."""
    import jaxcam

    names = _layer_names(model, layers)
    first = jaxcam.models.load(model, layer=names[0], weights=_weights(model, weights))
    first = jaxcam.place(first, mesh)
    return (first, *(first.at(name) for name in names[1:]))


def _input_shape(split) -> tuple[int, int, int]:
    size = split.preprocess.size
    return (size, size, 3)


def _target(split, args) -> tuple[int | None, int]:
    """(--class or None, --top), checked against the model's number of classes (found by
    tracing the model only when there is something to check)."""
    import jaxcam

    top = getattr(args, "top", 1)
    if args.target is None and top == 1:
        return None, 1
    n = jaxcam.batch.num_classes(split, _input_shape(split))
    if args.target is not None and not 0 <= args.target < n:
        raise ValueError(f"--class {args.target} is out of range: the model has {n} classes "
                         f"(0..{n - 1})")
    if not 1 <= top <= n:
        raise ValueError(f"--top {top} must lie in 1..{n} (the model's classes)")
    return args.target, top


def _figure_maps(image, splits, specs, target, seed):
    """One photo through the compiled batch program: (probs (C,), targets, maps)."""
    import jax

    import jaxcam

    x = splits[0].preprocess(image)[None]
    given = None if target is None else np.array([target], np.int32)
    probs, targets, maps = jaxcam.batch.explain_step(splits, x, given, jax.random.key(seed),
                                                     specs=specs, top=1)
    return np.asarray(probs)[0], int(np.asarray(targets)[0, 0]), np.asarray(maps)[0, :, :, 0]


def _grid_figure(image, splits, specs, maps):
    import jaxcam

    cells = [[jaxcam.viz.overlay(image, maps[li, mi], preprocess=splits[0].preprocess)
              for mi in range(len(specs))] for li in range(len(splits))]
    rows = [s.layer for s in splits] if len(splits) > 1 else None
    return cells, jaxcam.viz.grid(cells, [s.label for s in specs], rows)


def _demo(args) -> int:
    import jaxcam

    photo = resources.files("jaxcam").joinpath("assets/chelsea.png")
    with resources.as_file(photo) as path:
        image = jaxcam.viz.read_image(path)
    splits = _splits("efficientnet_lite0", None, None)
    specs = jaxcam.batch.parse_methods(DEMO_METHODS)
    probs, target, maps = _figure_maps(image, splits, specs, None, 0)
    cells, figure = _grid_figure(image, splits, specs, maps)
    out = Path(args.out)
    files = {out / f"chelsea_{s.label}_class{target}.png": cells[0][i]
             for i, s in enumerate(specs)}
    files[out / f"chelsea_grid_class{target}.png"] = figure
    written = jaxcam.viz.write_all(files)
    names = _names_for(probs.shape[-1])
    _say("efficientnet_lite0 on the bundled photo chelsea.png, top-5 classes:",
         _top5(probs, names),
         f"explained class {target} at layer {splits[0].layer!r} with "
         f"{len(specs)} methods; wrote:", *(f"  {p.resolve()}" for p in written))
    return 0


def _processes(args) -> tuple[int, int]:
    """(this process's index, the number of processes): (0, 1) unless --distributed."""
    if not (args.distributed or args.coordinator):
        return 0, 1
    import jax

    options = {"coordinator_address": args.coordinator, "num_processes": args.num_processes,
               "process_id": args.process_id}
    jax.distributed.initialize(**{k: v for k, v in options.items() if v is not None})
    return jax.process_index(), jax.process_count()


def _progress(total: int, label: str = "explaining"):
    """A rich progress bar (images/s, ETA) on stderr when it is a terminal, else None."""
    if total == 0 or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed or 0:6.2f} img/s")

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                    Rate(""), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True))


def _warn(bar, line: str) -> None:
    """A line on stderr, above the progress bar when there is one."""
    if bar is not None:
        bar.console.print(line, markup=False, highlight=False)
    else:
        print(line, file=sys.stderr, flush=True)


def _weights_identity(weights: str | None) -> object:
    """What a run's --weights names, for its options in OUT/run.json: a file by its
    resolved path, size and modification time (a changed file is other weights)."""
    if weights in (None, "random"):
        return weights or "bundled"
    path = Path(weights)
    try:
        stat = path.stat()
    except OSError:
        return str(weights)
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _layer_names(model: str, layers: str | None) -> list[str | None]:
    """The comma-separated --layer names (``[None]``: the model's default), each once."""
    names = [s.strip() for s in layers.split(",") if s.strip()] if layers else [None]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--layer names {', '.join(twice)} more than once; give each layer "
                         "once")
    return names


def _explain_cmd(args) -> int:
    import jaxcam
    from jaxcam import models

    index, count = _processes(args)
    out = Path(args.out)
    photos = jaxcam.batch.find_images(args.paths, exclude=[out])[index::count]
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    specs = jaxcam.batch.parse_methods(args.method, link=args.link,
                                       derivatives=args.derivatives)
    layers = _layer_names(args.model, args.layer)
    options = {"model": args.model, "weights": _weights_identity(args.weights),
               "layers": [n or models.info(args.model).default_layer for n in layers],
               "methods": [[s.name, [list(o) for o in s.options]] for s in specs],
               "class": args.target, "top": args.top, "seed": args.seed,
               "format": args.format}
    with jaxcam.batch.OutputFolder(out, options, resume=args.resume, process=index,
                                   processes=count) as folder:
        done = folder.done()
        photos = [p for p in photos if str(p.path.resolve()) not in done]
        results = folder.results(retry=[p.path for p in photos])
        mesh = jaxcam.data_mesh()
        splits = _splits(args.model, args.weights, args.layer, mesh)
        target, top = _target(splits[0], args)
        config = jaxcam.batch.RunConfig(
            model=args.model, splits=splits, specs=specs, classes=target, top=top,
            seed=args.seed, batch_size=args.batch_size, mesh=mesh, out=out,
            formats=("png", "npy") if args.format == "both" else (args.format,),
            class_names=tuple(class_names()))
        return _explain_run(args, photos, config, results, done, index, count)


def _record_all(records, results, total: int, label: str, done) -> tuple[int, int, dict]:
    """Writes each photo's record to ``results`` under a progress bar and returns
    (photos done, photos skipped, the last record done). An error is printed at once and
    written once a photo succeeds (or beside earlier results), so a run where nothing
    succeeds leaves no results file."""
    count, skipped, waiting, last = 0, 0, [], None
    bar = _progress(total, label)
    task = bar.add_task(label, total=total) if bar else None
    try:
        if bar:
            bar.start()
        for record in records:
            if "error" in record:
                skipped += 1
                message = record["error"]
                if Path(record["path"]).name not in message:
                    message = f"{record['path']}: {message}"
                _warn(bar, f"jaxcam: error: {message}")
                waiting.append(record)
            else:
                count += 1
                for r in waiting + [record]:
                    results.write(r)
                waiting, last = [], record
            if bar:
                bar.advance(task)
        if waiting and (count or done):
            for r in waiting:
                results.write(r)
    finally:
        if bar:
            bar.stop()
        results.close()
    return count, skipped, last


def _explain_run(args, photos, config, results, done, index, count) -> int:
    import jaxcam

    t0 = time.perf_counter()
    explained, skipped, last = _record_all(jaxcam.batch.explain_photos(photos, config),
                                           results, len(photos), "explaining", done)
    seconds = time.perf_counter() - t0
    if explained == 0 and skipped and not done:
        sys.exit(2)                            # nothing written; the errors are printed
    shard = f" (process {index + 1} of {count})" if count > 1 else ""
    if explained == 1 and len(photos) == 1:
        _say(f"{args.model} on {photos[0].path}, top-5 classes:",
             *(f"  {t['class']:4d}  {t['probability']:6.1%}  {t['name']}"
               for t in last["top5"]),
             f"explained class {last['class']} at layer {last['layer']!r}; wrote:",
             *(f"  {Path(m[f]).resolve()}" for m in last["maps"] for f in ("png", "npy")
               if f in m))
    else:
        rate = explained / seconds if seconds > 0 else 0.0
        _say(f"explained {explained} photos{shard} in {seconds:.1f} s ({rate:.2f} images/s)"
             + (f", skipped {skipped}" if skipped else "")
             + (" (nothing left to do: every photo is in the results)" if not photos else "")
             + f"; results: {results.path.resolve()}")
    return 1 if skipped else 0


def _evaluate_cmd(args) -> int:
    import jaxcam
    from jaxcam import models

    out = Path(args.out)
    photos = jaxcam.batch.find_images(args.paths, exclude=[out])
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    specs = jaxcam.batch.parse_methods(args.method, link=args.link,
                                       derivatives=args.derivatives)
    metrics = jaxcam.batch.parse_metrics(args.metrics)
    options = {"command": "evaluate", "model": args.model,
               "weights": _weights_identity(args.weights),
               "layer": args.layer or models.info(args.model).default_layer,
               "methods": [[s.name, [list(o) for o in s.options]] for s in specs],
               "metrics": list(metrics), "steps": args.steps, "class": args.target,
               "seed": args.seed}
    with jaxcam.batch.OutputFolder(out, options, resume=args.resume) as folder:
        done = folder.done()
        todo = [p for p in photos if str(p.path.resolve()) not in done]
        results = folder.results(retry=[p.path for p in todo])
        mesh = jaxcam.data_mesh()
        (split,) = _splits(args.model, args.weights, args.layer, mesh)
        target, _ = _target(split, args)
        config = jaxcam.batch.EvalConfig(model=args.model, split=split, specs=specs, metrics=metrics,
                              classes=target, seed=args.seed, steps=args.steps,
                              batch_size=args.batch_size, mesh=mesh)
        t0 = time.perf_counter()
        scored, skipped, _ = _record_all(jaxcam.batch.evaluate_photos(todo, config), results,
                                         len(todo), "evaluating", done)
        records = [r for r in jaxcam.batch.read_results(out) if "metrics" in r]
        if not records:
            sys.exit(2)                      # nothing scored; the errors are printed
        summary = jaxcam.batch.summarise(records)
        table = jaxcam.batch.summary_markdown(summary)
        jaxcam.viz.write_all({out / "summary.json": json.dumps(summary, indent=2) + "\n",
                              out / "summary.md": table})
    seconds = time.perf_counter() - t0
    _say(table.rstrip(),
         f"scored {scored} photos in {seconds:.1f} s" + (f", skipped {skipped}" if skipped
                                                          else "")
         + f"; means over {len(records)} photos with 95 % bootstrap intervals; results: "
         f"{results.path.resolve()}, summary: {(out / 'summary.json').resolve()}")
    return 1 if skipped else 0


def _grid_cmd(args) -> int:
    import jaxcam

    image = jaxcam.viz.read_image(args.image)
    specs = jaxcam.batch.parse_methods(args.method, link=args.link,
                                       derivatives=args.derivatives)
    splits = _splits(args.model, args.weights, args.layer)
    target, _ = _target(splits[0], args)
    probs, target, maps = _figure_maps(image, splits, specs, target, args.seed)
    _, figure = _grid_figure(image, splits, specs, maps)
    path = Path(args.out) / f"{Path(args.image).stem}_grid_class{target}.png"
    written = jaxcam.viz.write_all({path: figure})
    names = _names_for(probs.shape[-1])
    _say(f"{args.model}, class {target} {names[target] if names else ''} "
         f"({probs[target]:.1%}): {len(specs)} methods x {len(splits)} layers; wrote:",
         f"  {written[0].resolve()}")
    return 0


def _compare(args) -> int:
    import jax

    import jaxcam

    image = jaxcam.viz.read_image(args.image)
    split = jaxcam.place(jaxcam.models.load(args.model, layer=args.layer,
                                            weights=_weights(args.model, args.weights),
                                            activation=args.activation))
    x = split.preprocess(image)[None]
    target, _ = _target(split, args)
    if target is None:
        target = int(np.argmax(np.asarray(split.logits(x))[0]))
    result = jaxcam.compare_derivatives(split, x, target, link=args.link,
                                        chunk_size=args.chunk_size)
    key = jax.random.key(args.seed)
    smooth = {d: np.asarray(jaxcam.smooth_grad_cam_pp(
        split, x, target, key=key, n_samples=args.n_samples, link=args.link,
        derivatives=d, chunk_size=args.chunk_size))[0] for d in ("exact", "approx")}
    out, stem = Path(args.out), f"{Path(args.image).stem}_{args.link}_class{target}"

    def with_difference(exact, approx, prefix):
        diff = np.abs(exact - approx)
        return {f"{prefix}exact": exact, f"{prefix}approx": approx,
                f"{prefix}difference": diff / diff.max() if diff.max() > 0 else diff}

    maps = {**with_difference(np.asarray(result.maps_exact[0]),
                              np.asarray(result.maps_approx[0]), ""),
            **with_difference(smooth["exact"], smooth["approx"], "smooth_")}
    files = {out / f"{stem}_{name}.png": jaxcam.viz.overlay(image, m,
                                                            preprocess=split.preprocess)
             for name, m in maps.items()}
    stats = {"image": str(args.image), "model": args.model, "layer": split.layer,
             "activation": args.activation, "link": args.link, "class": target,
             "piecewise_linear_head": split.piecewise_linear_head,
             "max_abs_map_difference": float(np.abs(maps["exact"] - maps["approx"]).max()),
             **{k: v[0] for k, v in result.summary().items()},
             "smooth": {"n_samples": args.n_samples, "seed": args.seed,
                        "max_abs_map_difference": float(np.abs(
                            smooth["exact"] - smooth["approx"]).max()),
                        **jaxcam.compare_maps(smooth["exact"], smooth["approx"])}}
    files[out / f"{stem}_stats.json"] = json.dumps(stats, indent=2) + "\n"
    written = jaxcam.viz.write_all(files)  # all or none; files first, then printing
    _say(f"exact vs closed-form Grad-CAM++, {args.model} at {split.layer!r}, link "
         f"{args.link!r}, class {target}:",
         *(f"  {key:16s} {stats[key]:.6g}"
           for key in ("spearman", "relative_l2", "iou_top20", "max_alpha_diff",
                       "kink_activations")),
         f"Smooth Grad-CAM++ ({args.n_samples} noisy copies), exact vs closed form:",
         *(f"  {key:16s} {stats['smooth'][key]:.6g}"
           for key in ("spearman", "relative_l2", "iou_top20")),
         "wrote:", *(f"  {path.resolve()}" for path in written))
    return 0


def _bench(args) -> int:
    """The benchmark suite of :mod:`jaxcam.bench`."""
    from jaxcam.bench import main as bench

    return bench([o for o in args.options if o != "--"])


def _study(args) -> int:
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


def _convert(args) -> int:
    from pretrained_ports.__main__ import main as convert

    code = convert(["convert", args.model, args.checkpoint, "-o", args.output])
    if code:
        sys.exit(code)
    return 0


def _train_bar():
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


def _train_shapes(args) -> int:
    from jaxcam import models

    names = [s.strip() for s in args.model.split(",") if s.strip()]
    bar = _train_bar()
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
        _say(f"{r.name:14s} held-out accuracy {accuracy}; {how}; {r.path}")
    return 0


def _models(args) -> int:
    from jaxcam import models

    lines = []
    for name in models.available():
        info = models.info(name)
        lines.append(f"{name:20s} default layer {info.default_layer:12s} "
                     f"{len(models.layers(name)):3d} layers  {info.weights_note}")
    _say(*lines)
    return 0


def _layers(args) -> int:
    from jaxcam import models

    default = models.default_layer(args.model)
    _say(*(f"{name}{'   (default)' if name == default else ''}"
           for name in models.layers(args.model)))
    return 0


def _methods(args) -> int:
    import jaxcam

    if args.markdown:
        _say(jaxcam.method_table(), jaxcam.options_table().rstrip("\n"))
        return 0
    if args.name:
        info = jaxcam.method_info(args.name)     # an unknown name names the registered ones
        _say(f"{info.name}: {info.summary} ({info.reference})", *(
            f"  {o.name} ({o.type or 'any'}, {o.default_text}): {o.help}"
            for o in info.options), "",
            f"Set an option with --method {info.name}:OPTION=VALUE (numbers, flags, words).")
        return 0
    lines = []
    for name in jaxcam.available_methods():
        info = jaxcam.method_info(name)
        needs = ", ".join(sorted(info.needs)) or "-"
        lines.append(f"{name:20s} {info.kind:12s} needs {needs:16s} {info.summary}")
    _say(*lines)
    return 0


def _model_options(p, *, layers: str = "target layer (default: the model's)") -> None:
    p.add_argument("--model", default="efficientnet_lite0", help="see `jaxcam models`")
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--layer", default=None, help=layers)


def _target_options(p, *, top: bool) -> None:
    p.add_argument("--class", dest="target", type=int, default=None,
                   help="class index to explain (default: the predicted class)")
    if top:
        p.add_argument("--top", type=int, default=1,
                       help="explain each photo's K most probable classes (default 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the methods that draw noise (default 0)")


def _method_options(p, default: str) -> None:
    p.add_argument("--method", default=default,
                   help="comma-separated methods, each with its options, e.g. "
                        "grad_cam,grad_cam_pp:exact,score_cam:top_n=32 (see `jaxcam methods "
                        f"NAME`; default {default})")
    p.add_argument("--link", default=None, choices=tuple(LINKS),
                   help="the score explained, for the methods that take one (default: "
                        "each method's own)")
    p.add_argument("--derivatives", default=None, choices=("exact", "approx"),
                   help="Grad-CAM++'s second and third derivatives: exact (autodiff) or the "
                        "closed form g^2, g^3 (default approx)")


def build_parser() -> argparse.ArgumentParser:
    from jaxcam import available_methods, batch

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common.add_argument("--no-compile-cache", action="store_true",
                        help="do not read or write the persistent compilation cache")
    raw = argparse.RawDescriptionHelpFormatter

    def sub_parser(name, help, **kwargs):
        return sub.add_parser(name, help=help, description=help, parents=[common],
                              formatter_class=raw, **kwargs)

    parser = _Parser(prog="jaxcam", description=__doc__, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub_parser("demo", "explain the bundled cat photo with EfficientNet-Lite0's "
                              "real weights: every main method and a grid figure",
                      epilog="example:\n  jaxcam demo --out demo/")
    demo.add_argument("--out", default="jaxcam-demo", help="output folder (default ./jaxcam-demo)")
    demo.set_defaults(run=_demo)

    explain = sub_parser("explain", "explain photos and folders of photos in batches",
                         epilog=EXPLAIN_EPILOG)
    explain.add_argument("paths", nargs="+", metavar="PATH",
                         help="photos (PNG, JPEG, WebP, BMP, TIFF) and folders (recursive)")
    _model_options(explain, layers="target layer, or several: L1,L2 (default: the model's)")
    _method_options(explain, "grad_cam")
    _target_options(explain, top=True)
    explain.add_argument("--batch-size", type=int, default=8,
                         help="photos per compiled call, split over the devices (default 8)")
    explain.add_argument("--out", default="jaxcam-out", help="output folder (default "
                                                             "./jaxcam-out)")
    explain.add_argument("--format", default="png", choices=("png", "npy", "both"),
                         help="overlays (png), raw maps (npy) or both (default png)")
    explain.add_argument("--resume", action="store_true",
                         help="skip the photos already in OUT/results*.jsonl")
    explain.add_argument("--distributed", action="store_true",
                         help="call jax.distributed.initialize() and explain this process's "
                              "share of the photos")
    explain.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                         help="jax.distributed coordinator address (implies --distributed)")
    explain.add_argument("--num-processes", type=int, default=None)
    explain.add_argument("--process-id", type=int, default=None)
    explain.set_defaults(run=_explain_cmd)

    evaluate = sub_parser("evaluate", "score the maps of photos and folders: faithfulness "
                                      "metrics per photo (JSONL) and their means",
                          epilog=EVALUATE_EPILOG)
    evaluate.add_argument("paths", nargs="+", metavar="PATH",
                          help="photos (PNG, JPEG, WebP, BMP, TIFF) and folders (recursive)")
    _model_options(evaluate)
    _method_options(evaluate, "grad_cam")
    evaluate.add_argument("--metrics", default=",".join(batch.DEFAULT_METRICS),
                          help="comma-separated, of: " + ", ".join(batch.METRICS)
                               + f" (default {','.join(batch.DEFAULT_METRICS)})")
    evaluate.add_argument("--steps", type=int, default=20,
                          help="points of the deletion and insertion curves (default 20)")
    _target_options(evaluate, top=False)
    evaluate.add_argument("--batch-size", type=int, default=8,
                          help="photos per compiled call (default 8)")
    evaluate.add_argument("--out", default="jaxcam-eval",
                          help="output folder (default ./jaxcam-eval)")
    evaluate.add_argument("--resume", action="store_true",
                          help="skip the photos already in OUT/results.jsonl")
    evaluate.set_defaults(run=_evaluate_cmd)

    grid = sub_parser("grid", "one figure: methods (columns) and layers (rows) side by side",
                      epilog="examples:\n  jaxcam grid photo.jpg --method grad_cam,"
                             "grad_cam_pp,grad_cam_pp:exact,score_cam\n  jaxcam grid photo.jpg "
                             "--layer _blocks.10,_blocks.15,_swish --method grad_cam,layer_cam")
    grid.add_argument("image", help="a photo: PNG, JPEG, WebP, BMP or TIFF")
    _model_options(grid, layers="target layer, or several (rows): L1,L2")
    _method_options(grid, "grad_cam,grad_cam_pp,layer_cam")
    _target_options(grid, top=False)
    grid.add_argument("--out", default="jaxcam-out", help="output folder")
    grid.set_defaults(run=_grid_cmd)

    compare = sub_parser("compare", "exact versus closed-form Grad-CAM++ and Smooth "
                                    "Grad-CAM++ on a photo: maps, differences, statistics",
                         epilog="examples:\n  jaxcam compare photo.jpg --link softmax\n"
                                "  jaxcam compare photo.jpg --layer _blocks.15 --activation "
                                "gelu --link exp")
    compare.add_argument("image", help="a photo: PNG, JPEG, WebP, BMP or TIFF")
    _model_options(compare)
    compare.add_argument("--activation", default="relu",
                         choices=("relu", "gelu", "silu", "softplus"),
                         help="activation after the split (smooth ones: a study tool)")
    compare.add_argument("--link", default="softmax", choices=tuple(LINKS))
    _target_options(compare, top=False)
    compare.add_argument("--n-samples", type=int, default=8,
                         help="noisy copies of Smooth Grad-CAM++ (default 8)")
    compare.add_argument("--chunk-size", type=int, default=None,
                         help="directions per batch of the exact engines (memory)")
    compare.add_argument("--out", default="jaxcam-compare", help="output folder")
    compare.set_defaults(run=_compare)

    convert = sub_parser("convert", "convert a torchvision checkpoint to a jaxcam .msgpack "
                                    "(torch not needed)",
                         epilog="example:\n  jaxcam convert resnet50 resnet50-0676ba61.pth "
                                "-o resnet50.msgpack")
    convert.add_argument("model", help="zoo model name, e.g. resnet50 (see `jaxcam models`)")
    convert.add_argument("checkpoint", help="PyTorch checkpoint, e.g. resnet50-0676ba61.pth")
    convert.add_argument("-o", "--output", required=True, help="output .msgpack path")
    convert.set_defaults(run=_convert)

    bench = sub_parser("bench", "the benchmark suite (jaxcam.bench): every "
                                "method jit-compiled beside its baselines and the peers",
                       epilog="examples:\n  jaxcam bench --suite quick --out results.json\n"
                              "  jaxcam bench --models resnet50 --methods grad_cam,"
                              "grad_cam_pp:exact --batch-sizes 1,8,32")
    bench.add_argument("options", nargs=argparse.REMAINDER,
                       help="the suite's options (jaxcam bench --help)")
    bench.set_defaults(run=_bench)
    study = sub_parser("study", "the study, exact versus closed-form higher-order terms and "
                                "every method's faithfulness and localisation "
                                "(benchmarks/STUDY.md; from a clone's root)",
                       epilog="examples:\n  jaxcam study --part derivatives\n"
                              "  jaxcam study --quick --out /tmp/study")
    study.add_argument("options", nargs=argparse.REMAINDER,
                       help="the study's options (jaxcam study --help)")
    study.set_defaults(run=_study)
    train = sub_parser("train-shapes", "train the shapes networks (shapes-relu, shapes-smooth) "
                                        "on jaxcam.datasets.shapes and cache their weights",
                       epilog="examples:\n  jaxcam train-shapes\n  jaxcam train-shapes "
                              "--model shapes-relu --quick")
    train.add_argument("--model", default="shapes-relu,shapes-smooth",
                       help="comma-separated networks (default both)")
    train.add_argument("--quick", action="store_true",
                       help="a few hundred steps on 32 px images (for tests; cached apart)")
    train.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    train.add_argument("--force", action="store_true", help="train even when cached")
    train.set_defaults(run=_train_shapes)
    sub_parser("models", "list the model zoo").set_defaults(run=_models)
    layers = sub_parser("layers", "list a model's layers (the default marked)",
                        epilog="example:\n  jaxcam layers resnet50")
    layers.add_argument("model", help="zoo model name (see `jaxcam models`)")
    layers.set_defaults(run=_layers)
    methods = sub_parser("methods", "list the CAM methods: " + ", ".join(available_methods()))
    methods.add_argument("name", nargs="?", default=None,
                         help="one method: its options, defaults and help")
    methods.add_argument("--markdown", action="store_true",
                         help="print the README's Markdown tables: methods, then options")
    methods.set_defaults(run=_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["bench"], ["study"]):
        argv = [argv[0], "--", *argv[1:]]          # every option, --help too, goes on
    args = build_parser().parse_args(argv)
    try:
        if args.command not in ("models", "layers", "methods", "convert", "bench", "study"):
            _compile_cache(not args.no_compile_cache)
        return args.run(args)
    except KeyboardInterrupt:
        print("jaxcam: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:                    # bad input: images, weights, paths, options
        if args.debug:
            raise
        if isinstance(e, (ValueError, OSError, TypeError)):
            _fail(str(e) or type(e).__name__)
        _fail(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")


if __name__ == "__main__":
    sys.exit(main())
