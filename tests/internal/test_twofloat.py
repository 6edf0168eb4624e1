"""Float32 pair arithmetic (jaxcam.derivatives._twofloat) against float64/exact rational references."""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam.derivatives import _twofloat as TF


def _floats(seed, n, spread=20):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=n) * 2.0 ** rng.integers(-spread, spread, n)).astype(np.float32)


@pytest.mark.parametrize("compiled", [False, True])
def test_two_sum_is_error_free(compiled):
    a, b = _floats(0, 4096), _floats(1, 4096)
    fn = jax.jit(TF.two_sum) if compiled else TF.two_sum
    s, e = (np.asarray(v, np.float64) for v in fn(jnp.asarray(a), jnp.asarray(b)))
    # a + b of two float32 numbers whose exponents differ by < 29 is exact in float64
    close = np.abs(np.log2(np.abs(a) / np.abs(b))) < 28
    assert close.sum() > 3000
    np.testing.assert_array_equal((s + e)[close], (a.astype(np.float64) + b)[close])
    np.testing.assert_array_equal(s, (a + b).astype(np.float64))


@pytest.mark.parametrize("compiled", [False, True])
def test_halves_are_exact_and_12_bits_wide(compiled):
    a = _floats(2, 4096)
    fn = jax.jit(TF.halves) if compiled else TF.halves
    hi, lo = (np.asarray(v) for v in fn(jnp.asarray(a)))
    np.testing.assert_array_equal(hi.astype(np.float64) + lo, a.astype(np.float64))

    def width(v):                      # significant bits of each float32
        m, _ = np.frexp(np.abs(v.astype(np.float64)))
        bits = np.zeros(v.shape, int)
        for k in range(1, 25):
            bits = np.where((bits == 0) & (m * 2.0**k == np.round(m * 2.0**k)), k, bits)
        return np.where(v == 0, 0, bits)

    assert width(hi).max() <= 12 and width(lo).max() <= 12
    # products of halves are therefore exact in float32
    b_hi, b_lo = (np.asarray(v) for v in fn(jnp.asarray(_floats(3, 4096, spread=5))))
    for x, y in ((hi, b_hi), (hi, b_lo), (lo, b_lo)):
        np.testing.assert_array_equal((x * y).astype(np.float64),
                                      x.astype(np.float64) * y)


def test_total_and_quotient_against_exact_rationals():
    """The pair sum within 2^-44 of the sum of magnitudes; the quotient by n rounded to
    nearest (within half a unit in the last place of the exact rational), compiled."""
    terms = _floats(4, (777, 64), spread=8).reshape(777, 64)
    hi, lo = jax.jit(TF.total)(jnp.asarray(terms))
    for n in (49.0, 3.0, 196.0, 12544.0):
        q = np.asarray(jax.jit(lambda x: TF.quotient(x, n))((hi, lo)))
        for j in range(terms.shape[1]):
            exact = sum(Fraction(float(t)) for t in terms[:, j])
            scale = sum(abs(Fraction(float(t))) for t in terms[:, j])
            pair = Fraction(float(hi[j])) + Fraction(float(lo[j]))
            assert abs(pair - exact) <= scale * Fraction(2.0 ** -44)
            ulp = Fraction(float(np.spacing(np.float32(abs(float(exact / Fraction(n)))))))
            assert abs(Fraction(float(q[j])) - exact / Fraction(n)) <= ulp * Fraction(
                1000001, 2000000), (n, j)


@pytest.mark.parametrize("k", [3, 512, 1280, 4096])
def test_exact_products_sum_to_the_exact_dot(k):
    """The terms sum to x @ w within 2^-48 K max|x| max|w| (exact rationals): the
    products of slices lose nothing, whatever order the matrix product sums in."""
    rng = np.random.default_rng(k)
    x = (rng.normal(size=(2, k)) * np.exp(rng.normal(size=(2, k)) * 3)).astype(np.float32)
    w = rng.normal(size=(k, 3)).astype(np.float32)
    x[1, :] = 0.0                                        # a zero row stays exactly zero
    terms = np.asarray(jax.jit(TF.exact_products)(jnp.asarray(x), jnp.asarray(w)))
    assert np.all(terms[:, 1] == 0)
    for c in range(3):
        exact = sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(x[0], w[:, c]))
        got = sum(Fraction(float(t)) for t in terms[:, 0, c])
        bound = k * Fraction(float(np.abs(x[0]).max())) * Fraction(
            float(np.abs(w[:, c]).max())) * Fraction(2.0 ** -48)
        assert abs(got - exact) <= bound


@pytest.mark.parametrize("name, layer, size", [("resnet18", "layer4", 64),
                                               ("efficientnet_lite0", "_swish", 64)])
def test_pooled_linear_logits_are_the_exact_logits_rounded_once(name, layer, size):
    """Within half a float32 unit in the last place of the float64 logits of the same
    weights and activations (the plain float32 head is several units off)."""
    split = jaxcam.models.load(name, layer=layer, weights="random", seed=0)
    assert split.gap_linear_head
    x = jax.random.normal(jax.random.key(0), (3, size, size, 3))
    a = jax.jit(split.activations)(x)
    @jax.jit
    def rounded_once(split, a):
        w, b = jaxcam.derivatives.pooled_linear_parts(split, a)
        return jaxcam.derivatives.rounded_logits(split, a), w, b

    got, w, b = (np.asarray(v, np.float64) for v in rounded_once(split, a))
    fc = split.variables["params"]["fc" if name == "resnet18" else "_fc"]
    np.testing.assert_array_equal(w, fc["kernel"])       # read exactly through the head
    np.testing.assert_array_equal(b, fc["bias"])
    plain = np.asarray(split.logits_from(a), np.float64)
    with jax.enable_x64(True):
        s64 = split.astype(jnp.float64)
        want = np.asarray(s64.logits_from(jnp.asarray(np.asarray(a), jnp.float64)))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 0.501
    assert np.max(np.abs(plain - want) / ulp) > 1.0   # the case the pairs are for


@pytest.mark.parametrize("gap", [0.0, 12.0])
def test_moments_from_the_matrix_equal_those_from_vector_jacobian_products(x64, gap):
    """The affine head's moments sum_j p_j d_j^k read from W equal the engine's
    vector-Jacobian-product form (float64), the most probable class included."""
    from jaxcam.derivatives import _engines as D

    rng = np.random.default_rng(int(gap))
    k, c, b = 9, 6, 3
    w = jnp.asarray(rng.normal(size=(k, c)))
    logits = rng.normal(size=(b, c))
    logits[:, 2] += gap
    p = jax.nn.softmax(jnp.asarray(logits), axis=-1)
    pooled = jnp.asarray(rng.normal(size=(b, 1, 1, k)))
    _, head_vjp = jax.vjp(lambda a: a.reshape(b, k) @ w, pooled)
    want = D._jacobian_moments(head_vjp, pooled, p, chunk=4)
    got = D._matrix_moments(w, p, chunk=4)
    for g, v in zip(got, want):
        np.testing.assert_allclose(g, v, rtol=1e-12, atol=1e-14 * float(np.abs(v).max()))
