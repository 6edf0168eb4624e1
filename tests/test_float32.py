"""Exact derivatives in float32 for confident predictions.

The softmax and log_softmax links are computed from central moments and sums of the
other classes' probabilities (jaxcam.targets._links), so float32 maps stay close to float64 ones
as the top-2 logit gap grows, and are exactly zero where the true derivatives underflow.
The closed forms are checked against nested jax.jvp through jax.nn's links in float64.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam.targets import _links as L
from jaxcam.derivatives._taylor import taylor_along

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import bench_float32_gaps  # noqa: E402

VECTOR_LINKS = {"logit": lambda s: s, "exp": jnp.exp, "softmax": jax.nn.softmax,
                "log_softmax": jax.nn.log_softmax, "rest": lambda s: s + jax.nn.log_softmax(s)}


def _curve_oracle(link, logits, c, coeffs):
    """d^k/dt^k link(S(t))_c at 0 by nested jax.jvp through jax.nn's link."""
    order = coeffs.shape[0]

    def along(t):
        step = sum(t**k / math.factorial(k) * coeffs[k - 1] for k in range(1, order + 1))
        return VECTOR_LINKS[link](logits + step)[c]

    d = taylor_along(along, jnp.zeros(()), jnp.ones(()), order)
    return d / jnp.exp(logits[c]) if link == "exp" else d  # jaxcam's exp is exp(S - S0)


@pytest.mark.parametrize("link", ["logit", "exp", "softmax", "log_softmax", "rest"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_class_taylor_equals_nested_jvp_in_float64(x64, link, order):
    rng = np.random.default_rng(order)
    for trial in range(6):
        logits = jnp.asarray(rng.normal(size=7) * 3)
        coeffs = jnp.asarray(rng.normal(size=(order, 7)))
        c = int(np.argmax(logits)) if trial % 2 else int(rng.integers(7))  # mode or not
        got = L.class_taylor(link, logits, c, coeffs)
        np.testing.assert_allclose(got, _curve_oracle(link, logits, c, coeffs),
                                   rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("link", ["logit", "exp", "softmax", "log_softmax", "rest"])
def test_class_gradient_equals_autodiff_in_float64(x64, link):
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 6)) * 4)
    classes = jnp.asarray([0, 3, 5, 2])
    want = jax.vmap(lambda s, c: jax.grad(
        lambda s: VECTOR_LINKS[link](s)[c] / (jnp.exp(jax.lax.stop_gradient(s[c]))
                                              if link == "exp" else 1.0))(s))(logits, classes)
    np.testing.assert_allclose(L.class_gradient(link, logits, classes), want, rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("link", ["softmax", "log_softmax"])
@pytest.mark.parametrize("gap", [0.0, 4.0, 8.0, 16.0, 32.0, 60.0])
def test_class_taylor_float32_keeps_relative_accuracy(link, gap):
    """Logits with one class ahead by ``gap``: float32 within 1e-4 of a 60-digit oracle
    (textbook raw-moment formulas in mpmath), for the predicted class and another."""
    rng = np.random.default_rng(int(gap))
    logits = rng.normal(size=50).astype(np.float32)
    logits[7] = logits.max() + np.float32(gap)
    coeffs = rng.normal(size=(3, 50)).astype(np.float32)
    for c in (7, 3):
        want = _mpmath_oracle(link, logits, c, coeffs)
        got = np.asarray(L.class_taylor(link, jnp.asarray(logits), c, jnp.asarray(coeffs)),
                         np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=0)


def _mpmath_oracle(link, logits, c, coeffs):
    """Derivatives of log_softmax_c / softmax_c along S + t s1 + t^2/2 s2 + t^3/6 s3 from
    the raw moments of the coefficients, in 60-digit arithmetic (the float32 inputs are
    exact there)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        s = [mpmath.mpf(float(v)) for v in logits]
        z = mpmath.fsum(mpmath.exp(v) for v in s)
        p = [mpmath.exp(v) / z for v in s]
        s1, s2, s3 = ([mpmath.mpf(float(v)) for v in row] for row in coeffs)
        e = lambda f: mpmath.fsum(pj * fj for pj, fj in zip(p, f))  # noqa: E731
        m1, m2, m3 = e(s1), e([v**2 for v in s1]), e([v**3 for v in s1])
        cross = e([u * v for u, v in zip(s1, s2)])
        h1 = s1[c] - m1
        h2 = s2[c] - e(s2) - (m2 - m1**2)
        h3 = s3[c] - e(s3) - 3 * (cross - m1 * e(s2)) - (m3 - 3 * m1 * m2 + 2 * m1**3)
        h = [h1, h2, h3]
        if link == "softmax":
            h = [p[c] * v for v in (h1, h1**2 + h2, h1**3 + 3 * h1 * h2 + h3)]
        return np.array([float(v) for v in h])


# --- whole maps: float32 versus float64 on ResNet-18, logits scaled to a top-2 gap

# the sweep's own helpers (benchmarks/bench_float32_gaps.py measures every gap, 0 to 40)
_with_gap, _raw_map = bench_float32_gaps.with_gap, bench_float32_gaps.raw_map


GAPS = (0.0, 4.0, 8.0, 16.0, 32.0)
ENGINES = ("linearised", "generic")


@pytest.mark.slow
@pytest.mark.parametrize("layer, size", [("layer4", 64), ("layer3", 32)])
def test_float32_maps_match_float64_as_predictions_become_confident(layer, size):
    base = jaxcam.models.load("resnet18", layer=layer, weights="random", seed=3)
    x = jax.random.normal(jax.random.key(1), (1, size, size, 3))
    cases = [(gap, *_with_gap(base, x, gap)) for gap in GAPS]
    got = {(gap, link, engine): _raw_map(split, x, c, link, engine)
           for gap, split, c in cases for link in ("softmax", "log_softmax")
           for engine in ("linearised", "generic")}
    jax.config.update("jax_enable_x64", True)
    try:
        for gap, split, c in cases:
            split64 = split.astype(jnp.float64)
            for link in ("softmax", "log_softmax"):
                want = _raw_map(split64, x.astype(jnp.float64), c, link, "linearised")
                for engine in ("linearised", "generic"):
                    _assert_close_or_both_zero(got[gap, link, engine], want,
                                               f"{layer} gap {gap} {link} {engine}")
    finally:
        jax.config.update("jax_enable_x64", False)


SWEEP_GAPS = tuple(g / 2 for g in range(81))     # 0, 0.5, ..., 40
SWEEP_LINKS = ("softmax", "log_softmax", "rest", "exp")


@pytest.mark.slow
def test_float32_exact_maps_within_1e3_of_float64_at_every_gap():
    """ResNet-18 layer4, seed 3, at the top-2 logit gaps 0, 0.5, ..., 40: every link whose
    exact map is not identically zero on this head, both engines, within 1e-3 of float64
    (the logit link, linear here, is checked on a smooth head below). Seed 3 holds the sweep's worst case: at gap 3 a
    channel's alpha nears a pole, where the float32 fc layer's own rounding gave 1.2e-3
    before its logits were rounded once (jaxcam.derivatives._twofloat)."""
    base = jaxcam.models.load("resnet18", layer="layer4", weights="random", seed=3)
    x = jax.random.normal(jax.random.key(3), (1, 64, 64, 3))
    maps, _ = bench_float32_gaps.sweep(base, x, SWEEP_GAPS, SWEEP_LINKS)
    assert len(maps) == len(SWEEP_GAPS) * len(SWEEP_LINKS) * 2
    for (gap, link, engine), (got, want) in maps.items():
        _assert_close_or_both_zero(got, want, f"gap {gap} {link} {engine}")


@pytest.mark.parametrize("gap", [0.0, 8.0])
def test_float32_exact_logit_maps_on_a_smooth_head_within_1e3_of_float64(gap):
    """The logit link's derivatives do not depend on the other classes, so one gap would
    do; a smooth (GELU) ResNet-18 split at layer3 makes them non-zero."""
    base = jaxcam.models.load("resnet18", layer="layer3", weights="random", seed=1,
                              activation="gelu")
    x = jax.random.normal(jax.random.key(3), (1, 32, 32, 3))
    split, c = _with_gap(base, x, gap)
    got = _raw_map(split, x, c, "logit", "generic")
    want = _float64_map(split, x, c, "logit", "generic")
    assert np.any(want)
    _assert_close_or_both_zero(got, want, f"logit, smooth head, gap {gap}")


def _float64_map(split, x, c, link, engine):
    """The raw map of the same network and input in float64."""
    jax.config.update("jax_enable_x64", True)
    try:
        return _raw_map(split.astype(jnp.float64), x.astype(jnp.float64), c, link, engine)
    finally:
        jax.config.update("jax_enable_x64", False)


def _assert_close_or_both_zero(got, want, what):
    if not np.any(want):
        assert not np.any(got), f"{what}: float64 map is zero, float32 is not"
        return
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel <= 1e-3, f"{what}: relative L2 {rel:.2e}"


def test_engines_agree_with_float64_for_very_large_logits():
    """Every logit 1000 above its natural value (softmax is shift-invariant, float32's
    spacing there is 6e-5) and a top-2 gap of 16: both float32 engines agree with float64."""
    base = jaxcam.models.load("resnet18", layer="layer4", weights="random", seed=3)
    x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
    split, c = _with_gap(base, x, 16.0)
    fc = split.variables["params"]["fc"]
    params = {**split.variables["params"], "fc": {**fc, "bias": fc["bias"] + 1000.0}}
    split = split.replace(variables={**split.variables, "params": params})
    got = {engine: _raw_map(split, x, c, "softmax", engine)
           for engine in ("linearised", "generic")}
    want = _float64_map(split, x, c, "softmax", "linearised")
    for engine, maps in got.items():
        _assert_close_or_both_zero(maps, want, f"offset 1000, {engine}")


@pytest.mark.parametrize("engine", ["linearised", "generic"])
def test_underflowing_derivatives_give_exact_zeros_not_stretched_noise(engine):
    """At a top-2 gap of 200 the other classes' probabilities underflow in float32: the
    maps are exactly zero (raw and normalised), in both engines."""
    base = jaxcam.models.load("resnet18", layer="layer4", weights="random", seed=3)
    x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
    split, c = _with_gap(base, x, 200.0)
    for link in ("softmax", "log_softmax"):
        raw = _raw_map(split, x, c, link, engine)
        assert np.all(raw == 0)
        maps = jaxcam.grad_cam_pp(split, x, c, link=link, derivatives="exact", engine=engine)
        assert np.all(np.asarray(maps) == 0)
    # The closed-form gradient too: 1 - p_c is the sum of the others, exactly zero here.
    g = L.class_gradient("log_softmax", split.logits(x), jnp.asarray([c]))
    assert np.all(np.asarray(g) == 0)
