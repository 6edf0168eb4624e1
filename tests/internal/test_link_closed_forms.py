"""The links' closed forms (jaxcam/targets/_links.py): the Taylor coefficients and the
gradient of one class's score through each link, against nested jax.jvp through jax.nn's
links in float64, and in float32 against a 60-digit mpmath oracle as one class pulls
ahead (the central moments that keep float32 exact maps accurate)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcam.derivatives import taylor_along
from jaxcam.targets import _links as L


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
