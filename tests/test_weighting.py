"""Golden tests: each weighting formula on a small (A, derivatives) case worked by hand."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxcam import weighting as W


def _hw(*rows):
    """A (2, 2, K) array from per-channel 2x2 blocks."""
    return jnp.stack([jnp.array(r, jnp.float32) for r in rows], axis=-1)


A = _hw([[1, 0], [0, 1]], [[2, 1], [1, 0]])        # sum_ab A: channel 0 -> 2, channel 1 -> 4
G = _hw([[1, 0], [2, -1]], [[0.5, 0.5], [-1, 1]])


def test_grad_cam_weights_and_map():
    w = W.grad_cam_weights(G)
    # channel 0: (1 + 0 + 2 - 1) / 4 = 0.5; channel 1: (0.5 + 0.5 - 1 + 1) / 4 = 0.25
    np.testing.assert_allclose(w, [0.5, 0.25])
    m = W.weighted_map(A, w)
    # 0.5 * A0 + 0.25 * A1 = [[1.0, 0.25], [0.25, 0.5]]
    np.testing.assert_allclose(m, [[1.0, 0.25], [0.25, 0.5]])
    np.testing.assert_allclose(W.weighted_map(A, -w), np.zeros((2, 2)))


def test_grad_cam_pp_closed_form_alphas():
    alpha = W.grad_cam_pp_alphas(A, G**2, G**3)
    # channel 0 (sum A = 2): g=1 -> 1/(2+2) = 1/4; g=0 -> 0 (alpha = 0 where g = 0);
    #   g=2 -> 4/(8+16) = 1/6; g=-1 -> 1/(2-2): zero denominator -> 0.
    np.testing.assert_allclose(alpha[..., 0], [[0.25, 0.0], [1 / 6, 0.0]], rtol=1e-6)
    # channel 1 (sum A = 4): g=.5 -> .25/(.5+.5) = 1/4; g=-1 -> 1/(2-4) = -1/2; g=1 -> 1/6
    np.testing.assert_allclose(alpha[..., 1], [[0.25, 0.25], [-0.5, 1 / 6]], rtol=1e-6)
    assert np.all(np.isfinite(alpha))


def test_grad_cam_pp_weights():
    w = W.grad_cam_pp_weights(A, G, G**2, G**3)
    # channel 0: 1/4 * 1 + 1/6 * 2 = 7/12; channel 1: 1/4*.5 + 1/4*.5 + (-1/2)*0 + 1/6*1
    np.testing.assert_allclose(w, [7 / 12, 0.25 + 1 / 6], rtol=1e-6)


def test_grad_cam_pp_eps_moves_the_denominator():
    alpha = W.grad_cam_pp_alphas(A, G**2, G**3, eps=1.0)
    np.testing.assert_allclose(alpha[0, 0, 0], 1 / 5, rtol=1e-6)      # 1 / (2 + 2 + 1)
    np.testing.assert_allclose(alpha[1, 1, 0], 1.0, rtol=1e-6)         # 1 / (2 - 2 + 1)


def test_normalize_and_zero_maps():
    m = jnp.array([[[1.0, 3.0], [2.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = W.normalize(m)
    np.testing.assert_allclose(out[0], [[0.0, 0.5], [0.25, 1.0]])
    np.testing.assert_array_equal(out[1], np.zeros((2, 2)))  # all zero stays zero, no NaN


def test_upsample_matches_opencv():
    import cv2

    m = np.random.default_rng(0).random((1, 7, 7)).astype(np.float32)
    ours = np.asarray(W.upsample(jnp.asarray(m), (224, 224)))[0]
    theirs = cv2.resize(m[0], (224, 224), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _normalize_cases():
    rng = np.random.default_rng(1)
    yield rng.random((4, 31, 29)).astype(np.float32) * 37.0 - 5.0    # fractions, shifted
    yield (rng.random((3, 224, 224)) ** 8).astype(np.float32) * 1e-3  # tiny, skewed spans
    yield rng.uniform(-3.4e38, 3.4e38, (2, 7, 7)).astype(np.float32)       # span beyond float32's max
    yield np.float32([[[1.0, 1.0 + 2**-23], [1.0, 1.0]]])             # a span of one ulp


def test_normalize_is_exact_at_the_ends():
    """Thresholds such as ``map == 1`` or ``map > 0`` are safe: the maximum of every
    non-constant map is exactly 1.0 and its minimum exactly 0.0, eagerly and under jit
    (where XLA may replace the division by a multiplication by a reciprocal)."""
    import jax

    for m in _normalize_cases():
        for fn in (W.normalize, jax.jit(W.normalize)):
            out = np.asarray(fn(jnp.asarray(m)))
            assert out.dtype == np.float32 and np.all(np.isfinite(out))
            assert np.all((out >= 0) & (out <= 1))
            at_max = m == m.max(axis=(1, 2), keepdims=True)
            at_min = m == m.min(axis=(1, 2), keepdims=True)
            assert np.all(out[at_max] == 1.0) and np.all(out[at_min] == 0.0)
            # the interior is min-max scaling, computed independently in float64
            lo = m.min(axis=(1, 2), keepdims=True).astype(np.float64)
            hi = m.max(axis=(1, 2), keepdims=True).astype(np.float64)
            np.testing.assert_allclose(out, (m - lo) / (hi - lo), rtol=1e-6, atol=1e-6)
