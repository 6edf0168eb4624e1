"""Cost of Grad-CAM, Grad-CAM++ and CAM relative to a plain forward pass of the model.

Run from the repository root:

    python benchmarks/bench_grad_cam.py                      # resnet50 @ layer4, 8x224x224
    python benchmarks/bench_grad_cam.py --batch 1 --size 64 --repeats 2 --json out.json

All four programs are timed in the same process with their repeats interleaved. The first
call (trace + compile + run) is reported apart from the steady state (median of
``--repeats`` calls); ``ratio`` is method median / forward median (goal for Grad-CAM:
<= 1.2). The weights are seeded random: timing does not depend on their values. Finally
Grad-CAM is called with a new target to check that changing the class does not recompile.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from _timing import count_compiles, emit, machine, measure_many, time_call


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--layer", default="layer4")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()

    split = jaxcam.models.load(args.model, layer=args.layer, weights="random")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch, args.size, args.size, 3), np.float32))
    n_classes = jax.eval_shape(split.logits, x).shape[-1]
    target = jnp.asarray(rng.integers(0, n_classes, args.batch), jnp.int32)

    forward = jax.jit(lambda split, x: split.logits(x))  # variables are jit arguments
    calls = {"forward": (forward, (split, x)),
             "grad_cam": (jaxcam.grad_cam, (split, x, target)),
             "grad_cam_pp": (jaxcam.grad_cam_pp, (split, x, target))}
    if split.gap_linear_head:
        calls["cam"] = (jaxcam.cam, (split, x, target))
    timings = measure_many(calls, repeats=args.repeats)
    base = timings["forward"]["median_s"]
    for t in timings.values():
        t["ratio"] = t["median_s"] / base

    # Changing the target must reuse the compiled program (classes are traced).
    new_target = (target + 1) % n_classes
    jax.block_until_ready(new_target)
    with count_compiles() as n_compiles:
        new = time_call(jaxcam.grad_cam, split, x, new_target)
    steady = timings["grad_cam"]["median_s"]

    emit({"machine": machine(),
          "config": f"{args.model} @ {args.layer}, x {args.batch}x{args.size}x{args.size}x3 "
                    f"float32, {args.repeats} repeats",
          "timings": timings,
          "grad_cam_new_target_s": new,
          "grad_cam_new_target_vs_median": new / steady,
          "grad_cam_new_target_compiles": n_compiles[0],
          "grad_cam_recompiled_on_new_target": n_compiles[0] > 0,
          "grad_cam_ratio_ok": timings["grad_cam"]["ratio"] <= 1.2},
         args.json)


if __name__ == "__main__":
    main()
