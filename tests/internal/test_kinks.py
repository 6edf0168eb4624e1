"""Kinks of piecewise-linear heads: which activations have no pure derivative."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam.derivatives._kinks import kink_shares


def _pool_sum(a):
    return nn.max_pool(a, (2, 2), (2, 2)).sum(axis=(1, 2, 3))[:, None]


def test_hand_counted_pool_and_relu_kinks():
    a = jnp.array([[0, 0, 1, 3], [0, 0, 3, 2], [5, 5, 0, 0], [1, 0, 0, -1]],
                  jnp.float32)[None, :, :, None]
    # Windows: four zeros (4 tied), 3 and 3 (2), 5 and 5 (2), three zeros (3): all tied.
    pooled = kink_shares(_pool_sum, a)
    np.testing.assert_allclose(pooled.activations, [11 / 16])
    np.testing.assert_allclose(pooled.head_units, [1.0])
    relu = kink_shares(lambda a: jax.nn.relu(a).sum(axis=(1, 2, 3))[:, None], a)
    np.testing.assert_allclose(relu.activations, [8 / 16])   # the eight zeros
    np.testing.assert_allclose(relu.head_units, [8 / 16])
    clip = kink_shares(lambda a: jnp.clip(a, 0.0, 3.0).sum(axis=(1, 2, 3))[:, None], a)
    np.testing.assert_allclose(clip.activations, [10 / 16])  # eight zeros and two 3s
    # Overlapping, padded 3 x 3 windows with stride 1: counted per element too.
    smooth = a + jnp.arange(16.0).reshape(1, 4, 4, 1) * 0.01
    overlap = kink_shares(
        lambda a: nn.max_pool(a, (3, 3), (1, 1), "SAME").sum(axis=(1, 2, 3))[:, None], smooth)
    np.testing.assert_allclose(overlap.activations, [0.0])   # all values distinct


def _one_sided(f, a, h=1e-6):
    """(forward, backward) finite-difference derivatives of f along every basis vector."""
    flat = a.ravel()
    eye = np.eye(flat.size)
    f0 = f(a)
    fwd = np.array([(f((flat + h * e).reshape(a.shape)) - f0) / h for e in eye])
    bwd = np.array([(f0 - f((flat - h * e).reshape(a.shape))) / h for e in eye])
    return fwd.reshape(a.shape), bwd.reshape(a.shape)


def test_activations_off_the_kinks_have_equal_one_sided_derivatives(x64):
    """A VGG-like head (max-pool, dense, ReLU, dense) on post-ReLU activations: every
    activation not flagged has equal one-sided derivatives (a true derivative, equal to
    JAX's), and some flagged ones have different one-sided derivatives."""
    rng = np.random.default_rng(0)
    a = jnp.asarray(np.maximum(rng.normal(size=(1, 4, 4, 3)), 0.0))
    w1, w2 = rng.normal(size=(12, 8)), rng.normal(size=(8,))

    def head(a):
        h = nn.max_pool(a, (2, 2), (2, 2)).reshape(a.shape[0], -1) @ w1
        return (jax.nn.relu(h) @ w2)[:, None]

    flagged = np.zeros(a.shape, bool)
    shares = kink_shares(head, a)
    # Which elements: the tied maxima of each 2 x 2 window (independent of _kinks).
    an = np.asarray(a)
    for i in range(2):
        for j in range(2):
            for k in range(3):
                win = an[0, 2 * i:2 * i + 2, 2 * j:2 * j + 2, k]
                if np.sum(win == win.max()) >= 2:
                    flagged[0, 2 * i:2 * i + 2, 2 * j:2 * j + 2, k] = win == win.max()
    np.testing.assert_allclose(shares.activations, [flagged.mean()])
    assert flagged.any() and not flagged.all()
    f = lambda a: float(head(a)[0, 0])  # noqa: E731
    fwd, bwd = _one_sided(f, np.asarray(a))
    grad = np.asarray(jax.grad(lambda a: head(a)[0, 0])(a))
    np.testing.assert_allclose(fwd[~flagged], bwd[~flagged], atol=1e-6)
    np.testing.assert_allclose(grad[~flagged], fwd[~flagged], atol=1e-6)
    assert np.any(np.abs(fwd[flagged] - bwd[flagged]) > 1e-3)


@pytest.fixture(scope="module")
def vgg():
    return jaxcam.models.load("vgg16", layer="features.29", weights="random")


def test_kinks_under_jit_and_on_zoo_heads(vgg):
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    a = vgg.activations(x)
    eager = kink_shares(vgg.logits_from, a)
    jitted = jax.jit(lambda a: kink_shares(vgg.logits_from, a))(a)
    np.testing.assert_array_equal(eager.activations, jitted.activations)
    assert np.all(eager.activations > 0.05)   # all-zero windows of post-ReLU activations
    resnet = jaxcam.models.load("resnet18", layer="layer3", weights="random")
    shares = kink_shares(resnet.logits_from, resnet.activations(x))
    assert np.all(shares.activations == 0) and np.all(shares.head_units == 0)


def test_compare_derivatives_reports_the_kinks(vgg):
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
    cmp = jaxcam.compare_derivatives(vgg, x, 3, link="exp")
    want = kink_shares(vgg.logits_from, vgg.activations(x))
    np.testing.assert_allclose(cmp.kink_activations, want.activations)
    np.testing.assert_allclose(cmp.kink_head_units, want.head_units)
    assert set(cmp.summary()) >= {"kink_activations", "kink_head_units"}
