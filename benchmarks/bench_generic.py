"""The generic exact engine on a conv head, CPU: series propagation against nested JVPs.

Run from the repository root:

    python benchmarks/bench_generic.py                  # 64x64, old engine on 256 directions
    python benchmarks/bench_generic.py --old-full       # old engine on all directions once,
                                                        # for the maps' agreement (~15 min)
    python benchmarks/bench_generic.py --json generic.json

The case: ResNet-18 split at ``layer3`` with GELU activations (the head is ``layer4`` +
avgpool + fc), a 64x64 input, batch 1, float32: A is 4 x 4 x 256, 4096 directions.
Exact Grad-CAM++ needs the pure derivatives D1..D3 of the softmax score in every
activation: one third-order Taylor expansion of the head along each basis vector.

Timed programs (``variables`` are jit arguments; the first call, trace + compile + run,
is ``compile_s``; the steady state is the median of ``--repeats`` calls):

* ``series``: ``basis_derivatives(head_logits, a, 3, chunk, reduce=softmax_link)``, the
  default propagation (:mod:`jaxcam.derivatives._lowering`), all 4096 directions. The reduce is the
  softmax link written below in closed form (cumulants of the logits' coefficients).
* ``grad_cam_pp``: the public call ``jaxcam.grad_cam_pp(split, x, derivatives="exact",
  engine="generic", link="softmax")``, end to end (trunk, derivatives, map).
* ``nested_jvp``: the previous engine (``propagation="nested_jvp"``: 3 nested ``jax.jvp``
  of the head, ``vmap``-ed) on the first ``--old-directions`` directions, one chunk; its
  directions per second are extrapolated to 4096.
* ``head_x256``: a plain head forward on 256 copies of A: the head's achieved FLOP/s
  (FLOPs from XLA's cost analysis of the compiled program).
* ``matmul``: a float32 ``jnp.dot`` of two 4096 x 4096 matrices: the machine's FLOP/s.

FLOPs of the series engine are XLA's count for one chunk of directions (the compiled
program without the loop), scaled to all directions.

Agreement: D1..D3 of the series engine against the nested-JVP engine on the directions
both computed (max |difference| / max |value| per order, and the largest elementwise
relative difference where |value| > 1e-3 max |value|); with ``--old-full`` the nested-JVP
engine also runs once on every direction and the Grad-CAM++ maps (eq. 10, normalised,
at the feature map's resolution) from the two sets of derivatives are compared, and both
with the map of the public call.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from jaxcam import weighting as W
from jaxcam.chunking import chunked_map
from jaxcam.derivatives import basis_derivatives, directional_derivatives, taylor_along
from _timing import emit, machine, measure_many

ORDER = 3
TRUTH_CHECKED = 16  # directions on which the float64 series engine is checked against
                    # float64 nested JVPs before it serves as the truth


def softmax_link(logits: jax.Array, c) -> callable:
    """reduce: derivatives (3, C) of the logits' curve S(t) -> derivatives (3,) of
    softmax(S(t))_c at t = 0.

    h = log_softmax_c has derivatives h1 = s1_c - E[s1], h2 = s2_c - E[s2] - k2(s1),
    h3 = s3_c - E[s3] - 3 Cov(s1, s2) - k3(s1) (expectations and cumulants under
    p = softmax(S)); softmax_c = p_c exp(h - h(0)) has p_c (h1, h1^2 + h2,
    h1^3 + 3 h1 h2 + h3).
    """
    p = jax.nn.softmax(logits)

    def reduce(coeffs):
        s1, s2, s3 = coeffs
        d1, d2 = s1 - p @ s1, s2 - p @ s2
        h1 = d1[c]
        h2 = d2[c] - p @ (d1 * d1)
        h3 = (s3[c] - p @ s3) - 3.0 * (p @ (d1 * d2)) - p @ (d1 * d1 * d1)
        return p[c] * jnp.stack([h1, h1 * h1 + h2, h1 * h1 * h1 + 3.0 * h1 * h2 + h3])

    return reduce


def make_programs(split, chunk: int, old_directions: int):
    def head(variables):
        return lambda a: split.head(variables, a[None])[0]

    @jax.jit
    def series(variables, a, c):
        logits = head(variables)(a)
        return basis_derivatives(head(variables), a, ORDER, chunk,
                                 reduce=softmax_link(logits, c))

    def nested_on(variables, a, c, n):
        """The nested-JVP engine on the first n directions, chunk at a time."""
        fn, reduce = head(variables), softmax_link(head(variables)(a), c)

        def directions(idx):
            basis = (idx[:, None] == jnp.arange(a.size)[None, :]).astype(a.dtype)
            return jax.vmap(lambda v: reduce(taylor_along(fn, a, v.reshape(a.shape), ORDER))
                            )(basis)

        return chunked_map(directions, n=n, chunk=chunk)  # (n, 3)

    nested = jax.jit(lambda v, a, c: nested_on(v, a, c, old_directions))
    nested_all = jax.jit(lambda v, a, c: nested_on(v, a, c, a.size))
    nested_few = jax.jit(lambda v, a, c: nested_on(v, a, c, TRUTH_CHECKED))

    @jax.jit
    def one_chunk(variables, a, c, basis):
        """The series engine's per-direction work on one chunk, for its FLOP count."""
        reduce = softmax_link(head(variables)(a), c)
        along = directional_derivatives(head(variables), a, ORDER)
        return jax.vmap(lambda v: reduce(along(v)))(basis)

    return series, nested, nested_all, nested_few, one_chunk


def flops(jitted, *args) -> float:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def grad_cam_pp_map(a, d):
    """Grad-CAM++ (paper variant), normalised, at the feature map's resolution."""
    weights = W.grad_cam_pp_weights(a[None], *(dk[None] for dk in d))
    return W.normalize(W.weighted_map(a[None], weights))[0]


def error_vs(truth: np.ndarray, **engines: np.ndarray) -> dict:
    """Per engine and order: max |D - truth| / max |truth| over the engine's directions."""
    out = {}
    for name, d in engines.items():
        t = truth[:len(d)]
        out[name] = {f"D{k + 1}": float(np.abs(d[:, k] - t[:, k]).max() / np.abs(t[:, k]).max())
                     for k in range(ORDER)}
    return out


def agreement(new: np.ndarray, old: np.ndarray) -> dict:
    """new, old: (n, 3). Per order: max |diff| / max |old|, and the largest elementwise
    relative difference over entries with |old| > 1e-3 max |old|."""
    out = {}
    for k in range(ORDER):
        scale = np.abs(old[:, k]).max()
        diff = np.abs(new[:, k] - old[:, k])
        big = np.abs(old[:, k]) > 1e-3 * scale
        out[f"D{k + 1}"] = {"max_diff_over_max": float(diff.max() / scale),
                            "max_rel_diff (|D| > 1e-3 max)":
                                float((diff[big] / np.abs(old[big, k])).max())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=64, help="input size (default 64)")
    p.add_argument("--chunk", type=int, default=256, help="directions per chunk (256)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per program (5)")
    p.add_argument("--old-directions", type=int, default=256,
                   help="directions timed with the nested-JVP engine (default 256)")
    p.add_argument("--old-repeats", type=int, default=2, help="its timed calls (2)")
    p.add_argument("--old-full", action="store_true",
                   help="also run the nested-JVP engine once on every direction and "
                        "compare the maps")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()

    split = jaxcam.models.load("resnet18", layer="layer3", weights="random",
                               activation="gelu")
    x = jax.random.normal(jax.random.key(0), (1, args.size, args.size, 3), jnp.float32)
    a = jax.block_until_ready(split.activations(x)[0])
    variables = split.variables
    c = int(jnp.argmax(split.logits(x)[0]))
    n = a.size
    series, nested, nested_all, nested_few, one_chunk = make_programs(
        split, args.chunk, args.old_directions)

    def public(split, x):
        return jaxcam.grad_cam_pp(split, x, derivatives="exact", engine="generic",
                                  link="softmax", chunk_size=args.chunk, upsample=False)

    head_batch = 256
    tiled = jax.block_until_ready(jnp.broadcast_to(a, (head_batch, *a.shape)) + 0)
    head_fwd = jax.jit(lambda v, a: split.head(v, a))
    big = jax.block_until_ready(jax.random.normal(jax.random.key(1), (4096, 4096)))
    matmul = jax.jit(jnp.dot)

    print("[series, grad_cam_pp, head, matmul] timing ...", flush=True)
    timings = measure_many({"series": (series, (variables, a, c)),
                            "grad_cam_pp": (public, (split, x)),
                            "head_x256": (head_fwd, (variables, tiled)),
                            "matmul": (matmul, (big, big))}, repeats=args.repeats)
    print(f"[nested_jvp] timing on {args.old_directions} directions ...", flush=True)
    timings.update(measure_many({"nested_jvp": (nested, (variables, a, c))},
                                repeats=args.old_repeats))

    basis = jnp.eye(n, dtype=a.dtype)[:args.chunk].reshape(args.chunk, *a.shape)
    flop = {"series": flops(one_chunk, variables, a, c, basis) / args.chunk * n,
            "head_x256": flops(head_fwd, variables, tiled),
            "matmul": 2.0 * 4096**3}
    head_flops = flop["head_x256"] / head_batch
    for name, row in timings.items():
        if name in flop:
            row["flops"] = flop[name]
            row["gflop_per_s"] = flop[name] / row["median_s"] / 1e9
    timings["series"]["directions_per_s"] = n / timings["series"]["median_s"]
    timings["nested_jvp"]["directions_per_s"] = args.old_directions / timings["nested_jvp"][
        "median_s"]
    timings["head_x256"]["evals_per_s"] = head_batch / timings["head_x256"]["median_s"]
    old_all_s = n / timings["nested_jvp"]["directions_per_s"]

    d_new = series(variables, a, c)
    new = np.stack([np.asarray(dk).reshape(-1) for dk in d_new], axis=1)
    old = np.asarray(nested(variables, a, c))
    results = {
        "machine": machine(),
        "config": f"resnet18 @ layer3, GELU head (layer4 + avgpool + fc), {args.size}x"
                  f"{args.size}, batch 1, float32, A {'x'.join(map(str, a.shape))} = {n} "
                  f"directions, order 3, chunk {args.chunk}, link softmax (class {c}), "
                  f"{args.repeats} repeats ({args.old_repeats} for nested_jvp on "
                  f"{args.old_directions} directions)",
        "timings": {name: {k: v for k, v in row.items() if k != "times"}
                    for name, row in timings.items()},
        "head_flops_per_eval": head_flops,
        "series_flops_per_direction": flop["series"] / n,
        "series_total_s (compile + run)": timings["series"]["compile_s"],
        "grad_cam_pp_first_call_s": timings["grad_cam_pp"]["compile_s"],
        "target_ok (first public call < 60 s)": timings["grad_cam_pp"]["compile_s"] < 60.0,
        "nested_jvp_all_directions_s (extrapolated)": old_all_s,
        "speedup_steady (nested_jvp all / series)": old_all_s / timings["series"]["median_s"],
        "series_gflop_per_s / matmul": timings["series"]["gflop_per_s"]
                                       / timings["matmul"]["gflop_per_s"],
        "head_x256_gflop_per_s / matmul": timings["head_x256"]["gflop_per_s"]
                                          / timings["matmul"]["gflop_per_s"],
        f"agreement on {args.old_directions} directions (series vs nested_jvp)":
            agreement(new[:args.old_directions], old),
    }
    if args.old_full:
        print("[nested_jvp] all directions once ...", flush=True)
        t0 = time.perf_counter()
        old_all = np.asarray(jax.block_until_ready(nested_all(variables, a, c)))
        results["nested_jvp_all_directions_s (measured, incl. compile)"] = (
            time.perf_counter() - t0)
        results["agreement on all directions (series vs nested_jvp)"] = agreement(new, old_all)
        d_old = tuple(jnp.asarray(old_all[:, k].reshape(a.shape)) for k in range(ORDER))
        map_new, map_old = grad_cam_pp_map(a, d_new), grad_cam_pp_map(a, d_old)
        map_public = np.asarray(public(split, x)[0])
        results["maps: max |series - nested_jvp| (normalised maps)"] = float(
            jnp.abs(map_new - map_old).max())
        results["maps: max |public grad_cam_pp - nested_jvp|"] = float(
            np.abs(map_public - np.asarray(map_old)).max())
        results["maps: max |public grad_cam_pp - series|"] = float(
            np.abs(map_public - np.asarray(map_new)).max())
    # float64 truth: the series engine in float64 (itself checked against float64 nested
    # JVPs on a few directions), to see which float32 engine rounds less
    print("[float64 truth] ...", flush=True)
    with jax.enable_x64(True):
        split64, a64 = split.astype(jnp.float64), a.astype(jnp.float64)
        d64 = series(split64.variables, a64, c)
        truth = np.stack([np.asarray(dk).reshape(-1) for dk in d64], axis=1)
        few = np.asarray(nested_few(split64.variables, a64, c))
        results["float64: series vs nested_jvp on 16 directions (max diff / max)"] = max(
            float(np.abs(truth[:TRUTH_CHECKED, k] - few[:, k]).max()
                  / np.abs(few[:, k]).max()) for k in range(ORDER))
        engines = {"series float32": new, "nested_jvp float32": old}
        if args.old_full:
            engines["nested_jvp float32 (all)"] = old_all
        results["float32 error vs float64 (max |D - D64| / max |D64|)"] = error_vs(
            truth, **engines)
        if args.old_full:
            map64 = np.asarray(grad_cam_pp_map(a64, d64))
            results["maps vs float64: max |series - map64|"] = float(
                np.abs(np.asarray(map_new) - map64).max())
            results["maps vs float64: max |nested_jvp - map64|"] = float(
                np.abs(np.asarray(map_old) - map64).max())
            results["maps vs float64: max |public grad_cam_pp - map64|"] = float(
                np.abs(map_public - map64).max())
    print()
    emit(results, args.json)


if __name__ == "__main__":
    main()
