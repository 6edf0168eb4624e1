"""Cost of exact Grad-CAM++ derivatives and of Smooth Grad-CAM++, on CPU.

Run from the repository root:

    python benchmarks/bench_exact.py                    # full sizes: 224x224, batch 1 and 8
    python benchmarks/bench_exact.py --quick            # smoke run: 64x64, batch 1 and 2
    python benchmarks/bench_exact.py --only vgg16 --json vgg.json

Four sections (``--only`` runs one of them), all in one process; within a section the
repeats of every timed program are interleaved (``_timing.measure_many``). The first call
(trace + compile + run) is reported as ``compile_s``, apart from the steady state
(``median_s`` of ``--repeats`` calls). Weights are seeded random: timing does not depend
on their values.

* ``resnet50`` (split at ``layer4``): exact Grad-CAM++ with the softmax link (linearised
  engine) against the closed form, batch 1 and 8; goal exact / approx <= 2.0. The plain
  forward pass is timed for reference.
* ``vgg16`` (split at ``features.29``; head = max-pool + three dense layers, so the
  1000-row logit Jacobian costs about 8 VGG16 forwards per image): the same ratio (goal
  <= 10 on CPU), and where the time goes: forward, features, the exact derivatives alone
  (Jacobian moments, on precomputed activations), the closed-form derivatives alone, each
  as a fraction of the exact total. Batch 8 uses ``--slow-repeats`` repeats.
* ``generic``: throughput of the generic engine (one nested-JVP Taylor expansion per
  activation) in directions per second, on ResNet-18 split at ``layer4.0`` with a GELU
  head (2x2x512 = 2048 directions per image at 64x64), chunk sizes 64 and 256, batch 1,
  link "exp". If a call at 64x64 takes over 60 s, the section falls back to 32x32
  (1x1x512 = 512 directions) and says so. A plain head forward on a batch of 256 copies
  of A is timed for reference (cost per direction of an ordinary evaluation).
* ``smooth``: Smooth Grad-CAM++ with n = 25 noisy copies (closed form; default
  ``chunk_size`` and ``chunk_size=25``) against a Python loop of 25 blocked
  ``grad_cam_pp`` calls on the same kind of noisy copies made beforehand, batch 1, on
  ResNet-50 ``layer4`` and on EfficientNet-Lite0 at its default layer; goal smooth /
  loop <= 0.8. Both heads are avgpool + fc, so their derivatives do not depend on the
  noise; what is measured is the cost of the trunk forwards, which is what matters. When
  the process has several devices (on a CPU host: ``XLA_FLAGS=
  --xla_force_host_platform_device_count=2``), rows with ``devices=jax.devices()`` are
  added: the copies split across the devices; the loop runs on the default device.

``--quick`` shrinks everything for a smoke run: 64x64 inputs, batch 1 and 2, 2 repeats,
and the generic section at 32x32.
"""

from __future__ import annotations

import argparse
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from jaxcam.chunking import chunk_size
from jaxcam.derivatives import head_derivatives
from _timing import emit, machine, measure_many, time_call

SECTIONS = ("resnet50", "vgg16", "generic", "smooth")
GENERIC_LIMIT_S = 60.0   # a generic-engine call slower than this at 64x64 -> use 32x32
GENERIC_CHUNKS = (64, 256)


def _inputs(split, batch: int, size: int, seed: int = 0):
    """Random images (B, S, S, 3) and random target classes (B,)."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, size, size, 3), np.float32))
    n_classes = jax.eval_shape(split.logits, x).shape[-1]
    t = jnp.asarray(rng.integers(0, n_classes, batch), jnp.int32)
    return jax.block_until_ready((x, t))


def _forward():
    return jax.jit(lambda split, x: split.logits(x))  # variables are jit arguments


def _rows(timings: dict, prefix: str) -> dict:
    return {f"{prefix}/{name}": row for name, row in timings.items()}


# --- 1. resnet50: exact (linearised, softmax link) vs closed form

def bench_resnet50(args) -> dict:
    split = jaxcam.models.load("resnet50", layer="layer4", weights="random")
    exact = functools.partial(jaxcam.grad_cam_pp, link="softmax", derivatives="exact")
    approx = functools.partial(jaxcam.grad_cam_pp, link="softmax")
    forward = _forward()
    calls = {}
    for b in args.batches:
        x, t = _inputs(split, b, args.size)
        calls[f"b{b}/forward"] = (forward, (split, x))
        calls[f"b{b}/approx"] = (approx, (split, x, t))
        calls[f"b{b}/exact"] = (exact, (split, x, t))
    timings = measure_many(calls, repeats=args.repeats)
    out = {"resnet50_config": f"resnet50 @ layer4, {args.size}x{args.size}, link softmax, "
                              f"batches {list(args.batches)}, {args.repeats} repeats",
           "resnet50": timings}
    for b in args.batches:
        base = timings[f"b{b}/forward"]["median_s"]
        for kind in ("forward", "approx", "exact"):
            timings[f"b{b}/{kind}"]["vs_forward"] = timings[f"b{b}/{kind}"]["median_s"] / base
        ratio = timings[f"b{b}/exact"]["median_s"] / timings[f"b{b}/approx"]["median_s"]
        out[f"resnet50_b{b}_exact_over_approx"] = ratio
        out[f"resnet50_b{b}_ratio_ok (<= 2.0)"] = ratio <= 2.0
    return out


# --- 2. vgg16: the same ratio, and where the exact time goes

def bench_vgg16(args) -> dict:
    split = jaxcam.models.load("vgg16", layer="features.29", weights="random")
    exact = functools.partial(jaxcam.grad_cam_pp, link="softmax", derivatives="exact")
    approx = functools.partial(jaxcam.grad_cam_pp, link="softmax")
    forward = _forward()
    features = jax.jit(lambda split, x: split.activations(x))
    out = {"vgg16_config": f"vgg16 @ features.29, {args.size}x{args.size}, link softmax, "
                           f"batches {list(args.batches)}, {args.repeats} repeats "
                           f"({args.slow_repeats} at batch > 1)"}
    table = {}
    for b in args.batches:
        x, t = _inputs(split, b, args.size)
        classes = t

        @jax.jit
        def derivs_exact(split, a, classes):
            return head_derivatives(split, a, classes, link="softmax", derivatives="exact",
                                    engine="linearised")

        @jax.jit
        def derivs_approx(split, a, classes):
            return head_derivatives(split, a, classes, link="softmax", derivatives="approx")

        a = jax.block_until_ready(features(split, x))
        calls = {"forward": (forward, (split, x)),
                 "features": (features, (split, x)),
                 "derivs_exact": (derivs_exact, (split, a, classes)),
                 "derivs_approx": (derivs_approx, (split, a, classes)),
                 "approx": (approx, (split, x, t)),
                 "exact": (exact, (split, x, t))}
        repeats = args.repeats if b == 1 else args.slow_repeats
        timings = measure_many(calls, repeats=repeats)
        total = timings["exact"]["median_s"]
        for row in timings.values():
            row["frac_of_exact"] = row["median_s"] / total
        rest = total - timings["features"]["median_s"] - timings["derivs_exact"]["median_s"]
        timings["rest (exact - features - derivs_exact)"] = {
            "median_s": rest, "frac_of_exact": rest / total}
        table.update(_rows(timings, f"b{b}"))
        ratio = total / timings["approx"]["median_s"]
        out[f"vgg16_b{b}_exact_over_approx"] = ratio
        out[f"vgg16_b{b}_ratio_ok (<= 10)"] = ratio <= 10.0
        out[f"vgg16_b{b}_exact_over_forward"] = total / timings["forward"]["median_s"]
        out[f"vgg16_b{b}_activations"] = "x".join(map(str, a.shape))
    out["vgg16"] = table
    return out


# --- 3. generic engine: directions per second on a smooth (GELU) head

def _generic_calls(size: int):
    split = jaxcam.models.load("resnet18", layer="layer4.0", weights="random",
                               activation="gelu")
    x, t = _inputs(split, 1, size)
    calls = {f"chunk_{c}": (functools.partial(jaxcam.grad_cam_pp, link="exp",
                                              derivatives="exact", engine="generic",
                                              chunk_size=c), (split, x, t))
             for c in GENERIC_CHUNKS}
    a = jax.block_until_ready(split.activations(x))
    return split, a, calls


def bench_generic(args) -> dict:
    sizes = [args.generic_size] if args.generic_size else [64, 32]
    notes = []
    for size in sizes:
        split, a, calls = _generic_calls(size)
        # First calls one by one (trace + compile + run), to bail out of a too-slow size.
        first = {name: time_call(fn, *fargs) for name, (fn, fargs) in calls.items()}
        if size != sizes[-1] and max(first.values()) > GENERIC_LIMIT_S:
            slowest = max(first, key=first.get)
            again = time_call(calls[slowest][0], *calls[slowest][1])
            if again > GENERIC_LIMIT_S:
                notes.append(f"{size}x{size}: {slowest} took {again:.1f} s a call "
                             f"(> {GENERIC_LIMIT_S:.0f} s); fell back to a smaller input")
                continue
        break
    n_directions = a.size  # batch 1: one direction per activation element
    head_batch = max(GENERIC_CHUNKS)
    tiled = jax.block_until_ready(jnp.broadcast_to(a, (head_batch, *a.shape[1:])) + 0)
    calls["head_forward_x256"] = (jax.jit(lambda split, a: split.logits_from(a)),
                                  (split, tiled))
    timings = measure_many(calls, repeats=args.slow_repeats)
    for name, row in timings.items():
        if name in first:  # measure_many's first call was already steady: report ours
            row["first_call_s"], row["compile_s"] = row["compile_s"], first[name]
            row["directions"] = n_directions
            row["directions_per_s"] = n_directions / row["median_s"]
        else:
            row["directions"] = head_batch
            row["directions_per_s"] = head_batch / row["median_s"]
    plain = timings["head_forward_x256"]["median_s"] / head_batch
    for name in first:
        per_dir = timings[name]["median_s"] / n_directions
        timings[name]["vs_plain_head"] = per_dir / plain
    out = {"generic_config": f"resnet18 @ layer4.0, GELU head, {size}x{size}, batch 1, "
                             f"A {'x'.join(map(str, a.shape))} = {n_directions} directions, "
                             f"link exp, {args.slow_repeats} repeats",
           "generic": timings}
    if notes:
        out["generic_fallback"] = "; ".join(notes)
    return out


# --- 4. Smooth Grad-CAM++ (n = 25) vs a loop of 25 Grad-CAM++ calls

SMOOTH_MODELS = (("resnet50", "layer4"), ("efficientnet_lite0", None))


def _bench_smooth_model(args, name: str, layer) -> dict:
    n = args.samples
    split = jaxcam.models.load(name, layer=layer, weights="random")
    x, t = _inputs(split, 1, args.size)
    key = jax.random.key(0)
    # The same noise model as smooth_grad_cam_pp: sigma = 0.15 * (max - min) per image.
    span = jnp.max(x, axis=(1, 2, 3), keepdims=True) - jnp.min(x, axis=(1, 2, 3), keepdims=True)
    noisy = [x + 0.15 * span * jax.random.normal(k, x.shape, x.dtype)
             for k in jax.random.split(jax.random.key(1), n)]
    noisy = jax.block_until_ready(noisy)

    def loop(split, noisy, t):
        for xi in noisy:
            jax.block_until_ready(jaxcam.grad_cam_pp(split, xi, t))

    def smooth(**options):
        return (functools.partial(jaxcam.smooth_grad_cam_pp, key=key, n_samples=n, **options),
                (split, x, t))

    devices = jax.devices()
    chunks = {f"smooth (default chunk_size={chunk_size(n, None, 1)})":
                  (smooth(), chunk_size(n, None, 1)),
              f"smooth (chunk_size={n})": (smooth(chunk_size=n), chunk_size(n, n, 1))}
    if len(devices) > 1:
        d = len(devices)
        for chunk in (None, n):
            c = chunk_size(n, chunk, d)
            chunks[f"smooth on {d} devices (chunk_size={c})"] = (
                smooth(chunk_size=chunk, devices=devices), c)
    calls = {row: call for row, (call, _) in chunks.items()}
    calls[f"loop of {n} grad_cam_pp"] = (loop, (split, noisy, t))
    calls["one grad_cam_pp"] = (jaxcam.grad_cam_pp, (split, x, t))
    timings = measure_many(calls, repeats=args.repeats)
    loop_s = timings[f"loop of {n} grad_cam_pp"]["median_s"]
    for row in timings.values():
        row["vs_loop"] = row["median_s"] / loop_s
    out = {}
    for row, (_, chunk) in chunks.items():
        # the clean image and the n copies, padded to whole chunks
        timings[row]["images_computed"] = math.ceil((n + 1) / chunk) * chunk
        out[f"{name}: {row} / loop"] = timings[row]["vs_loop"]
        out[f"{name}: {row} ratio_ok (<= 0.8)"] = timings[row]["vs_loop"] <= 0.8
    out[f"smooth {name}"] = timings
    return out


def bench_smooth(args) -> dict:
    out = {"smooth_config": f"{args.size}x{args.size}, batch 1, n_samples {args.samples}, "
                            f"closed form, link exp, {args.repeats} repeats; "
                            f"{len(jax.devices())} device(s): {jax.devices()}"}
    for name, layer in SMOOTH_MODELS:
        out.update(_bench_smooth_model(args, name, layer))
    return out


BENCHES = {"resnet50": bench_resnet50, "vgg16": bench_vgg16, "generic": bench_generic,
           "smooth": bench_smooth}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 64x64, batch 1 and 2, 2 repeats, generic at 32x32")
    p.add_argument("--only", choices=SECTIONS, help="run one section")
    p.add_argument("--size", type=int, help="input size (default 224; 64 with --quick)")
    p.add_argument("--batches", type=int, nargs="+",
                   help="batch sizes of the resnet50 and vgg16 sections (default 1 8; "
                        "1 2 with --quick)")
    p.add_argument("--repeats", type=int, help="timed calls per program (default 7; 2)")
    p.add_argument("--slow-repeats", type=int,
                   help="repeats for VGG16 at batch > 1 and the generic engine (default 3; 2)")
    p.add_argument("--generic-size", type=int,
                   help="input size of the generic section (default 64, falling back to "
                        "32 if a call takes > 60 s; 32 with --quick)")
    p.add_argument("--samples", type=int, default=25, help="Smooth Grad-CAM++ copies")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()
    quick = args.quick
    args.size = args.size or (64 if quick else 224)
    args.batches = tuple(args.batches or ((1, 2) if quick else (1, 8)))
    args.repeats = args.repeats or (2 if quick else 7)
    args.slow_repeats = args.slow_repeats or (2 if quick else 3)
    args.generic_size = args.generic_size or (32 if quick else None)

    results = {"machine": machine(),
               "mode": "quick (smoke run, not for reporting)" if quick else "full"}
    for name in [args.only] if args.only else SECTIONS:
        print(f"[{name}] running ...", flush=True)
        results.update(BENCHES[name](args))
    print()
    emit(results, args.json)


if __name__ == "__main__":
    main()
