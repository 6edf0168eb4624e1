"""The commands on photos: demo, explain, evaluate, grid and compare."""

from __future__ import annotations

import json
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from jaxcam.cli._common import (class_names, layer_names, names_for, progress_bar, say,
                                splits_at, target_and_top, top5, warn, weights_argument,
                                weights_identity)

DEMO_METHODS = ("grad_cam,grad_cam_pp,grad_cam_pp:exact,smooth_grad_cam_pp,xgrad_cam,"
                "layer_cam,eigen_cam,ablation_cam")


def figure_maps(image, splits, specs, target, seed):
    """One photo through the compiled batch program: (probs (C,), targets, maps)."""
    import jax

    import jaxcam

    x = splits[0].preprocess(image)[None]
    given = None if target is None else np.array([target], np.int32)
    probs, targets, maps = jaxcam.batch.explain_step(splits, x, given, jax.random.key(seed),
                                                     specs=specs, top=1)
    return np.asarray(probs)[0], int(np.asarray(targets)[0, 0]), np.asarray(maps)[0, :, :, 0]


def grid_figure(image, splits, specs, maps):
    import jaxcam

    cells = [[jaxcam.viz.overlay(image, maps[li, mi], preprocess=splits[0].preprocess)
              for mi in range(len(specs))] for li in range(len(splits))]
    rows = [s.layer for s in splits] if len(splits) > 1 else None
    return cells, jaxcam.viz.grid(cells, [s.label for s in specs], rows)


def demo(args) -> int:
    import jaxcam

    photo = resources.files("jaxcam").joinpath("assets/chelsea.png")
    with resources.as_file(photo) as path:
        image = jaxcam.viz.read_image(path)
    splits = splits_at("efficientnet_lite0", None, None)
    specs = jaxcam.batch.parse_methods(DEMO_METHODS)
    probs, target, maps = figure_maps(image, splits, specs, None, 0)
    cells, figure = grid_figure(image, splits, specs, maps)
    out = Path(args.out)
    files = {out / f"chelsea_{s.label}_class{target}.png": cells[0][i]
             for i, s in enumerate(specs)}
    files[out / f"chelsea_grid_class{target}.png"] = figure
    written = jaxcam.viz.write_all(files)
    names = names_for(probs.shape[-1])
    say("efficientnet_lite0 on the bundled photo chelsea.png, top-5 classes:",
         top5(probs, names),
         f"explained class {target} at layer {splits[0].layer!r} with "
         f"{len(specs)} methods; wrote:", *(f"  {p.resolve()}" for p in written))
    return 0


def processes(args) -> tuple[int, int]:
    """(this process's index, the number of processes): (0, 1) unless --distributed."""
    if not (args.distributed or args.coordinator):
        return 0, 1
    import jax

    options = {"coordinator_address": args.coordinator, "num_processes": args.num_processes,
               "process_id": args.process_id}
    jax.distributed.initialize(**{k: v for k, v in options.items() if v is not None})
    return jax.process_index(), jax.process_count()


def explain(args) -> int:
    import jaxcam
    from jaxcam import models

    index, count = processes(args)
    out = Path(args.out)
    photos = jaxcam.batch.find_images(args.paths, exclude=[out])[index::count]
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    specs = jaxcam.batch.parse_methods(args.method, link=args.link,
                                       derivatives=args.derivatives)
    layers = layer_names(args.model, args.layer)
    options = {"model": args.model, "weights": weights_identity(args.weights),
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
        splits = splits_at(args.model, args.weights, args.layer, mesh)
        target, top = target_and_top(splits[0], args)
        config = jaxcam.batch.RunConfig(
            model=args.model, splits=splits, specs=specs, classes=target, top=top,
            seed=args.seed, batch_size=args.batch_size, mesh=mesh, out=out,
            formats=("png", "npy") if args.format == "both" else (args.format,),
            class_names=tuple(class_names()))
        return explain_run(args, photos, config, results, done, index, count)


def record_all(records, results, total: int, label: str, done) -> tuple[int, int, dict]:
    """Writes each photo's record to ``results`` under a progress bar and returns
    (photos done, photos skipped, the last record done). An error is printed at once and
    written once a photo succeeds (or beside earlier results), so a run where nothing
    succeeds leaves no results file."""
    count, skipped, waiting, last = 0, 0, [], None
    bar = progress_bar(total, label)
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
                warn(bar, f"jaxcam: error: {message}")
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


def explain_run(args, photos, config, results, done, index, count) -> int:
    import jaxcam

    t0 = time.perf_counter()
    explained, skipped, last = record_all(jaxcam.batch.explain_photos(photos, config),
                                           results, len(photos), "explaining", done)
    seconds = time.perf_counter() - t0
    if explained == 0 and skipped and not done:
        sys.exit(2)                            # nothing written; the errors are printed
    shard = f" (process {index + 1} of {count})" if count > 1 else ""
    if explained == 1 and len(photos) == 1:
        say(f"{args.model} on {photos[0].path}, top-5 classes:",
             *(f"  {t['class']:4d}  {t['probability']:6.1%}  {t['name']}"
               for t in last["top5"]),
             f"explained class {last['class']} at layer {last['layer']!r}; wrote:",
             *(f"  {Path(m[f]).resolve()}" for m in last["maps"] for f in ("png", "npy")
               if f in m))
    else:
        rate = explained / seconds if seconds > 0 else 0.0
        say(f"explained {explained} photos{shard} in {seconds:.1f} s ({rate:.2f} images/s)"
             + (f", skipped {skipped}" if skipped else "")
             + (" (nothing left to do: every photo is in the results)" if not photos else "")
             + f"; results: {results.path.resolve()}")
    return 1 if skipped else 0


def evaluate(args) -> int:
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
               "weights": weights_identity(args.weights),
               "layer": args.layer or models.info(args.model).default_layer,
               "methods": [[s.name, [list(o) for o in s.options]] for s in specs],
               "metrics": list(metrics), "steps": args.steps, "class": args.target,
               "seed": args.seed}
    with jaxcam.batch.OutputFolder(out, options, resume=args.resume) as folder:
        done = folder.done()
        todo = [p for p in photos if str(p.path.resolve()) not in done]
        results = folder.results(retry=[p.path for p in todo])
        mesh = jaxcam.data_mesh()
        (split,) = splits_at(args.model, args.weights, args.layer, mesh)
        target, _ = target_and_top(split, args)
        config = jaxcam.batch.EvalConfig(model=args.model, split=split, specs=specs, metrics=metrics,
                              classes=target, seed=args.seed, steps=args.steps,
                              batch_size=args.batch_size, mesh=mesh)
        t0 = time.perf_counter()
        scored, skipped, _ = record_all(jaxcam.batch.evaluate_photos(todo, config), results,
                                         len(todo), "evaluating", done)
        records = [r for r in jaxcam.batch.read_results(out) if "metrics" in r]
        if not records:
            sys.exit(2)                      # nothing scored; the errors are printed
        summary = jaxcam.batch.summarise(records)
        table = jaxcam.batch.summary_markdown(summary)
        jaxcam.viz.write_all({out / "summary.json": json.dumps(summary, indent=2) + "\n",
                              out / "summary.md": table})
    seconds = time.perf_counter() - t0
    say(table.rstrip(),
         f"scored {scored} photos in {seconds:.1f} s" + (f", skipped {skipped}" if skipped
                                                          else "")
         + f"; means over {len(records)} photos with 95 % bootstrap intervals; results: "
         f"{results.path.resolve()}, summary: {(out / 'summary.json').resolve()}")
    return 1 if skipped else 0


def grid(args) -> int:
    import jaxcam

    image = jaxcam.viz.read_image(args.image)
    specs = jaxcam.batch.parse_methods(args.method, link=args.link,
                                       derivatives=args.derivatives)
    splits = splits_at(args.model, args.weights, args.layer)
    target, _ = target_and_top(splits[0], args)
    probs, target, maps = figure_maps(image, splits, specs, target, args.seed)
    _, figure = grid_figure(image, splits, specs, maps)
    path = Path(args.out) / f"{Path(args.image).stem}_grid_class{target}.png"
    written = jaxcam.viz.write_all({path: figure})
    names = names_for(probs.shape[-1])
    say(f"{args.model}, class {target} {names[target] if names else ''} "
         f"({probs[target]:.1%}): {len(specs)} methods x {len(splits)} layers; wrote:",
         f"  {written[0].resolve()}")
    return 0


def compare(args) -> int:
    import jax

    import jaxcam

    image = jaxcam.viz.read_image(args.image)
    split = jaxcam.place(jaxcam.models.load(args.model, layer=args.layer,
                                            weights=weights_argument(args.model, args.weights),
                                            activation=args.activation))
    x = split.preprocess(image)[None]
    target, _ = target_and_top(split, args)
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
    say(f"exact vs closed-form Grad-CAM++, {args.model} at {split.layer!r}, link "
         f"{args.link!r}, class {target}:",
         *(f"  {key:16s} {stats[key]:.6g}"
           for key in ("spearman", "relative_l2", "iou_top20", "max_alpha_diff",
                       "kink_activations")),
         f"Smooth Grad-CAM++ ({args.n_samples} noisy copies), exact vs closed form:",
         *(f"  {key:16s} {stats['smooth'][key]:.6g}"
           for key in ("spearman", "relative_l2", "iou_top20")),
         "wrote:", *(f"  {path.resolve()}" for path in written))
    return 0
