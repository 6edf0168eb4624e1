"""``python -m benchmarks memory``: peak memory of every method jaxcam shares with a peer,
at batch 32, for jaxcam, pytorch-grad-cam and torch-cam, one fresh process per case.

A case is (model, size, method, library). Its process loads the model (jaxcam through its
torch-free checkpoint reader, never importing torch; a peer builds the PyTorch reference
and loads the same checkpoint), makes the batch, records its resident set (``ready``),
then makes the maps once: for jaxcam the first call of the jit-compiled method, so
tracing and compilation count, as they do for a user. The peak is the process's maximum
resident set (``VmHWM``), so one case's allocations never hide
another's; ``peak - ready`` is what making the maps added. The floor is the plain
forward of the batch in a jaxcam process of its own.

Gradient methods and Smooth Grad-CAM++ run on ResNet-50 at 224 px; the Score-CAM rows on
ResNet-18 at 112 px (a batch of 32 at 224 px is 16,384 masked forwards per library, too
long on 2 cores), Smooth Grad-CAM++ with torch-cam's 4 noisy copies.

Results go to ``benchmarks/memory/memory.json`` (merged: a run of some methods replaces
only their rows) and ``memory.md``; ``--results`` rebuilds RESULTS.md's section.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "memory" / "memory.json"
RESULTS = ROOT / "RESULTS.md"
BEGIN, END = "<!-- memory: python -m benchmarks memory --results -->", "<!-- /memory -->"
BATCH = 32
# (model, size, method spec, options)
CASES = [("resnet50", 224, "forward", ())] + [
    ("resnet50", 224, m, ()) for m in ("grad_cam", "grad_cam_pp", "xgrad_cam", "layer_cam",
                                       "hires_cam", "grad_cam_elementwise", "eigen_cam",
                                       "eigen_grad_cam", "grad_cam_pp:exact")
] + [
    ("resnet50", 224, "smooth_grad_cam_pp:variant=torchcam", (("n_samples", 4),)),
    ("resnet18", 112, "score_cam:variant=pytorch-grad-cam", (("chunk_size", 64),)),
    ("resnet18", 112, "score_cam:variant=torchcam", (("chunk_size", 64),)),
]


def _case(model, size, method, options, batch=BATCH):
    import jaxcam
    from jaxcam.bench import Case

    return Case(model, jaxcam.models.default_layer(model), size, method, batch,
                tuple(options))


def libraries(model, size, method, options, batch=BATCH) -> list[tuple[str, str, dict]]:
    """(library, peer class, its keyword arguments): jaxcam, then every peer whose
    computation is the case's, with the options in its terms."""
    if method == "forward":
        return [("jaxcam", "", {})]
    from jaxcam.bench import case_peers, peer_kwargs

    case = _case(model, size, method, options, batch)
    x, _ = _inputs(batch, size)
    return [("jaxcam", "", {})] + [(p.library, p.cls, peer_kwargs(p, case, x))
                                   for p in case_peers(case)]


def _inputs(batch: int, size: int):
    """The suite's seeded images and classes (as ``jaxcam.bench``'s Setup.inputs)."""
    import numpy as np

    rng = np.random.default_rng(batch)
    x = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    return x, (np.arange(batch) * 7 + 3).astype(np.int32) % 1000


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    """This process's maximum resident set so far, in bytes: ``VmHWM`` of
    /proc/self/status, the high-water mark of this program's memory. (``ru_maxrss``
    would not do: Linux carries the parent's resident set over ``fork`` and ``exec``.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line (Linux only)")


def child(spec: dict) -> dict:
    """One case in this (fresh) process: {"ready": bytes, "seconds": of the maps}."""
    model, size, method, batch = spec["model"], spec["size"], spec["method"], spec["batch"]
    x, classes = _inputs(batch, size)
    if spec["library"] == "jaxcam":
        import jax

        import jaxcam

        split = jaxcam.models.load(model, weights=spec["weights"])
        if method == "forward":
            forward = jax.jit(lambda s, x: s.logits(x))

            def fn():
                return forward(split, x)
        else:
            from jaxcam.bench.suite import jaxcam_call

            fn = jaxcam_call(SimpleNamespace(split=split),
                             _case(model, size, method, spec["options"], batch), x, classes)
        ready = _rss()
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        return {"ready": ready, "seconds": time.perf_counter() - t0, "peak": _peak(),
            "imports": sorted(m for m in ("jax", "torch") if m in sys.modules)}
    import torch

    from benchmarks._standin import torchvision_standin

    calls, reference = _load("peer_calls"), _load("torch_models")  # no jaxcam, no jax
    build, layer_of, torchcam_layer = calls.TORCH_MODELS[model]
    torch.set_num_threads(os.cpu_count() or 1)
    net = build(reference).eval()
    net.load_state_dict(torch.load(spec["weights"], weights_only=True))
    with torchvision_standin():
        fn = calls.call(spec["library"], spec["cls"], spec["kwargs"], net, layer_of(net),
                        torchcam_layer, x, classes)
        ready = _rss()
        t0 = time.perf_counter()
        fn()
    return {"ready": ready, "seconds": time.perf_counter() - t0, "peak": _peak(),
            "imports": sorted(m for m in ("jax", "torch") if m in sys.modules)}


def _load(name: str):
    """A torch-only module of :mod:`jaxcam.bench` by its path, without importing the
    jaxcam package (and so JAX) into a peer's process."""
    path = ROOT.parent / "jaxcam" / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoints(folder: Path, cases) -> dict:
    """The seeded PyTorch reference of each model, saved once for every process."""
    import torch

    from jaxcam.bench import peer_calls
    from jaxcam.bench import torch_models as reference

    paths = {}
    for model in sorted({c[0] for c in cases}):
        net = reference.randomize_(peer_calls.TORCH_MODELS[model][0](reference), seed=0).eval()
        paths[model] = folder / f"{model}.pth"
        torch.save(net.state_dict(), paths[model])
    return paths


def measure(spec: dict) -> dict:
    """Runs one case in a fresh process; its row."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "memory", "--child",
                           json.dumps(spec)], cwd=ROOT.parent, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{spec['library']} {spec['method']} failed:\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    peak = report["peak"]
    return {**{k: spec[k] for k in ("model", "size", "method", "library")},
            "options": dict(spec["options"]), "batch_size": spec["batch"], "peak_bytes": peak,
            "ready_bytes": report["ready"], "maps_s": report["seconds"],
            "imports": report["imports"]}


def _key(row) -> tuple:
    return (row["model"], row["size"], row["method"], row["library"])


def _order(row) -> tuple:
    """Rows in CASES' order, jaxcam before its peers."""
    methods = [c[2] for c in CASES]
    return (methods.index(row["method"]) if row["method"] in methods else len(methods),
            row["library"] != "jaxcam", row["library"])


def markdown(document: dict) -> str:
    env = document["machine"]
    lines = [f"Peak resident set of a fresh process per case, batch {document['batch']}; {env}; "
             f"`{document['command']}`.", "",
             "| model | size | method | library | peak MB | ready MB | maps added MB "
             "| peak / jaxcam's | maps s |", "|---|---|---|---|---|---|---|---|---|"]
    rows = document["rows"]
    mine = {(r["model"], r["method"]): r["peak_bytes"] for r in rows
            if r["library"] == "jaxcam"}
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        ratio = r["peak_bytes"] / mine[(r["model"], r["method"])]
        lines.append(f"| {r['model']} | {r['size']} | {r['method']}"
                     f"{f' ({opts})' if opts else ''} | {r['library']} | "
                     f"{r['peak_bytes'] / 2**20:.0f} | {r['ready_bytes'] / 2**20:.0f} | "
                     f"{(r['peak_bytes'] - r['ready_bytes']) / 2**20:.0f} | {ratio:.2f} | "
                     f"{r['maps_s']:.1f} |")
    return "\n".join(lines) + "\n"


def write_results(document: dict, path: Path = RESULTS) -> None:
    """Replaces (or appends) the memory section of RESULTS.md."""
    from jaxcam.bench.parts import write_atomic

    block = (f"{BEGIN}\n## Peak memory at batch {document['batch']} against the peers "
             f"(`python -m benchmarks memory`)\n\n{__doc__.split(chr(10) * 2)[1]}\n\n"
             f"{markdown(document)}{END}")
    text = path.read_text()
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        text = head + block + rest.partition(END)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_atomic(path, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=None,
                        help="only these method specs (comma-separated), e.g. grad_cam,forward")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--results", action="store_true",
                        help="rebuild RESULTS.md's memory section from --out")
    parser.add_argument("--quick", action="store_true",
                        help="a check of the command: ResNet-18 at 64 px, batch 2")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    out = Path(args.out)
    if args.results:
        write_results(json.loads(out.read_text()))
        print(f"rebuilt {RESULTS} from {out}")
        return 0
    wanted = set(args.methods.split(",")) if args.methods else None
    cases = [c for c in CASES if wanted is None or c[2] in wanted]
    batch = 2 if args.quick else BATCH
    if args.quick:
        cases = [("resnet18", 64, method, options) for _, _, method, options in cases]
    if not cases:
        parser.error(f"no case has a method in {sorted(wanted)}; the cases: "
                     f"{', '.join(c[2] for c in CASES)}")
    from benchmarks._timing import machine
    from jaxcam.bench.parts import write_atomic

    document = (json.loads(out.read_text()) if out.exists()
                else {"rows": [], "machine": machine(), "batch": batch})
    if document["batch"] != batch:
        parser.error(f"{out} holds rows at batch {document['batch']}, not {batch}: pass "
                     "another --out")
    rows = {_key(r): r for r in document["rows"]}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        weights = _checkpoints(Path(tmp), cases)
        for model, size, method, options in cases:
            for library, cls, kwargs in libraries(model, size, method, options, batch):
                row = measure({"model": model, "size": size, "method": method,
                               "options": list(options), "library": library, "batch": batch,
                               "cls": cls, "kwargs": kwargs, "weights": str(weights[model])})
                rows[_key(row)] = row
                print(f"{library} {model} {method}: peak {row['peak_bytes'] / 2**20:.0f} MB "
                      f"(maps added {(row['peak_bytes'] - row['ready_bytes']) / 2**20:.0f} "
                      f"MB, {row['maps_s']:.1f} s)", flush=True)
                document.update(rows=sorted(rows.values(), key=_order),
                                machine=machine(),
                                command="python -m benchmarks memory" + (
                                    f" --methods {args.methods}" if args.methods else ""))
                write_atomic(out, json.dumps(document, indent=2) + "\n")
                write_atomic(out.with_suffix(".md"), markdown(document))
    print(f"{len(cases)} cases in {time.perf_counter() - t0:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
