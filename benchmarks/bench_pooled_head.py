"""What a pooled linear head costs exact Grad-CAM++: the rounded-once logits and the moments.

Run from the repository root:

    python benchmarks/bench_pooled_head.py
    python benchmarks/bench_pooled_head.py --models resnet18 --batches 1,8 --json out.json

For a network split where its head is global average pooling and one linear layer
(ResNet at ``layer4``, EfficientNet-Lite0 at ``_swish``), 224 x 224 inputs, seeded random
weights, every call compiled with ``jit`` and timed to ``block_until_ready`` (medians of
interleaved repeats, compile time apart), in the same process:

* ``map``: exact Grad-CAM++ with ``link="softmax"``, linearised engine, the whole
  pipeline (trunk, derivatives, weights, upsampling);
* ``forward``: the plain forward pass (the floor);
* ``derivatives``: the engine alone on the activations
  (``jaxcam.derivatives.head_derivatives``): W and b read, logits rounded once, moments
  sum_j p_j d_j^k from W;
* ``parts``: reading the head's W and b exactly (``pooled_linear_parts``);
* ``rounded_logits``: the logits rounded once, W and b read included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jaxcam  # noqa: E402
from _timing import emit, machine, measure_many  # noqa: E402

LAYERS = {"resnet18": "layer4", "resnet50": "layer4", "efficientnet_lite0": "_swish"}
D = jaxcam.derivatives


def calls(name: str, batch: int) -> dict:
    split = jaxcam.models.load(name, layer=LAYERS[name], weights="random", seed=0)
    x = jax.random.normal(jax.random.key(0), (batch, 224, 224, 3))
    a = jax.jit(split.activations)(x)
    return {
        "map": (jax.jit(lambda split, x: jaxcam.grad_cam_pp(
            split, x, None, link="softmax", derivatives="exact", engine="linearised")),
            (split, x)),
        "forward": (jax.jit(lambda split, x: split.logits(x)), (split, x)),
        "derivatives": (jax.jit(lambda split, a: D.head_derivatives(
            split, a, link="softmax", engine="linearised")), (split, a)),
        "parts": (jax.jit(D.pooled_linear_parts), (split, a)),
        "rounded_logits": (jax.jit(D.rounded_logits), (split, a)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,efficientnet_lite0")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    rows = {}
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            got = measure_many(calls(name, batch), repeats=args.repeats)
            rows[f"{name} B={batch}"] = {k: round(v["median_s"] * 1e3, 2)
                                         for k, v in got.items()}
    emit({"machine": machine(), "unit": "ms (median)", "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
