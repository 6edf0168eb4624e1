"""What the commands share: messages, the compilation cache, models and their splits,
targets, progress bars."""

from __future__ import annotations

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


def names_for(n: int) -> tuple[str, ...] | None:
    names = class_names()
    return tuple(names) if len(names) == n else None


def top5(probs: np.ndarray, names) -> str:
    lines = []
    for c in np.argsort(-probs, kind="stable")[:5]:
        name = names[c] if names else ""
        lines.append(f"  {c:4d}  {probs[c]:6.1%}  {name}")
    return "\n".join(lines)


def fail(message: str):
    """Prints ``jaxcam: error: message`` as one line on stderr and exits with status 2."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    print(f"jaxcam: error: {'; '.join(lines)}", file=sys.stderr)
    sys.exit(2)


def say(*lines: str) -> None:
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


def compile_cache(enabled: bool) -> None:
    """JAX's persistent compilation cache in the jaxcam cache folder, for every program
    (the default minimum of 1 s of compile time would skip most of them)."""
    if not enabled:
        return
    import jax

    from jaxcam.models import cache_dir

    if jax.config.jax_compilation_cache_dir is None:      # the user's own setting wins
        folder = cache_dir() / "xla"
        private_folder(folder)
        jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def private_folder(folder: Path) -> None:
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


def weights_argument(model: str, weights: str | None) -> str | None:
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


def splits_at(model: str, weights, layers: str | None, mesh=None) -> tuple:
    """The model split at each of the comma-separated ``layers`` (default: the model's
    layer), its variables placed once on the devices of ``mesh``."""
    import jaxcam

    names = layer_names(model, layers)
    first = jaxcam.models.load(model, layer=names[0], weights=weights_argument(model, weights))
    first = jaxcam.place(first, mesh)
    return (first, *(first.at(name) for name in names[1:]))


def input_shape(split) -> tuple[int, int, int]:
    size = split.preprocess.size
    return (size, size, 3)


def target_and_top(split, args) -> tuple[int | None, int]:
    """(--class or None, --top), checked against the model's number of classes (found by
    tracing the model only when there is something to check)."""
    import jaxcam

    top = getattr(args, "top", 1)
    if args.target is None and top == 1:
        return None, 1
    n = jaxcam.batch.num_classes(split, input_shape(split))
    if args.target is not None and not 0 <= args.target < n:
        raise ValueError(f"--class {args.target} is out of range: the model has {n} classes "
                         f"(0..{n - 1})")
    if not 1 <= top <= n:
        raise ValueError(f"--top {top} must lie in 1..{n} (the model's classes)")
    return args.target, top


def progress_bar(total: int, label: str = "explaining"):
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


def warn(bar, line: str) -> None:
    """A line on stderr, above the progress bar when there is one."""
    if bar is not None:
        bar.console.print(line, markup=False, highlight=False)
    else:
        print(line, file=sys.stderr, flush=True)


def weights_identity(weights: str | None) -> object:
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


def layer_names(model: str, layers: str | None) -> list[str | None]:
    """The comma-separated --layer names (``[None]``: the model's default), each once."""
    names = [s.strip() for s in layers.split(",") if s.strip()] if layers else [None]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--layer names {', '.join(twice)} more than once; give each layer "
                         "once")
    return names
