"""Score-CAM, SS-CAM and IS-CAM against hand computations on a tiny network (the peers'
own outputs are compared in tests/test_oracle_pytorch_grad_cam.py and
tests/test_oracle_torchcam.py)."""

from __future__ import annotations

import cv2
import jax
import numpy as np
import pytest

import jaxcam


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _paper_by_hand(split, x, c, baseline, channels=None):
    """Wang et al.: H_k = minmax(bilinear Up(A^k)) (OpenCV's half-pixel resize),
    w_k = p_c(x * H_k) - p_c(baseline), map = ReLU(sum_k w_k A^k)."""
    x = np.asarray(x)
    a = np.asarray(split.activations(x), np.float64)
    b_, h_, w_, k_ = a.shape
    size = x.shape[1:3]
    p_base = _softmax(np.asarray(split.logits(np.broadcast_to(baseline, x.shape)), np.float64))
    out = np.zeros((b_, h_, w_))
    for b in range(b_):
        for k in (range(k_) if channels is None else channels[b]):
            up = cv2.resize(a[b, ..., k].astype(np.float32), size[::-1],
                            interpolation=cv2.INTER_LINEAR).astype(np.float64)
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            masked = (x[b] * mask[..., None])[None].astype(np.float32)
            p = _softmax(np.asarray(split.logits(masked), np.float64))[0, c[b]]
            out[b] += (p - p_base[b, c[b]]) * a[b, ..., k]
    return np.maximum(out, 0)


@pytest.mark.parametrize("baseline", [0.0, "image"])
def test_paper_score_cam_equals_hand_computation(tiny_split, tiny_x, baseline):
    if baseline == "image":
        baseline = np.asarray(jax.random.normal(jax.random.key(3), tiny_x.shape[1:]) * 0.5)
    c = np.array([1, 3, 4])
    got = jaxcam.score_cam(tiny_split, tiny_x, c, baseline=baseline, upsample=False,
                           normalize=False)
    want = _paper_by_hand(tiny_split, tiny_x, c, baseline)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_top_n_scores_the_channels_of_largest_variance(tiny_split, tiny_x):
    c = np.array([1, 3, 4])
    options = dict(upsample=False, normalize=False)
    everything = jaxcam.score_cam(tiny_split, tiny_x, c, **options)
    np.testing.assert_allclose(jaxcam.score_cam(tiny_split, tiny_x, c, top_n=6, **options),
                               everything, rtol=1e-5, atol=1e-6)
    a = np.asarray(tiny_split.activations(tiny_x))
    top = np.argsort(-a.var(axis=(1, 2)), axis=-1)[:, :3]
    want = _paper_by_hand(tiny_split, tiny_x, c, 0.0, channels=top)
    got = jaxcam.score_cam(tiny_split, tiny_x, c, top_n=3, **options)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    # the softmax variants normalise over the scored channels only
    sm = jaxcam.score_cam(tiny_split, tiny_x, c, top_n=3, variant="pytorch-grad-cam", **options)
    assert np.all(np.isfinite(sm)) and np.abs(sm).max() > 0


def test_is_cam_and_ss_cam_reduce_to_score_cam(tiny_split, tiny_x):
    """One IS-CAM step has coefficient 1/1 = 1 and SS-CAM with noise 0 adds none: both
    are torch-cam's Score-CAM."""
    c, options = np.array([0, 2, 4]), dict(upsample=False, normalize=False)
    score = jaxcam.score_cam(tiny_split, tiny_x, c, variant="torchcam", **options)
    assert np.abs(score).max() > 0
    np.testing.assert_allclose(jaxcam.is_cam(tiny_split, tiny_x, c, steps=1, **options),
                               score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jaxcam.ss_cam(tiny_split, tiny_x, c, key=jax.random.key(0),
                                             n_samples=3, noise=0.0, **options),
                               score, rtol=1e-5, atol=1e-6)
    noisy = jaxcam.ss_cam(tiny_split, tiny_x, c, key=jax.random.key(0), n_samples=3,
                          noise=2.0, **options)
    assert np.abs(noisy - score).max() > 1e-3


def test_score_cam_errors(tiny_split, tiny_x):
    with pytest.raises(ValueError, match="unknown variant 'gradcam'"):
        jaxcam.score_cam(tiny_split, tiny_x, 0, variant="gradcam")
    with pytest.raises(ValueError, match=r"top_n=7 exceeds the layer's 6 feature maps"):
        jaxcam.score_cam(tiny_split, tiny_x, 0, top_n=7)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        jaxcam.score_cam(tiny_split, tiny_x, 0, chunk_size=0)
    with pytest.raises(ValueError, match=r"baseline of shape \(5, 5\) does not broadcast"):
        jaxcam.score_cam(tiny_split, tiny_x, 0, baseline=np.zeros((5, 5)))
    with pytest.raises(ValueError, match="baseline contains NaN"):
        jaxcam.score_cam(tiny_split, tiny_x, 0, baseline=np.full((16, 16, 3), np.nan))
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        jaxcam.ss_cam(tiny_split, tiny_x, 0, key=jax.random.key(0), noise=-1.0)
    # the paper's softmax applies to class targets; any other score is used as it is
    raw = dict(upsample=False, normalize=False)
    by_callable = jaxcam.score_cam(tiny_split, tiny_x, lambda s: s[:, 0], **raw)
    np.testing.assert_allclose(by_callable, jaxcam.score_cam(
        tiny_split, tiny_x, jaxcam.targets.class_logit(0), **raw), rtol=1e-5, atol=1e-6)
    by_class = jaxcam.score_cam(tiny_split, tiny_x, 0, **raw)     # softmax: other weights
    assert np.abs(by_callable - by_class).max() > 1e-3 * np.abs(by_callable).max()
