"""Float32 exact Grad-CAM++ against float64, across the confidence of the prediction.

Run from the repository root:

    python benchmarks/bench_float32_gaps.py                      # gaps 0, 0.5, ..., 40
    python benchmarks/bench_float32_gaps.py --gaps 2,3,8 --json gaps.json

ResNet-18 split at ``layer4`` (seeded random weights), one input; the bias of the input's
top class is moved so that its logit is ``gap`` above the second's (the Jacobian is
unchanged). For each gap, link ("softmax", "log_softmax", "exp") and engine, the raw map
(no upsampling, no normalisation) in float32 is compared with the float64 map of the same
network (the float32 weights, cast), by relative L2 error.

For the worst case the error is split into its sources, each measured with everything
else in float64 on the float32 activations A:

* ``features``: float64 on the float32 activations versus float64 throughout (the
  rounding of A by the float32 trunk);
* ``logits``: the float64 map when the logits fed to the link are the float32 head's
  (its rounding error, about sqrt(K) eps |terms| for a K-channel linear layer), the
  Jacobian in float64;
* ``arithmetic``: jaxcam's float32 map against the float64 map of the same float32
  forward (activations and logits), i.e. what jaxcam's own float32 arithmetic adds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jaxcam  # noqa: E402
from _timing import emit, machine  # noqa: E402

ENGINES = ("linearised", "generic")


def with_gap(split, x, gap):
    """The split with the bias of x's top class moved so that its logit is ``gap`` above
    the second's, and that class."""
    logits = np.asarray(split.logits(x)[0], np.float64)
    top, second = np.argsort(logits)[::-1][:2]
    bias = np.asarray(split.variables["params"]["fc"]["bias"], np.float64)
    bias[top] += gap - (logits[top] - logits[second])
    fc = {**split.variables["params"]["fc"], "bias": jnp.asarray(bias, jnp.float32)}
    params = {**split.variables["params"], "fc": fc}
    return split.replace(variables={**split.variables, "params": params}), int(top)


def raw_map(split, x, target, link, engine):
    return np.asarray(jaxcam.grad_cam_pp(split, x, target, link=link, derivatives="exact",
                                         engine=engine, upsample=False, normalize=False),
                      np.float64)


def relative(got, want):
    norm = np.linalg.norm(want)
    return float(np.linalg.norm(got - want) / norm) if norm else float(np.any(got))


def on_activations(split, head):
    """A split whose input is the activations themselves (features = identity)."""
    return jaxcam.Split(variables=split.variables, features=lambda v, a: a, head=head,
                        layer=split.layer, piecewise_linear_head=True)


def sources(split, x, c, link, full):
    """The worst case's error split by source (see the module docstring), ``full`` its
    float64 map; x64 must be on."""
    with jax.enable_x64(False):           # the float32 side as a float32 run computes it
        a32 = split.features(split.variables, x)
        m32 = raw_map(on_activations(split, split.head), a32, c, link, "linearised")
    s64 = split.astype(jnp.float64)
    a = a32.astype(jnp.float64)
    on_a32 = raw_map(on_activations(s64, s64.head), a, c, link, "linearised")

    @jax.custom_jvp
    def float32_logits(a):
        return split.head(split.variables, a.astype(jnp.float32)).astype(jnp.float64)

    float32_logits.defjvp(lambda p, t: (float32_logits(p[0]),
                                        jax.jvp(lambda a: s64.head(s64.variables, a), p,
                                                t)[1]))
    forward32 = raw_map(on_activations(s64, lambda v, a: float32_logits(a)), a, c, link,
                        "linearised")
    return {"total": relative(m32, full), "features": relative(on_a32, full),
            "logits": relative(forward32, on_a32), "arithmetic": relative(m32, forward32)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gaps", default=",".join(str(g / 2) for g in range(81)))
    p.add_argument("--links", default="softmax,log_softmax,exp")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    gaps = [float(g) for g in args.gaps.split(",")]
    links = args.links.split(",")
    base = jaxcam.models.load("resnet18", layer="layer4", weights="random", seed=args.seed)
    x = jax.random.normal(jax.random.key(args.seed), (1, args.size, args.size, 3))
    cases = {gap: with_gap(base, x, gap) for gap in gaps}
    got = {(gap, link, engine): raw_map(split, x, c, link, engine)
           for gap, (split, c) in cases.items() for link in links for engine in ENGINES}
    jax.config.update("jax_enable_x64", True)
    rows, want = {}, {}
    for gap, (split, c) in cases.items():
        s64 = split.astype(jnp.float64)
        for link in links:
            want[gap, link] = raw_map(s64, x.astype(jnp.float64), c, link, "linearised")
            rows[f"gap {gap:g} {link}"] = {
                engine: relative(got[gap, link, engine], want[gap, link]) for engine in ENGINES}
    worst = max(rows, key=lambda k: max(rows[k].values()))
    gap, link = float(worst.split()[1]), worst.split()[2]
    per_link = {link: {"worst": max(max(r.values()) for k, r in rows.items()
                                    if k.endswith(f" {link}"))} for link in links}
    emit({"machine": machine(), "model": f"resnet18 layer4, seed {args.seed}, "
          f"{args.size}x{args.size}", "worst": worst, "per_link": per_link,
          "worst_sources": {worst: sources(cases[gap][0], x, cases[gap][1], link,
                                           want[gap, link])},
          "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
