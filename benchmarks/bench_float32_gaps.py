"""Float32 exact Grad-CAM++ against float64, across the confidence of the prediction.

Run from the repository root:

    python benchmarks/bench_float32_gaps.py                      # gaps 0, 0.5, ..., 40
    python benchmarks/bench_float32_gaps.py --gaps 2,3,8 --json gaps.json

ResNet-18 split at ``layer4`` (seeded random weights), one input; the bias of the input's
top class is moved so that its logit is ``gap`` above the second's (the Jacobian is
unchanged). For each gap, link ("softmax", "log_softmax", "rest", "exp") and engine, the
raw map (no upsampling, no normalisation) in float32 is compared with the float64 map of
the same network (the float32 weights, cast), by relative L2 error. The trunk runs once
per precision; each gap's maps are computed from those activations.

For the worst case the error is split into its sources, each measured with everything
else in float64 on the float32 activations A:

* ``features``: float64 on the float32 activations versus float64 throughout (the
  rounding of A by the float32 trunk);
* ``plain_float32_logits``: the float64 map when the logits fed to the link are those of
  the plain float32 head (its rounding error, about sqrt(K) eps |terms| for a K-channel
  linear layer), the Jacobian in float64: what the map would carry if jaxcam used them;
* ``logits_rounded_once``: the same with the exact logits rounded once to float32, which
  is what jaxcam feeds the link for a pooled linear head (``jaxcam.derivatives._twofloat``);
* ``arithmetic``: jaxcam's float32 map against the float64 map with those rounded-once
  logits, i.e. what jaxcam's own float32 arithmetic adds.
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


def with_gap(split, x, gap, logits=None):
    """The split with the bias of x's top class moved so that its logit is ``gap`` above
    the second's, and that class. ``logits``: x's logits (B, C), when already computed."""
    logits = np.asarray(split.logits(x) if logits is None else logits, np.float64)[0]
    top, second = np.argsort(logits)[::-1][:2]
    bias = np.asarray(split.variables["params"]["fc"]["bias"], np.float64)
    bias[top] += gap - (logits[top] - logits[second])
    fc = {**split.variables["params"]["fc"], "bias": jnp.asarray(bias, jnp.float32)}
    params = {**split.variables["params"], "fc": fc}
    return split.replace(variables={**split.variables, "params": params}), int(top)


def _raw(split, x, target, link, engine):
    return jaxcam.grad_cam_pp(split, x, target, link=link, derivatives="exact",
                              engine=engine, upsample=False, normalize=False)


def raw_map(split, x, target, link, engine):
    """The raw exact Grad-CAM++ map (no upsampling, no normalisation), float64 NumPy."""
    return np.asarray(_raw(split, x, target, link, engine), np.float64)


def relative(got, want):
    norm = np.linalg.norm(want)
    return float(np.linalg.norm(got - want) / norm) if norm else float(np.any(got))


def on_activations(split, head=None):
    """A split whose input is the activations themselves (features = identity); its head
    the split's own unless given (another head is not taken to be a pooled linear one)."""
    return jaxcam.Split(variables=split.variables, features=_identity,
                        head=split.head if head is None else head, layer=split.layer,
                        piecewise_linear_head=True,
                        gap_linear_head=head is None and split.gap_linear_head)


def _identity(variables, a):
    return a


def sources(split, x, c, link, full):
    """The worst case's error split by source (see the module docstring), ``full`` its
    float64 map; x64 must be on."""
    with jax.enable_x64(False):           # the float32 side as a float32 run computes it
        a32 = split.features(split.variables, x)
        m32 = raw_map(on_activations(split), a32, c, link, "linearised")
    s64 = split.astype(jnp.float64)
    a = a32.astype(jnp.float64)
    on_a32 = raw_map(on_activations(s64), a, c, link, "linearised")

    def with_logits(logits_of):
        """The float64 map whose logits are ``logits_of(a)``, its Jacobian float64's."""
        @jax.custom_jvp
        def logits(a):
            return logits_of(a)

        logits.defjvp(lambda p, t: (logits(p[0]), jax.jvp(
            lambda a: s64.head(s64.variables, a), p, t)[1]))
        return raw_map(on_activations(s64, lambda v, a: logits(a)), a, c, link,
                       "linearised")

    plain = with_logits(lambda a: split.head(split.variables, a.astype(jnp.float32))
                        .astype(jnp.float64))
    once = with_logits(lambda a: s64.head(s64.variables, a).astype(jnp.float32)
                       .astype(jnp.float64))
    return {"total": relative(m32, full), "features": relative(on_a32, full),
            "plain_float32_logits": relative(plain, on_a32),
            "logits_rounded_once": relative(once, on_a32),
            "arithmetic": relative(m32, once)}


def sweep(base, x, gaps, links, engines=ENGINES):
    """{(gap, link, engine): (float32 raw map, float64 raw map)} and the gaps' (split,
    class). The trunk runs once per precision; each gap's maps are computed from those
    activations by one compiled function of the split (only the head changes)."""
    def run(a, engines):
        return jax.jit(lambda split, c: {(link, engine): _raw(split, a, c, link, engine)
                                          for link in links for engine in engines})

    logits = base.logits(x)
    cases = [with_gap(base, x, gap, logits) for gap in gaps]
    run32 = run(base.activations(x), engines)
    got = [run32(on_activations(split), c) for split, c in cases]
    with jax.enable_x64(True):
        run64 = run(base.astype(jnp.float64).activations(x.astype(jnp.float64)),
                    ("linearised",))
        want = [run64(on_activations(split.astype(jnp.float64)), c) for split, c in cases]
        maps = {(gap, link, engine): (np.asarray(g[link, engine], np.float64),
                                      np.asarray(w[link, "linearised"]))
                for gap, g, w in zip(gaps, got, want) for link in links
                for engine in engines}
    return maps, cases


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gaps", default=",".join(str(g / 2) for g in range(81)))
    p.add_argument("--links", default="softmax,log_softmax,rest,exp")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    gaps = [float(g) for g in args.gaps.split(",")]
    links = args.links.split(",")
    base = jaxcam.models.load("resnet18", layer="layer4", weights="random", seed=args.seed)
    x = jax.random.normal(jax.random.key(args.seed), (1, args.size, args.size, 3))
    maps, cases = sweep(base, x, gaps, links)
    rows = {f"gap {gap:g} {link}": {engine: relative(*maps[gap, link, engine])
                                    for engine in ENGINES} for gap in gaps for link in links}
    jax.config.update("jax_enable_x64", True)
    worst = max(rows, key=lambda k: max(rows[k].values()))
    gap, link = float(worst.split()[1]), worst.split()[2]
    per_link = {link: {"worst": max(max(r.values()) for k, r in rows.items()
                                    if k.endswith(f" {link}"))} for link in links}
    emit({"machine": machine(), "model": f"resnet18 layer4, seed {args.seed}, "
          f"{args.size}x{args.size}", "worst": worst, "per_link": per_link,
          "worst_sources": {worst: sources(cases[gaps.index(gap)][0], x, cases[gaps.index(gap)][1], link,
                                           maps[gap, link, ENGINES[0]][1])},
          "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
