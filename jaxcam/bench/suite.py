"""The benchmark suite: every method jit-compiled, beside its baselines and the peers.

    jaxcam bench --suite quick --out results.json     # from a clone also: python -m benchmarks run
    jaxcam bench --suite full --part 2/6 --repeats 5 --out full.json --results RESULTS.md
    jaxcam bench --models resnet50 --methods grad_cam,grad_cam_pp:exact \\
        --batch-sizes 1,8,32 --size 224

For each (model, layer, method, options, batch size) and library, a row of:

- ``compile_s``: the first call (trace + compile + run), apart from the steady state;
- ``median_s`` / ``min_s`` / ``max_s`` over ``repeats`` calls after one warm-up (10 by
  default; ``Case.repeats`` sets fewer for a case whose calls take many seconds), each
  ended with ``jax.block_until_ready`` (the peers: their own synchronous calls);
- ``images_per_s``: batch size / median;
- ``peak_memory_bytes``: the device's peak bytes in use (an accelerator), or on the CPU
  the peak resident set size above the one before the case, sampled every 2 ms while the
  case runs (``memory_kind`` says which);
- ``baseline``: the floor in the same process: the plain forward of the same model and
  batch for gradient methods, the K masked images through the batched forward for the
  Score-CAM family (``masked_forward``; K = the layer's channels, measured on one chunk of
  ``chunk_size`` images and scaled), the K ablated copies of the activations through the
  head alone for Ablation-CAM (``ablated_head``, measured and scaled the same way), the
  closed form for exact Grad-CAM++; ``ratio`` is median / floor;
- ``agreement``: for a peer row, the mean Pearson correlation between the peer's maps and
  jaxcam's (both at the input size), so that speed is never compared between different
  computations.

The full suite takes about an hour on 2 CPU cores: ``--part N/M`` runs the N-th of M
parts of about equal estimated time and adds its rows to ``--out``, which then holds
every finished part (:mod:`jaxcam.bench.parts`); ``--results`` rebuilds that suite's
section of a Markdown file (RESULTS.md) from it: each part's machine, command and time,
every ratio summarised, the whole table.

The peers (pytorch-grad-cam, torch-cam, when installed) run on PyTorch reference models
carrying the same weights (:mod:`jaxcam.bench.torch_models`: a seeded PyTorch model, saved
as a checkpoint and loaded into jaxcam through its converter), on the same inputs, with
PyTorch's threads set to the cores XLA uses. Which peer classes a method has comes from
its declaration (``MethodInfo.peers``); a peer row is made only where the case's options
are ones the peer computes too (:func:`jaxcam.bench.cases.case_peers`: e.g. Score-CAM
with ``variant="torchcam"`` beside torch-cam's ScoreCAM). pytorch-grad-cam imports
torchvision: where that cannot be imported, the environment records pytorch_grad_cam as
None and its rows are left out.

The JSON document (``SCHEMA_VERSION``): ``{"schema", "suite", "environment": {...},
"rows": [row, ...]}``, each row with the keys of ``ROW_KEYS``; :func:`validate` checks it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from jaxcam.bench.cases import Case, Peer, case_peers, peer_kwargs
from jaxcam.bench.peer_calls import TORCH_MODELS
from jaxcam.bench.peer_calls import call as peer_call_torch

SCHEMA_VERSION = 1
ROW_KEYS = ("model", "layer", "size", "method", "options", "batch_size", "library",
            "compile_s", "median_s", "min_s", "max_s", "repeats", "images_per_s",
            "peak_memory_bytes", "memory_kind", "baseline", "agreement")
ENVIRONMENT_KEYS = ("device", "platform", "cpu_count", "torch_threads", "python", "jax",
                    "jaxlib", "flax", "torch", "pytorch_grad_cam", "torchcam", "commit")

# --- measuring

class PeakMemory:
    """Peak memory while a block runs: the device's ``peak_bytes_in_use`` where the
    backend reports it, else the process's resident set size sampled every 2 ms, less the
    one before the block."""

    def __init__(self):
        import jax

        stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != "cpu" else None
        self.kind = "device_peak" if stats and "peak_bytes_in_use" in stats else "rss_above_start"
        self.peak = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.kind == "rss_above_start":
            self._start, self._top, self._stop = self._rss(), 0, threading.Event()

            def sample():
                while not self._stop.is_set():
                    self._top = max(self._top, self._rss())
                    self._stop.wait(0.002)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.kind == "rss_above_start":
            self._stop.set()
            self._thread.join()
            self.peak = max(self._top, self._rss()) - self._start
        else:
            import jax

            self.peak = int(jax.devices()[0].memory_stats()["peak_bytes_in_use"])


def _time(fns: dict, repeats: int) -> dict:
    """Per name: compile_s (its first call), one warm-up, then ``repeats`` timed calls,
    round r calling every function once (interleaved, against drift); then the peak memory
    of two more calls of each, apart."""
    out = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        output = fn()
        out[name] = {"compile_s": time.perf_counter() - t0, "output": output}
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    for name, fn in fns.items():
        with PeakMemory() as memory:
            fn()
            fn()
        t = times[name]
        out[name].update(median_s=statistics.median(t), min_s=min(t), max_s=max(t),
                         repeats=repeats, peak_memory_bytes=int(memory.peak),
                         memory_kind=memory.kind)
    return out


def agreement(a: np.ndarray, b: np.ndarray, per_image: bool = False) -> float | list[float]:
    """The Pearson correlation of two batches of maps (B, H, W), ``b`` resized to ``a``'s
    size where they differ: its mean over the images, or each image's (``per_image``)."""
    import cv2

    values = []
    for x, y in zip(a, b):
        if y.shape != x.shape:
            y = cv2.resize(np.asarray(y, np.float32), x.shape[::-1],
                           interpolation=cv2.INTER_LINEAR)
        x, y = x.ravel() - x.mean(), y.ravel() - y.mean()
        x, y = x.astype(np.float64), y.astype(np.float64)
        den = np.linalg.norm(x) * np.linalg.norm(y)
        values.append(float(np.clip(x @ y / den, -1.0, 1.0)) if den > 0
                      else float(np.allclose(x, y)))
    return values if per_image else float(np.mean(values))


# --- the libraries

class Setup:
    """One model at one input size: jaxcam's split and, when torch is importable and the
    layer is the one the peers hook (``TORCH_MODELS``: ResNets' ``layer4``), the PyTorch
    reference carrying the same weights; otherwise ``torch_model`` is None and the case
    has no peer rows."""

    def __init__(self, model: str, layer: str, size: int, seed: int = 0):
        import jaxcam

        self.model, self.layer, self.size = model, layer, size
        self.torch_model = self.torch_layer = self.torchcam_layer = None
        if model in TORCH_MODELS and layer == TORCH_MODELS[model][2] \
                and _optional("torch") is not None:
            import torch

            from jaxcam.bench import torch_models as reference

            build, layer_of, self.torchcam_layer = TORCH_MODELS[model]
            self.torch_model = reference.randomize_(build(reference), seed=seed).eval()
            self.torch_layer = layer_of(self.torch_model)
            torch.set_num_threads(os.cpu_count() or 1)
            with tempfile.TemporaryDirectory() as tmp:
                weights = Path(tmp) / f"{model}.pth"
                torch.save(self.torch_model.state_dict(), weights)
                split = jaxcam.models.load(model, layer=layer, weights=weights)
        else:
            split = jaxcam.models.load(model, layer=layer, weights="random", seed=seed)
        self.split = jaxcam.place(split)

    def inputs(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(batch)
        x = rng.normal(size=(batch, self.size, self.size, 3)).astype(np.float32)
        return x, (np.arange(batch) * 7 + 3).astype(np.int32) % 1000


def _optional(name: str):
    """The module ``name``, or None where it (or what it imports, as pytorch-grad-cam's
    torchvision) is missing or cannot be loaded."""
    try:
        return importlib.import_module(name)
    except Exception:                    # noqa: BLE001 - any import failure: not available
        return None


def jaxcam_call(setup: Setup, case: Case, x, classes):
    """A call of jaxcam's method of the case on ``setup``'s split, jit-compiled: a function
    of no arguments returning the maps (B, H, W), ready."""
    import jax

    import jaxcam

    spec = jaxcam.batch.parse_methods(case.method)[0]
    info = jaxcam.method_info(spec.name)
    options = {**dict(spec.options), **dict(case.options)}
    key = jax.random.key(0)

    @jax.jit
    def run(split, x, classes, key):
        extra = {"key": key} if "key" in info.needs else {}
        return info.function(split, x, classes, **options, **extra)

    xs, cs = jax.device_put(x), jax.device_put(classes)
    return lambda: jax.block_until_ready(run(setup.split, xs, cs, key))


def _floor(setup: Setup, case: Case, x, classes) -> tuple[dict, callable, float]:
    """The floor of the case's method: (its description, a call, the factor from one call
    to the floor)."""
    import jax
    import jax.numpy as jnp

    import jaxcam

    spec = jaxcam.batch.parse_methods(case.method)[0]
    info = jaxcam.method_info(spec.name)
    if dict(spec.options).get("derivatives") == "exact":
        closed = dataclasses.replace(case, method=spec.name)
        return {"kind": "closed_form"}, jaxcam_call(setup, closed, x, classes), 1.0
    forward = jax.jit(lambda split, x: split.logits(x))
    if info.kind == "perturbation":
        # K evaluations per image, `chunk` at a time: masked images through the whole
        # network (Score-CAM family) or ablated activations through the head alone
        # (Ablation-CAM, whose chunks are along "channels").
        ablates = "channels" in info.chunks
        axis = "channels" if ablates else "masks"
        chunk = dict(case.options).get("chunk_size", jaxcam.chunking.DEFAULT_CHUNKS[axis])
        k = jax.eval_shape(setup.split.activations, jax.ShapeDtypeStruct(
            (1, setup.size, setup.size, 3), np.float32)).shape[-1]
        scale = k * len(x) / chunk
        if ablates:
            a = jax.jit(lambda split, x: split.activations(x))(setup.split, x[:1])
            head = jax.jit(lambda split, a: split.logits_from(a))
            a_chunk = jax.device_put(jnp.repeat(a, chunk, 0))
            return ({"kind": "ablated_head", "evaluations": int(k * len(x))},
                    lambda: jax.block_until_ready(head(setup.split, a_chunk)), scale)
        xs = jax.device_put(np.repeat(x[:1], chunk, 0))
        return ({"kind": "masked_forward", "images": int(k * len(x))},
                lambda: jax.block_until_ready(forward(setup.split, xs)), scale)
    xs = jax.device_put(x)
    return {"kind": "forward"}, lambda: jax.block_until_ready(forward(setup.split, xs)), 1.0


def peer_call(peer: Peer, setup: Setup, case: Case, x, classes):
    """A call of the peer's method on the PyTorch reference, returning maps (B, H, W)."""
    return peer_call_torch(peer.library, peer.cls, peer_kwargs(peer, case, x),
                           setup.torch_model, setup.torch_layer, setup.torchcam_layer, x,
                           classes)


def run_case(setup: Setup, case: Case, repeats: int, peers: bool = True) -> list[dict]:
    """The rows of one case: jaxcam's, then each installed peer's whose computation is
    the case's (:func:`case_peers`)."""
    import jax

    repeats = case.repeats or repeats
    x, classes = setup.inputs(case.batch_size)
    base = {"model": case.model, "layer": case.layer, "size": case.size,
            "method": case.method, "options": dict(case.options),
            "batch_size": case.batch_size}
    floor, floor_fn, scale = _floor(setup, case, x, classes)
    timed = _time({"jaxcam": jaxcam_call(setup, case, x, classes), "floor": floor_fn},
                  repeats)
    mine = timed["jaxcam"]
    maps = np.asarray(jax.device_get(mine.pop("output")))
    floor["seconds"] = timed["floor"]["median_s"] * scale
    floor["ratio"] = mine["median_s"] / floor["seconds"]
    rows = [{**base, "library": "jaxcam", **mine,
             "images_per_s": case.batch_size / mine["median_s"], "baseline": floor,
             "agreement": None}]
    if not (peers and case.peers and setup.torch_model is not None):
        return rows
    for peer in case_peers(case):
        if _optional(peer.library) is None:
            continue
        fn = peer_call(peer, setup, case, x, classes)
        theirs = _time({"peer": fn}, repeats)["peer"]
        out = theirs.pop("output")
        if hasattr(fn, "extractor"):
            fn.extractor.remove_hooks()
        rows.append({**base, "library": peer.library, **theirs,
                     "images_per_s": case.batch_size / theirs["median_s"],
                     "baseline": {"kind": "jaxcam", "seconds": mine["median_s"],
                                  "ratio": theirs["median_s"] / mine["median_s"]},
                     "agreement": agreement(maps, np.asarray(out))})
    return rows


# --- the document

def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:                    # noqa: BLE001 - not installed
        return None


def _source_commit() -> str | None:
    """The git commit of the source tree jaxcam is imported from (an editable install of a
    clone), or None (an installed wheel)."""
    import jaxcam

    source = Path(jaxcam.__file__).resolve().parents[1]
    if not (source / ".git").exists():
        return None
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment() -> dict:
    import jax

    commit = _source_commit()
    threads = None
    if _optional("torch") is not None:
        import torch

        threads = torch.get_num_threads()
    device = jax.devices()[0]
    return {"device": f"{device.device_kind} x{jax.device_count()}",
            "platform": f"{device.platform} ({platform.processor() or platform.machine()})",
            "cpu_count": os.cpu_count(), "torch_threads": threads,
            "python": platform.python_version(), "jax": _version("jax"),
            "jaxlib": _version("jaxlib"), "flax": _version("flax"), "torch": _version("torch"),
            "pytorch_grad_cam": _version("grad-cam"), "torchcam": _version("torchcam"),
            "commit": commit}


def validate(document: dict) -> None:
    """Raises ValueError unless ``document`` has the suite's JSON schema."""
    if document.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"schema must be {SCHEMA_VERSION}, got {document.get('schema')!r}")
    if set(document.get("environment", {})) != set(ENVIRONMENT_KEYS):
        raise ValueError(f"environment keys {sorted(document.get('environment', {}))} != "
                         f"{sorted(ENVIRONMENT_KEYS)}")
    if not isinstance(document.get("rows"), list) or not document["rows"]:
        raise ValueError("rows must be a non-empty list")
    for row in document["rows"]:
        if set(row) != set(ROW_KEYS):
            raise ValueError(f"row keys {sorted(row)} != {sorted(ROW_KEYS)}")
        for key in ("compile_s", "median_s", "min_s", "max_s", "images_per_s"):
            if not (isinstance(row[key], float) and row[key] >= 0):
                raise ValueError(f"{key} must be a float >= 0, got {row[key]!r}")
        if not row["min_s"] <= row["median_s"] <= row["max_s"] or row["repeats"] < 1:
            raise ValueError(f"inconsistent times in {row}")
        if set(row["baseline"]) - {"kind", "seconds", "ratio", "images", "evaluations"} or \
                not {"kind", "seconds", "ratio"} <= set(row["baseline"]):
            raise ValueError(f"baseline must have kind, seconds, ratio: {row['baseline']}")
        if row["library"] == "jaxcam" and row["agreement"] is not None:
            raise ValueError("jaxcam rows have no agreement")
        if row["library"] != "jaxcam" and not -1.0 <= row["agreement"] <= 1.0:
            raise ValueError(f"agreement must lie in [-1, 1], got {row['agreement']}")


def markdown(document: dict) -> str:
    """The rows as a Markdown table."""
    env = document["environment"]
    lines = [f"{env['device']}, {env['platform']}, jax {env['jax']}, torch {env['torch']} "
             f"({env['torch_threads']} threads), commit {str(env['commit'])[:10]}", "",
             "| model | size | method | batch | library | compile s | median s | min-max s "
             "| images/s | peak MB | floor | x floor | agreement |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in document["rows"]:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        method = r["method"] + (f" ({opts})" if opts else "")
        agreement = "" if r["agreement"] is None else f"{r['agreement']:.3f}"
        lines.append(
            f"| {r['model']} | {r['size']} | {method} | {r['batch_size']} | {r['library']} "
            f"| {r['compile_s']:.2f} | {r['median_s']:.4f} | {r['min_s']:.4f}-"
            f"{r['max_s']:.4f} | {r['images_per_s']:.1f} | "
            f"{r['peak_memory_bytes'] / 2**20:.0f} | {r['baseline']['kind']} | "
            f"{r['baseline']['ratio']:.2f} | {agreement} |")
    return "\n".join(lines) + "\n"


def run(cases: list[Case], *, repeats: int = 10, peers: bool = True, suite: str = "custom",
        progress=print) -> dict:
    setups: dict = {}
    rows = []
    for i, case in enumerate(cases, 1):
        key = (case.model, case.layer, case.size)
        if key not in setups:
            setups[key] = Setup(*key)
        new = [{k: r[k] for k in ROW_KEYS} for r in run_case(setups[key], case, repeats, peers)]
        rows.extend(new)
        if progress:
            progress(f"[{i}/{len(cases)}] " + "; ".join(
                f"{r['library']} {r['method']} b{r['batch_size']}: {r['median_s']:.4f} s "
                f"(x{r['baseline']['ratio']:.2f} {r['baseline']['kind']})" for r in new))
    document = {"schema": SCHEMA_VERSION, "suite": suite, "environment": environment(),
                "rows": rows}
    validate(document)
    return document


