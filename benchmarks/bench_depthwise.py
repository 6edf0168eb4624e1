"""Depthwise convolution: jaxcam's shifted taps against XLA's grouped convolution.

Run from the repository root:

    python benchmarks/bench_depthwise.py                  # batch 1 and 8, 7 repeats
    python benchmarks/bench_depthwise.py --json dw.json

For every depthwise layer of EfficientNet-Lite0 at 224 x 224 (input shape, kernel,
stride, TF-'SAME' padding), the forward pass and the input gradient (what a CAM takes
through a head holding such layers) are timed for ``jaxcam.models.depthwise``
and for ``lax.conv_general_dilated(..., feature_group_count=C)``, in the same process
with interleaved repeats; the table also gives the sums over the 16 layers. The first
call (trace + compile + run) is reported apart from the steady state.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.models import depthwise
from jaxcam.models.efficientnet_lite import LITE0_STAGES
from _timing import emit, machine, measure_many


def lite0_depthwise_layers(size: int = 224):
    """(spatial size, channels, kernel, stride) of each depthwise layer of Lite0."""
    layers, h, c_in = [], -(-size // 2), 32          # after the stride-2 stem
    for kernel, first_stride, expansion, out, repeats in LITE0_STAGES:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            layers.append((h, c_in * expansion, kernel, stride))
            h, c_in = -(-h // stride), out
    return layers


def grouped(x, k, stride):
    pads = jax.lax.padtype_to_pads(x.shape[1:3], k.shape[:2], (stride, stride), "SAME")
    return jax.lax.conv_general_dilated(x, k, (stride, stride), pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])


def taps(x, k, stride):
    return depthwise(x, k, stride, "SAME")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()

    results = {"machine": machine()}
    rng = np.random.default_rng(0)
    for batch in args.batches:
        calls, shapes = {}, {}
        for i, (h, c, kernel, stride) in enumerate(lite0_depthwise_layers()):
            x = jnp.asarray(rng.standard_normal((batch, h, h, c), np.float32))
            k = jnp.asarray(rng.standard_normal((kernel, kernel, 1, c), np.float32))
            shapes[i] = f"{h}x{h}x{c} k{kernel} s{stride}"
            for name, fn in (("taps", taps), ("grouped", grouped)):
                fwd = jax.jit(fn, static_argnums=2)
                bwd = jax.jit(jax.grad(lambda x, k, s, fn=fn: jnp.sum(fn(x, k, s) ** 2)),
                              static_argnums=2)
                calls[(i, name, "forward")] = (fwd, (x, k, stride))
                calls[(i, name, "gradient")] = (bwd, (x, k, stride))
        timings = measure_many(calls, repeats=args.repeats)
        table = {}
        for i, shape in shapes.items():
            row = {}
            for pass_ in ("forward", "gradient"):
                t, g = (timings[(i, n, pass_)]["median_s"] * 1e3 for n in ("taps", "grouped"))
                row.update({f"{pass_} taps ms": t, f"{pass_} grouped ms": g,
                            f"{pass_} grouped/taps": g / t})
            table[f"{i:2d} {shape}"] = row
        total = {c: sum(r[c] for r in table.values()) for c in next(iter(table.values()))
                 if c.endswith("ms")}
        for pass_ in ("forward", "gradient"):
            total[f"{pass_} grouped/taps"] = (total[f"{pass_} grouped ms"]
                                              / total[f"{pass_} taps ms"])
        table["all 16"] = total
        results[f"batch {batch}"] = table
    emit(results, args.json)


if __name__ == "__main__":
    main()
