"""Ablation-CAM: jaxcam (head-only ablations) versus its forward pass and pytorch-grad-cam.

Run from the repository root:

    python benchmarks/bench_ablation_cam.py                  # ResNet-50 @ layer4, 224 x 224
    python benchmarks/bench_ablation_cam.py --size 96 --pgc-images 1 --repeats 2   # quick
    python benchmarks/bench_ablation_cam.py --batches 1 --pgc-repeats 1 --json ablation.json

ResNet-50 split at ``layer4`` has K = 2048 feature maps. jaxcam's ``ablation_cam`` runs the
network once up to ``layer4`` and then evaluates the 2048 ablated copies of A through the
HEAD alone (global average pool + linear), ``chunk_size`` copies at a time; so it
should cost a small multiple of one forward pass. The baseline is jaxcam's own
jit-compiled forward pass ``split.logits(x)`` on the same batch, with Grad-CAM for
context; all jaxcam programs of one batch size are timed in the same process with their
repeats interleaved (``_timing.measure_many``). The first call (trace + compile + run) is
reported apart as ``compile_s``; ``first_minus_median_s`` is that minus the steady state.

pytorch-grad-cam 1.5.7's ``AblationCAM`` (target layer ``model.layer4[-1]``,
``ClassifierOutputTarget(c)``) runs, per image, 2048 / ``batch_size`` batches through the
whole network (its ablation layer replaces only ``layer4[-1]``; everything before it is
recomputed for every batch of ablated copies). It is timed with ``time.perf_counter`` on
``--pgc-images`` images, ``--pgc-repeats`` times (few: on the 2-core CPU of RESULTS.md one
call on one 224 x 224 image took 361-391 s when the machine was otherwise idle, 689-1147 s
when it was shared; the whole default run took 14 to 34 minutes). Both libraries get the
same weights (the PyTorch reference ResNet-50 of ``jaxcam.bench.torch_models``, randomized
with seed 0, saved with ``torch.save`` and loaded into jaxcam with
``jaxcam.models.load``), the same inputs and the same target classes
(each image's top-1 class), and the same number of threads (``torch.set_num_threads``;
XLA's CPU backend uses every core).

Agreement: pytorch-grad-cam's raw maps ReLU(sum_k w_k A^k), caught by a spy on
``pytorch_grad_cam.base_cam.scale_cam_image``'s first argument (as
``tests/test_oracle_pytorch_grad_cam.py`` does), against jaxcam's
``upsample=False, normalize=False`` maps: Pearson correlation and max |difference| / max
|map|, so that the two timings are of the same computation.

Memory: the compiled program's temporary bytes (XLA's memory analysis) for a few
``chunk_size`` values, with the plain forward's for reference.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jaxcam  # noqa: E402
from jaxcam.bench.peer_calls import patched  # noqa: E402
from _standin import torchvision_standin  # noqa: E402
from _timing import emit, machine, measure_many  # noqa: E402


def import_pgc():
    """``pytorch_grad_cam``, imported with the test-only torchvision stand-in when the real
    torchvision is missing (as the ``pgc`` fixture of the oracle test does)."""
    with torchvision_standin() as standin:
        pgc = importlib.import_module("pytorch_grad_cam")
        importlib.import_module("pytorch_grad_cam.ablation_cam")
        importlib.import_module("pytorch_grad_cam.utils.model_targets")
    return pgc, standin


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def agreement(got: np.ndarray, ref: np.ndarray) -> dict:
    """Pearson correlation (all pixels, and the worst image) and max |got - ref| / max |ref|."""
    per_image = [float(np.corrcoef(g.ravel(), r.ravel())[0, 1]) for g, r in zip(got, ref)]
    return {"corr": float(np.corrcoef(got.ravel(), ref.ravel())[0, 1]),
            "corr_min_per_image": min(per_image),
            "max_abs_diff_over_max": float(np.abs(got - ref).max() / np.abs(ref).max()),
            "ref_max": float(np.abs(ref).max()),
            "positive_fraction": float((ref > 0).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8],
                   help="batch sizes of the jaxcam timings")
    p.add_argument("--chunk", type=int, default=32, help="chunk_size of the timed runs")
    p.add_argument("--chunks", type=int, nargs="+", default=[256, 32, 8],
                   help="chunk_size values of the memory table")
    p.add_argument("--repeats", type=int, default=7, help="jaxcam repeats (after 1 warm-up)")
    p.add_argument("--pgc-images", type=int, default=1,
                   help="images given to pytorch-grad-cam's AblationCAM (the first of x)")
    p.add_argument("--pgc-repeats", type=int, default=2, help="AblationCAM calls timed")
    p.add_argument("--pgc-batch-size", type=int, default=32,
                   help="AblationCAM's batch_size (ablated copies per forward)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch.set_num_threads (XLA uses all cores)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()

    import torch

    from jaxcam.bench import torch_models as torch_reference

    torch.set_num_threads(args.threads)
    load_start = load_avg()
    pgc, standin = import_pgc()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    # Same weights in both libraries; the conversion cache in a temporary folder.
    tmp = tempfile.TemporaryDirectory(prefix="bench_ablation_")
    os.environ["JAXCAM_CACHE"] = str(Path(tmp.name) / "jaxcam-cache")
    model = torch_reference.randomize_(torch_reference.resnet(50), seed=0)
    model.requires_grad_(False)
    path = Path(tmp.name) / "resnet50.pth"
    torch.save(model.state_dict(), path)
    split = jaxcam.models.load("resnet50", layer="layer4", weights=path)
    split = split.replace(variables=jax.device_put(split.variables))

    n_max = max(max(args.batches), args.pgc_images)
    rng = np.random.default_rng(0)
    x_all = rng.standard_normal((n_max, args.size, args.size, 3)).astype(np.float32)
    forward = jax.jit(lambda split, x: split.logits(x))   # variables are jit arguments
    top1 = jax.jit(lambda split, x: jnp.argmax(split.logits(x), -1))  # not `forward`'s cache
    classes_all = np.asarray(top1(split, jnp.asarray(x_all))).astype(np.int32)
    a_shape = jax.eval_shape(split.activations, jnp.asarray(x_all[:1])).shape
    k = a_shape[-1]

    def ablation(split, x, t):
        return jaxcam.ablation_cam(split, x, t, chunk_size=args.chunk)

    # --- jaxcam: forward, Ablation-CAM, Grad-CAM, per batch size -----------------------
    timings = {}
    for b in args.batches:
        x = jnp.asarray(x_all[:b])
        t = jnp.asarray(classes_all[:b])
        names = {"forward": f"B={b} forward (jit split.logits)",
                 "ablation": f"B={b} ablation_cam (chunk {args.chunk})",
                 "grad_cam": f"B={b} grad_cam"}
        res = measure_many({names["forward"]: (forward, (split, x)),
                            names["ablation"]: (ablation, (split, x, t)),
                            names["grad_cam"]: (jaxcam.grad_cam, (split, x, t))},
                           repeats=args.repeats)
        base = res[names["forward"]]["median_s"]
        for r in res.values():
            r.update(min_s=min(r["times"]), max_s=max(r["times"]),
                     first_minus_median_s=r["compile_s"] - r["median_s"],
                     per_image_s=r["median_s"] / b, vs_forward=r["median_s"] / base)
        timings.update(res)
    load_after_jaxcam = load_avg()

    # --- memory per chunk_size (and compile time of each, lower + compile) ----------
    memory = {}
    for b in args.batches:
        x = jnp.asarray(x_all[:b])
        t = jnp.asarray(classes_all[:b])
        t0 = time.perf_counter()
        compiled = jax.jit(forward).lower(split, x).compile()
        memory[f"B={b} forward"] = {
            "temp_MB": compiled.memory_analysis().temp_size_in_bytes / 2**20,
            "compile_s": time.perf_counter() - t0}
        for chunk in args.chunks:
            t0 = time.perf_counter()
            compiled = jax.jit(lambda split, x, t, c=chunk: jaxcam.ablation_cam(
                split, x, t, chunk_size=c)).lower(split, x, t).compile()
            memory[f"B={b} chunk_size={chunk}"] = {
                "temp_MB": compiled.memory_analysis().temp_size_in_bytes / 2**20,
                "compile_s": time.perf_counter() - t0,
                "chunk_copies_of_A_MB": chunk * b * int(np.prod(a_shape[1:])) * 4 / 2**20}

    # --- pytorch-grad-cam's AblationCAM on the same weights, inputs, classes ------------
    n = args.pgc_images
    xp = x_all[:n]
    targets = [ClassifierOutputTarget(int(c)) for c in classes_all[:n]]
    inputs = torch.from_numpy(np.ascontiguousarray(xp.transpose(0, 3, 1, 2)))
    real = pgc.base_cam.scale_cam_image
    raw = []

    def spy(cam, target_size=None):
        if target_size is not None:            # the call in compute_cam_per_layer
            raw.append(np.array(cam, np.float32))
        return real(cam, target_size)

    pgc_times = []
    with patched(pgc.base_cam, "scale_cam_image", spy), \
            patched(pgc.ablation_cam.tqdm, "tqdm", lambda it, **kw: it):   # quiet
        for _ in range(args.pgc_repeats):
            with pgc.AblationCAM(model=model, target_layers=[model.layer4[-1]],
                                 batch_size=args.pgc_batch_size) as cam:
                t0 = time.perf_counter()
                cam(input_tensor=inputs, targets=targets)
                pgc_times.append(time.perf_counter() - t0)
    load_after_pgc = load_avg()
    pgc_row = {"images": n, "calls": len(pgc_times),
               "median_s": statistics.median(pgc_times), "min_s": min(pgc_times),
               "max_s": max(pgc_times), "per_image_s": statistics.median(pgc_times) / n,
               "forwards_per_image": -(-k // args.pgc_batch_size), "times": pgc_times}

    # --- agreement of the raw maps ------------------------------------------------------
    got = np.asarray(jaxcam.ablation_cam(split, jnp.asarray(xp), jnp.asarray(classes_all[:n]),
                                         chunk_size=args.chunk, upsample=False,
                                         normalize=False))
    ref = raw[0]
    assert got.shape == ref.shape, (got.shape, ref.shape)
    agree = agreement(got, ref)
    a_min = float(jnp.min(split.activations(jnp.asarray(xp))))

    # --- summary ------------------------------------------------------------------------
    summary = {}
    for b in args.batches:
        fwd = timings[f"B={b} forward (jit split.logits)"]
        abl = timings[f"B={b} ablation_cam (chunk {args.chunk})"]
        gc = timings[f"B={b} grad_cam"]
        summary[f"B={b}"] = {
            "forward_s": fwd["median_s"], "ablation_s": abl["median_s"],
            "ablation_vs_forward": abl["median_s"] / fwd["median_s"],
            "grad_cam_s": gc["median_s"],
            "ablation_first_minus_median_s": abl["first_minus_median_s"],
            "ablation_per_image_s": abl["per_image_s"],
            "pgc_per_image_s": pgc_row["per_image_s"],
            "speedup_per_image": pgc_row["per_image_s"] / abl["per_image_s"]}

    emit({"machine": machine(),
          "versions": f"jax {jax.__version__}, jaxlib {importlib.metadata.version('jaxlib')}, "
                      f"torch {torch.__version__}, grad-cam "
                      f"{importlib.metadata.version('grad-cam')}, numpy {np.__version__}"
                      + (" (torchvision stand-in)" if standin else ""),
          "threads": f"os.cpu_count()={os.cpu_count()}, torch.get_num_threads()="
                     f"{torch.get_num_threads()}, XLA: all cores",
          "config": f"resnet50 @ layer4 (A {a_shape[1]}x{a_shape[2]}x{k}), "
                    f"{args.size}x{args.size} input, float32, chunk_size={args.chunk}, "
                    f"{args.repeats} jaxcam repeats; AblationCAM batch_size="
                    f"{args.pgc_batch_size}, {n} image(s), {args.pgc_repeats} call(s); "
                    f"targets = top-1 classes {classes_all[:max(n, max(args.batches))].tolist()}",
          "load_avg_1_5_15": f"start {load_start}; after jaxcam {load_after_jaxcam}; "
                             f"after pytorch-grad-cam {load_after_pgc}",
          "timings": timings,
          "pytorch_grad_cam": {"AblationCAM": pgc_row},
          "agreement": {f"raw maps, {n} image(s)": agree},
          "activations_min": a_min,
          "memory": memory,
          "summary": summary}, args.json)
    tmp.cleanup()


if __name__ == "__main__":
    main()
