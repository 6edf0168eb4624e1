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
  Score-CAM family (K = the layer's channels, measured on one chunk of ``chunk_size``
  images and scaled), the closed form for exact Grad-CAM++; ``ratio`` is median / floor;
- ``agreement``: for a peer row, the mean Pearson correlation between the peer's maps and
  jaxcam's (both at the input size), so that speed is never compared between different
  computations.

The full suite takes about an hour on 2 CPU cores: ``--part N/M`` runs the N-th of M
parts of about equal estimated time and adds its rows to ``--out``, which then holds
every finished part (``add_part``); ``--results`` rebuilds that suite's section of a
Markdown file (RESULTS.md) from it: each part's machine, command and time, every ratio
summarised, the whole table.

The peers (pytorch-grad-cam, torch-cam, when installed) run on PyTorch reference models
carrying the same weights (:mod:`jaxcam.bench.torch_models`: a seeded PyTorch model, saved
as a checkpoint and loaded into jaxcam through its converter), on the same inputs, with
PyTorch's threads set to the cores XLA uses. Which peer classes a method has comes from
its declaration (``MethodInfo.peers``); a peer row is made only where the case's options
are ones the peer computes too (:func:`case_peers`: e.g. Score-CAM with
``variant="torchcam"`` beside torch-cam's ScoreCAM). pytorch-grad-cam imports torchvision: where
that cannot be imported, the environment records pytorch_grad_cam as None and its rows are
left out.

The JSON document (``SCHEMA_VERSION``): ``{"schema", "suite", "environment": {...},
"rows": [row, ...]}``, each row with the keys of ``ROW_KEYS``; :func:`validate` checks it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from jaxcam.bench.peers import TORCH_MODELS
from jaxcam.bench.peers import call as peer_call_torch

SCHEMA_VERSION = 1
ROW_KEYS = ("model", "layer", "size", "method", "options", "batch_size", "library",
            "compile_s", "median_s", "min_s", "max_s", "repeats", "images_per_s",
            "peak_memory_bytes", "memory_kind", "baseline", "agreement")
ENVIRONMENT_KEYS = ("device", "platform", "cpu_count", "torch_threads", "python", "jax",
                    "jaxlib", "flax", "torch", "pytorch_grad_cam", "torchcam", "commit")

# The peers' libraries, as the method declarations name them (``MethodInfo.peers``).
LIBRARIES = {"pytorch-grad-cam": "pytorch_grad_cam", "torch-cam": "torchcam"}
# Peer classes the suite does not call, and why (every other declared peer is called).
NOT_CALLED = {
    "CAM": "needs the classifier's fc layer, not a target layer",
    "FinerCAM": "takes a base method object and a contrast count",
    "ShapleyCAM": "needs second-order autograd through the model",
    "AblationCAM": "replaces the target layer by its own ablation module",
    "GuidedBackpropReLUModel": "returns input gradients, not maps",
}


@dataclasses.dataclass(frozen=True)
class Peer:
    """How the suite calls one peer class.

    Attributes:
      library: the import name (``pytorch_grad_cam``, ``torchcam``).
      cls: the class.
      matches: jaxcam options (name, value) under which the peer computes the same maps
        (e.g. Score-CAM's ``variant``); a case without them gets no row of this peer.
      takes: the jaxcam options the peer is given, in its own terms (``peer_options``).
    """

    library: str
    cls: str
    matches: tuple = ()
    takes: tuple = ()


# (method, library) -> what the peer needs beyond a plain call
_PEER_TERMS = {
    ("smooth_grad_cam_pp", "torchcam"): ((("variant", "torchcam"),), ("n_samples", "noise")),
    ("score_cam", "pytorch_grad_cam"): ((("variant", "pytorch-grad-cam"),), ("chunk_size",)),
    ("score_cam", "torchcam"): ((("variant", "torchcam"),), ("chunk_size",)),
}


def peers(method: str) -> tuple[Peer, ...]:
    """The peer classes the suite calls for a jaxcam method, from its declaration."""
    import jaxcam

    out = []
    for name in jaxcam.method_info(method).peers:
        library, _, cls = name.partition(" ")
        if cls in NOT_CALLED or library not in LIBRARIES:
            continue
        lib = LIBRARIES[library]
        matches, takes = _PEER_TERMS.get((method, lib), ((), ()))
        out.append(Peer(lib, cls, matches, takes))
    return tuple(out)


def case_peers(case) -> tuple[Peer, ...]:
    """The peers whose computation is the case's: every option the case sets is one the
    peer matches or takes (exact derivatives, top_n... have no peer)."""
    import jaxcam

    spec = jaxcam.batch.parse_methods(case.method)[0]
    options = {**dict(spec.options), **dict(case.options)}
    return tuple(p for p in peers(spec.name)
                 if all(options.get(k) == v for k, v in p.matches)
                 and set(options) <= {k for k, _ in p.matches} | set(p.takes))



@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    layer: str
    size: int
    method: str                  # a jaxcam.batch method spec: grad_cam_pp:exact
    batch_size: int
    options: tuple = ()          # extra keyword options, e.g. (("n_samples", 8),)
    peers: bool = True
    repeats: int | None = None   # timed calls, where the suite's number would be too slow


def _cases(models, methods, batch_sizes, size, extra=None, repeats=None) -> list[Case]:
    import jaxcam

    out = []
    for model in models:
        layer = jaxcam.models.default_layer(model)
        for method in methods:
            for b in batch_sizes:
                out.append(Case(model, layer, size, method, b,
                                tuple(sorted((extra or {}).get(method.partition(":")[0],
                                                               {}).items())),
                                repeats=repeats))
    return out


SUITES = {
    # about 5 minutes on 2 CPU cores
    "quick": lambda: _cases(
        ["resnet18"], ["grad_cam", "grad_cam_pp", "grad_cam_pp:exact", "xgrad_cam",
                       "layer_cam", "smooth_grad_cam_pp"], [1, 8], 112,
        {"smooth_grad_cam_pp": {"n_samples": 8}})
    + _cases(["resnet18"], ["score_cam"], [1], 112, {"score_cam": {"chunk_size": 64}}),
    # about an hour on 2 CPU cores: run it in parts, --part N/M
    "full": lambda: _cases(
        ["resnet50"], ["grad_cam", "grad_cam_pp", "grad_cam_pp:exact", "xgrad_cam",
                       "layer_cam", "hires_cam", "grad_cam_elementwise", "eigen_cam",
                       "eigen_grad_cam"], [1, 8, 32], 224)
    + _cases(["resnet50"], ["smooth_grad_cam_pp:variant=torchcam"], [1, 4], 224,
             {"smooth_grad_cam_pp": {"n_samples": 25}}, repeats=3)
    + _cases(["resnet18"], ["score_cam:variant=pytorch-grad-cam", "score_cam:variant=torchcam"],
             [1], 224, {"score_cam": {"chunk_size": 64}}, repeats=3)
    + _cases(["resnet50"], ["ablation_cam"], [1], 224, repeats=3)
    + _cases(["vgg16"], ["grad_cam", "grad_cam_pp", "grad_cam_pp:exact"], [1, 8], 224),
}

# Rough seconds of one image's forward at 224 px on 2 CPU cores, and the target layer's
# channels, to balance the parts.
_FORWARD_S = {"resnet18": 0.035, "resnet50": 0.1, "vgg16": 0.3}
_CHANNELS = {"resnet18": 512, "resnet50": 2048, "vgg16": 512}


def estimate_s(case: Case, repeats: int) -> float:
    """A rough estimate of the case's seconds (its method, floor and peers) in forwards
    of one image, only to balance the parts of a suite; never reported."""
    options = _effective(case)
    name = case.method.partition(":")[0]
    if name == "smooth_grad_cam_pp":
        mine, floor, peer = 3 * options.get("n_samples", 25), 1, 3 * options.get("n_samples", 25)
    elif name in ("score_cam", "ablation_cam"):
        channels = _CHANNELS.get(case.model, 512)
        mine, floor, peer = (channels, 0, channels) if name == "score_cam" else (6, 1, 0)
    else:
        mine, floor, peer = (4 if "exact" in case.method else 1.2), 1, 2
    calls = (case.repeats or repeats) + 4
    work = mine + floor + peer * len(case_peers(case))
    per_image = _FORWARD_S.get(case.model, 0.1) * (case.size / 224) ** 2
    return 5.0 + per_image * case.batch_size * work * calls


def split_parts(cases: list[Case], parts: int, repeats: int) -> list[list[Case]]:
    """``cases`` in ``parts`` contiguous groups of about equal estimated time (cases of
    one model stay together where they can, so a part loads few models)."""
    if not 1 <= parts <= len(cases):
        raise ValueError(f"the suite has {len(cases)} cases: --part N/M needs 1 <= M <= "
                         f"{len(cases)}, got M = {parts}")
    cost = [estimate_s(c, repeats) for c in cases]
    total, out, current, spent = sum(cost), [], [], 0.0
    for i, (case, c) in enumerate(zip(cases, cost)):
        left = len(cases) - i                      # cases not yet placed, this one included
        need = parts - len(out) - 1                # groups still to open after this one
        if current and (left <= need or spent + c / 2 > total * (len(out) + 1) / parts):
            out.append(current)
            current = []
        current.append(case)
        spent += c
    out.append(current)
    return out


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


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of the Pearson correlation of two batches of maps (B, H, W)."""
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
    return float(np.mean(values))


# --- the libraries

class Setup:
    """One model at one input size: jaxcam's split and, when torch is importable, the
    PyTorch reference carrying the same weights."""

    def __init__(self, model: str, layer: str, size: int, seed: int = 0):
        import jaxcam

        self.model, self.layer, self.size = model, layer, size
        self.torch_model = self.torch_layer = self.torchcam_layer = None
        if model in TORCH_MODELS and _optional("torch") is not None:
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

    import jaxcam

    spec = jaxcam.batch.parse_methods(case.method)[0]
    info = jaxcam.method_info(spec.name)
    if dict(spec.options).get("derivatives") == "exact":
        closed = dataclasses.replace(case, method=spec.name)
        return {"kind": "closed_form"}, jaxcam_call(setup, closed, x, classes), 1.0
    forward = jax.jit(lambda split, x: split.logits(x))
    if info.kind == "perturbation":
        chunk = dict(case.options).get("chunk_size", 16)
        k = jax.eval_shape(setup.split.activations, jax.ShapeDtypeStruct(
            (1, setup.size, setup.size, 3), np.float32)).shape[-1]
        xs = jax.device_put(np.repeat(x[:1], chunk, 0))
        return ({"kind": "masked_forward", "images": int(k * len(x))},
                lambda: jax.block_until_ready(forward(setup.split, xs)), k * len(x) / chunk)
    xs = jax.device_put(x)
    return {"kind": "forward"}, lambda: jax.block_until_ready(forward(setup.split, xs)), 1.0


def _effective(case) -> dict:
    """The case's jaxcam options with the method's declared defaults filled in."""
    import jaxcam

    spec = jaxcam.batch.parse_methods(case.method)[0]
    info = jaxcam.method_info(spec.name)
    given = {**dict(spec.options), **dict(case.options)}
    return {o.name: given.get(o.name, o.default) for o in info.options if not o.required}


def peer_kwargs(peer: Peer, case, x: np.ndarray) -> dict:
    """The peer constructor's keyword arguments (and attributes) for the case's options.

    Smooth Grad-CAM++: torch-cam's noise is absolute, jaxcam's a fraction of the batch's
    spread (max - min), so the peer gets ``noise * spread``. Score-CAM: the peer's batch
    of masked images is jaxcam's ``chunk_size`` (16 where unset, pytorch-grad-cam's
    default)."""
    options = _effective(case)
    if peer.cls == "SmoothGradCAMpp":
        return {"num_samples": int(options["n_samples"]),
                "std": float(options["noise"]) * float(x.max() - x.min())}
    if peer.cls == "ScoreCAM":
        chunk = options.get("chunk_size") or 16
        extra = {"input_shape": (3, case.size, case.size)} if peer.library == "torchcam" else {}
        return {"batch_size": int(chunk), **extra}
    return {}


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
                     "agreement": _correlation(maps, np.asarray(out))})
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
        if set(row["baseline"]) - {"kind", "seconds", "ratio", "images"} or \
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


def _write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file beside it, so that an
    interrupted run never leaves half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_part(text: str) -> tuple[int, int]:
    """``"N/M"`` -> (N, M) with 1 <= N <= M."""
    n, sep, m = text.partition("/")
    if not (sep and n.isdigit() and m.isdigit() and 1 <= int(n) <= int(m)):
        raise ValueError(f"--part must be N/M with 1 <= N <= M, e.g. 2/6; got {text!r}")
    return int(n), int(m)


def add_part(path: Path, document: dict, part: tuple[int, int], command: str) -> dict:
    """Adds (or replaces) part N of M in the parts document at ``path`` and returns it.

    The parts document is the suite's document (``rows`` are every finished part's rows,
    in part order; ``environment`` the latest part's) plus ``parts``: per part its
    ``rows``, ``seconds``, ``environment`` and ``command``. Parts of another suite or
    another M are refused (a different split of the cases)."""
    n, m = part
    if path.exists():
        whole = json.loads(path.read_text())
        if whole.get("suite") != document["suite"] or whole.get("part_count") != m:
            raise ValueError(f"{path} holds parts of suite {whole.get('suite')!r} split in "
                             f"{whole.get('part_count')}, not {document['suite']!r} in {m}: "
                             "pass another --out")
    else:
        whole = {"schema": SCHEMA_VERSION, "suite": document["suite"], "part_count": m,
                 "parts": {}}
    whole["parts"][str(n)] = {"rows": document["rows"], "seconds": document["seconds"],
                              "environment": document["environment"], "command": command}
    done = sorted(whole["parts"], key=int)
    whole["rows"] = [r for k in done for r in whole["parts"][k]["rows"]]
    whole["environment"] = document["environment"]
    validate(whole)
    _write_atomic(path, json.dumps(whole, indent=2) + "\n")
    return whole


def _summary(document: dict) -> list[str]:
    """The suite's ratios, summarised: each method's cost over its floor, and each peer's
    time over jaxcam's (the target: jaxcam at most half of pytorch-grad-cam's time)."""
    rows = document["rows"]
    lines = []
    floors: dict = {}
    for r in rows:
        if r["library"] == "jaxcam":
            floors.setdefault(r["baseline"]["kind"], []).append(r["baseline"]["ratio"])
    for kind, ratios in floors.items():
        lines.append(f"- jaxcam over its floor ({kind}): {min(ratios):.2f}-{max(ratios):.2f} x "
                     f"over {len(ratios)} rows.")
    for library in sorted({r["library"] for r in rows} - {"jaxcam"}):
        mine = [r for r in rows if r["library"] == library]
        ratios = [r["baseline"]["ratio"] for r in mine]
        agree = [r["agreement"] for r in mine]
        lines.append(f"- {library} over jaxcam: {min(ratios):.2f}-{max(ratios):.2f} x "
                     f"(median {statistics.median(ratios):.2f}) over {len(ratios)} rows; "
                     f"agreement {min(agree):.3f}-{max(agree):.3f}.")
    misses = [r for r in rows if r["library"] == "pytorch_grad_cam"
              and r["baseline"]["ratio"] < 2.0]
    for r in misses:
        lines.append(f"- Miss: {r['method']} at batch {r['batch_size']} ({r['model']}): "
                     f"pytorch-grad-cam takes {r['baseline']['ratio']:.2f} x jaxcam's time, "
                     "below the 2 x the target asks.")
    return lines


def results_section(whole: dict) -> str:
    """RESULTS.md's section for a parts document: machine, commands, parts, summary and
    the table of every row."""
    m = whole["part_count"]
    missing = [str(k) for k in range(1, m + 1) if str(k) not in whole["parts"]]
    lines = [f"## The benchmark suite, {whole['suite']} "
             f"(`python -m benchmarks run --suite {whole['suite']} --part N/{m}`)", ""]
    for k in sorted(whole["parts"], key=int):
        part = whole["parts"][k]
        env = part["environment"]
        lines.append(f"- part {k}/{m}: {len(part['rows'])} rows, {part['seconds']:.0f} s, "
                     f"{env['device']} ({env['platform']}, {env['cpu_count']} cores), commit "
                     f"{str(env['commit'])[:10]}: `{part['command']}`")
    if missing:
        lines.append(f"- not run yet: part {', '.join(missing)} of {m}")
    lines += ["", *_summary(whole), "", markdown(whole)]
    return "\n".join(lines)


def write_results(whole: dict, results: Path) -> None:
    """Rewrites the section of ``results`` between ``<!-- suite: NAME -->`` and
    ``<!-- /suite: NAME -->`` (appended at the end when absent)."""
    begin, end = f"<!-- suite: {whole['suite']} -->", f"<!-- /suite: {whole['suite']} -->"
    text = results.read_text() if results.exists() else ""
    block = f"{begin}\n{results_section(whole)}\n{end}"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        text = head + block + rest.partition(end)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    _write_atomic(results, text)


def main(argv: list[str] | None = None, prog: str = "jaxcam bench") -> int:
    """Runs the suite (or the cases the options give) and writes its JSON document and
    Markdown table: ``jaxcam bench [options]``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p = parser
    p.add_argument("--suite", choices=sorted(SUITES), default=None)
    p.add_argument("--models", default=None, help="e.g. resnet18,resnet50")
    p.add_argument("--methods", default=None, help="e.g. grad_cam,grad_cam_pp:exact")
    p.add_argument("--batch-sizes", default=None, help="e.g. 1,8,32")
    p.add_argument("--size", type=int, default=None, help="input size (default: the suite's)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--part", default=None,
                   help="N/M: run the N-th of M parts of the suite (of about equal time) and "
                        "add its rows to --out, which then holds every finished part")
    p.add_argument("--list-parts", action="store_true",
                   help="print the cases of each part (with --part's M) and exit")
    p.add_argument("--results", default=None,
                   help="a Markdown file (benchmarks/RESULTS.md) whose section for the suite "
                        "is rebuilt from --out's parts document")
    p.add_argument("--out", default="benchmark-results.json",
                   help="the JSON document; the Markdown table goes beside it (.md)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    cases = SUITES[args.suite or "quick"]()
    if args.models or args.methods or args.batch_sizes or args.size:
        if args.part:
            parser.error("--part splits a whole suite; it cannot take --models, --methods, "
                         "--batch-sizes or --size")
        models = args.models.split(",") if args.models else sorted({c.model for c in cases})
        methods = (args.methods.split(",") if args.methods
                   else list(dict.fromkeys(c.method for c in cases)))
        sizes = ([int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes
                 else sorted({c.batch_size for c in cases}))
        size = args.size or cases[0].size
        cases = _cases(models, methods, sizes, size)
    out = Path(args.out)
    part = None
    if args.part:
        try:
            part = parse_part(args.part)
            groups = split_parts(cases, part[1], args.repeats)
        except ValueError as e:
            parser.error(str(e))
        if args.list_parts:
            for k, group in enumerate(groups, 1):
                print(f"part {k}/{part[1]}: " + ", ".join(
                    f"{c.model} {c.method} b{c.batch_size}" for c in group))
            return 0
        cases = groups[part[0] - 1]
    elif args.results and not args.list_parts:
        if not out.exists():
            parser.error(f"--results rebuilds from the parts document --out {out}, which "
                         "does not exist: run the parts first")
        write_results(json.loads(out.read_text()), Path(args.results))
        print(f"rebuilt {args.results} from {out}")
        return 0
    t0 = time.perf_counter()
    document = run(cases, repeats=args.repeats, peers=not args.no_peers,
                   suite=args.suite or "custom")
    document["seconds"] = time.perf_counter() - t0
    if part is not None:
        command = " ".join(["python -m benchmarks run", *(argv if argv is not None
                                                          else __import__("sys").argv[1:])])
        try:
            whole = add_part(out, document, part, command)
        except ValueError as e:
            parser.error(str(e))
        _write_atomic(out.with_suffix(".md"), markdown(whole))
        if args.results:
            write_results(whole, Path(args.results))
        print(f"part {part[0]}/{part[1]}: {len(document['rows'])} rows in "
              f"{document['seconds']:.0f} s; {out} holds parts "
              f"{', '.join(sorted(whole['parts'], key=int))} of {part[1]}")
        return 0
    _write_atomic(out, json.dumps(document, indent=2) + "\n")
    _write_atomic(out.with_suffix(".md"), markdown(document))
    print(f"wrote {out} and {out.with_suffix('.md')} ({len(document['rows'])} rows, "
          f"{document['seconds']:.0f} s)")
    return 0
