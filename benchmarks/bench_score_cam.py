"""Score-CAM versus the plain batched forward pass it is made of, and its memory per chunk_size.

    python benchmarks/bench_score_cam.py                     # ResNet-18, 224 x 224, 512 masks
    python benchmarks/bench_score_cam.py --repeats 5 --json score_cam.json

Score-CAM on one image runs K = 512 masked copies through the whole network (ResNet-18's
layer4 has 512 channels), ``chunk_size`` at a time. Its floor is the same 512 images
through the jit-compiled forward pass in the same process (one batch of ``chunk_size``
after another, and as one batch of 512). Memory: the compiled program's temporary bytes
(XLA's memory analysis) for each ``chunk_size``: it must shrink with the chunk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jaxcam  # noqa: E402
from _timing import emit, machine, measure_many  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--chunk", type=int, default=32, help="chunk_size of the timed runs")
    p.add_argument("--chunks", type=int, nargs="+", default=[64, 32, 16, 8, 4],
                   help="chunk_size values of the memory table")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()

    split = jaxcam.models.load("resnet18", layer="layer4", weights="random")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, args.size, args.size, 3), np.float32))
    k = jax.eval_shape(split.activations, x).shape[-1]
    masked = jnp.asarray(rng.standard_normal((k, args.size, args.size, 3), np.float32))
    forward = jax.jit(lambda split, x: split.logits(x))

    @jax.jit
    def forward_chunked(split, xs):  # the same images, chunk_size at a time
        steps = xs.reshape(-1, args.chunk, *xs.shape[1:])
        return jax.lax.map(lambda b: split.logits(b), steps)

    def score_cam(split, x):
        return jaxcam.score_cam(split, x, 1, variant="pytorch-grad-cam", chunk_size=args.chunk)

    timings = measure_many({
        f"forward, {k} images in chunks of {args.chunk}": (forward_chunked, (split, masked)),
        f"forward, {k} images in one batch": (forward, (split, masked)),
        f"score_cam ({k} masks, chunk_size={args.chunk})": (score_cam, (split, x)),
    }, repeats=args.repeats)
    base = timings[f"forward, {k} images in chunks of {args.chunk}"]["median_s"]
    for t in timings.values():
        t["vs_chunked_forward"] = t["median_s"] / base

    memory = {}
    for chunk in args.chunks:
        lowered = jax.jit(lambda split, x, c=chunk: jaxcam.score_cam(
            split, x, 1, variant="pytorch-grad-cam", chunk_size=c)).lower(split, x)
        memory[f"chunk_size={chunk}"] = {
            "temp_MB": lowered.compile().memory_analysis().temp_size_in_bytes / 2**20}

    emit({"machine": machine(),
          "config": f"resnet18 @ layer4 ({k} channels), 1 image {args.size}x{args.size}, "
                    f"{args.repeats} repeats",
          "timings": timings, "memory": memory}, args.json)


if __name__ == "__main__":
    main()
