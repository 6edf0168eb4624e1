"""ViT-B/16: the cost of explaining a Vision Transformer split at a block's ln_1.

Run from the repository root:

    python benchmarks/bench_vit.py                 # batch 1 and 4, 224 x 224
    python benchmarks/bench_vit.py --batches 1 --repeats 3

The zoo's ``vit_b_16`` (seeded random weights) is split at
``encoder.layers.encoder_layer_11.ln_1``. That layer is not a cut: the residual around
the last block's attention and the class token bypass it. So the head recomputes the
tokens from x (held fixed) and substitutes A for ln_1's output. The baseline is the
jit-compiled forward pass ``split.logits(x)`` of the same batch in the same process.
Grad-CAM and the closed-form Grad-CAM++ are timed against it, with their repeats
interleaved (``_timing.measure_many``). The first call (trace, compile and run) is
reported apart from the steady-state median.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, measure_many  # noqa: E402

import jaxcam  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    split = jaxcam.models.load("vit_b_16", weights="random")
    split = split.replace(variables=jax.device_put(split.variables))
    print(machine())
    rows = []
    for batch in args.batches:
        x = jax.random.normal(jax.random.key(0), (batch, 224, 224, 3), jnp.float32)
        calls = {
            "forward": (jax.jit(lambda s, x: s.logits(x)), (split, x)),
            "grad_cam": (lambda s, x: jaxcam.grad_cam(s, x), (split, x)),
            "grad_cam_pp (closed form)": (lambda s, x: jaxcam.grad_cam_pp(s, x), (split, x)),
        }
        timings = measure_many(calls, repeats=args.repeats)
        base = timings["forward"]["median_s"]
        for name, t in timings.items():
            rows.append({"batch": batch, "method": name, "compile_s": t["compile_s"],
                         "median_s": t["median_s"], "x_forward": t["median_s"] / base})
            print(f"B={batch:2d} {name:28s} first call {t['compile_s']:7.2f} s   "
                  f"median {t['median_s'] * 1e3:8.1f} ms   {t['median_s'] / base:5.2f} x forward")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
