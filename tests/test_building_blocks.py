"""The shared parts of every method: feature-map and neuron selection (Omeiza et al., 2019)
against hand computations, the chunking utility against direct evaluation, noise smoothing
as a combinator, and the public derivative entry point."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam.chunking import chunked_map, chunked_sum

CLOSE = dict(rtol=1e-5, atol=1e-6)


def _relu_head_split(tiny_split):
    """A head whose gradient varies with the position (a ReLU before the pooling)."""
    head = lambda v, a: jax.nn.relu(a - 0.3).mean(axis=(1, 2)) @ v["w"]  # noqa: E731
    return tiny_split.replace(head=head, gap_linear_head=False)


def _grad_cam_by_hand(split, x, c, mask):
    """Grad-CAM with every activation outside ``mask`` (h, w, K) and its gradient set to 0:
    w_k = (1/Z) sum_ij m g, map = ReLU(sum_k w_k m A^k), in NumPy."""
    a = np.asarray(split.activations(x), np.float64)
    g = np.asarray(jax.grad(lambda a: split.logits_from(a)[:, c].sum())(split.activations(x)),
                   np.float64)
    z = a.shape[1] * a.shape[2]
    out = np.zeros(a.shape[:3])
    for b in range(a.shape[0]):
        for k in range(a.shape[3]):
            w = (mask[..., k] * g[b, ..., k]).sum() / z
            out[b] += w * mask[..., k] * a[b, ..., k]
    return np.maximum(out, 0)


def _grad_cam_pp_by_hand(split, x, c, mask):
    """Closed-form Grad-CAM++ (exp link: g, g^2, g^3 of the logit) with the selection."""
    a = np.asarray(split.activations(x), np.float64) * mask
    g = np.asarray(jax.grad(lambda a: split.logits_from(a)[:, c].sum())(split.activations(x)),
                   np.float64) * mask
    out = np.zeros(a.shape[:3])
    for b in range(a.shape[0]):
        for k in range(a.shape[3]):
            total = a[b, ..., k].sum()
            d2, d3 = g[b, ..., k] ** 2, g[b, ..., k] ** 3
            den = 2 * d2 + total * d3
            alpha = np.where((d2 != 0) & (den != 0), d2 / np.where(den != 0, den, 1), 0)
            w = (alpha * np.maximum(g[b, ..., k], 0)).sum()
            out[b] += w * a[b, ..., k]
    return np.maximum(out, 0)


@pytest.mark.parametrize("method, by_hand", [(jaxcam.grad_cam, _grad_cam_by_hand),
                                             (jaxcam.grad_cam_pp, _grad_cam_pp_by_hand)])
def test_selection_against_hand_computation(method, by_hand, tiny_split, tiny_x):
    split = _relu_head_split(tiny_split)
    raw = lambda **sel: np.asarray(method(split, tiny_x, 2, upsample=False,  # noqa: E731
                                          normalize=False, **sel))
    h, w, k = 8, 8, 6
    everything = raw()
    assert np.abs(everything).max() > 0
    np.testing.assert_allclose(raw(channels=list(range(k))), everything, **CLOSE)
    np.testing.assert_allclose(raw(neurons=(0, 0, h, w)), everything, **CLOSE)
    np.testing.assert_allclose(everything, by_hand(split, tiny_x, 2, np.ones((h, w, k))),
                               rtol=1e-4, atol=1e-6)
    # one channel: that channel's term alone, ReLU(w_k A^k) with the unselected w_k
    for channel in range(k):
        mask = np.zeros((h, w, k))
        mask[..., channel] = 1
        np.testing.assert_allclose(raw(channels=[channel]), by_hand(split, tiny_x, 2, mask),
                                   rtol=1e-4, atol=1e-6)
    # a box: zero outside it; inside, the map of the box's activations and derivatives
    box = np.zeros((h, w, k))
    box[2:5, 1:7] = 1
    got = raw(neurons=(2, 1, 5, 7))
    assert np.all(got[:, box[..., 0] == 0] == 0)
    assert np.abs(got).max() > 0
    np.testing.assert_allclose(got, by_hand(split, tiny_x, 2, box), rtol=1e-4, atol=1e-6)
    # positions: the same as the box listing them; with channels: both masks
    positions = [(i, j) for i in range(2, 5) for j in range(1, 7)]
    np.testing.assert_allclose(raw(neurons=positions), got, **CLOSE)
    both = box.copy()
    both[..., [0, 1, 2]] = 0
    np.testing.assert_allclose(raw(neurons=(2, 1, 5, 7), channels=[3, 4, 5]),
                               by_hand(split, tiny_x, 2, both), rtol=1e-4, atol=1e-6)


def test_selection_in_exact_and_smooth_grad_cam_pp(tiny_split, tiny_x):
    """Selection acts on the evidence of every gradient method: exact Grad-CAM++ and
    Smooth Grad-CAM++ restricted to one channel give that channel's term alone."""
    split = _relu_head_split(tiny_split)
    options = dict(upsample=False, normalize=False)
    for f, extra in ((jaxcam.grad_cam_pp, dict(derivatives="exact", link="softmax")),
                     (jaxcam.smooth_grad_cam_pp, dict(key=jax.random.key(1), n_samples=3))):
        a = split.activations(tiny_x)
        zeroed = f(split, tiny_x, 3, neurons=[(0, 0)], **options, **extra)
        assert np.all(np.asarray(zeroed)[:, 1:, :] == 0)   # only position (0, 0) is kept
        weights = []
        for channel in range(a.shape[-1]):
            one = f(split, tiny_x, 3, channels=[channel], **options, **extra)
            # the channel's map is a non-negative multiple of its own activations
            ratio = np.asarray(one) / np.where(a[..., channel] > 0, a[..., channel], np.inf)
            w = ratio.max(axis=(1, 2))
            np.testing.assert_allclose(one, np.maximum(w[:, None, None] * a[..., channel], 0),
                                       rtol=1e-4, atol=1e-6)
            weights.append(w)
        assert np.max(weights) > 0


def test_selection_errors(tiny_split, tiny_x):
    f = jaxcam.grad_cam
    with pytest.raises(ValueError, match=r"channel 6 is out of range.*6 feature maps.*\[0, 5\]"):
        f(tiny_split, tiny_x, 0, channels=[1, 6])
    with pytest.raises(ValueError, match="channels is empty"):
        f(tiny_split, tiny_x, 0, channels=[])
    with pytest.raises(TypeError, match="channels must be a list of feature-map indices"):
        f(tiny_split, tiny_x, 0, channels=[0.5])
    with pytest.raises(ValueError, match=r"box .* is empty or outside the 8 x 8 feature map"):
        f(tiny_split, tiny_x, 0, neurons=(2, 2, 2, 5))
    with pytest.raises(ValueError, match=r"box .* outside the 8 x 8"):
        f(tiny_split, tiny_x, 0, neurons=(0, 0, 9, 3))
    with pytest.raises(ValueError, match=r"neuron position \(8, 0\) is outside the 8 x 8"):
        f(tiny_split, tiny_x, 0, neurons=[(1, 1), (8, 0)])
    with pytest.raises(ValueError, match="neurons must be a box"):
        f(tiny_split, tiny_x, 0, neurons=[(1, 2, 3)])
    with pytest.raises(ValueError, match="neurons is empty"):
        f(tiny_split, tiny_x, 0, neurons=[])


def test_traced_selection_under_jit(tiny_split, tiny_x):
    got = jax.jit(lambda ch, box: jaxcam.grad_cam(tiny_split, tiny_x, 1, channels=ch,
                                                  neurons=box))(jnp.array([0, 3]),
                                                               jnp.array([1, 1, 6, 6]))
    want = jaxcam.grad_cam(tiny_split, tiny_x, 1, channels=[0, 3], neurons=(1, 1, 6, 6))
    np.testing.assert_allclose(got, want, **CLOSE)


# --- the chunking utility

@pytest.mark.parametrize("n, chunk", [(10, 4), (10, 10), (7, 1), (3, 8)])
def test_chunked_map_and_sum_equal_direct_evaluation(n, chunk):
    items = {"a": jnp.arange(n, dtype=jnp.float32), "b": jnp.ones((n, 2)) * 2}
    f = lambda it: it["a"][:, None] * it["b"] + 1  # noqa: E731
    np.testing.assert_allclose(chunked_map(f, items, chunk=chunk), f(items))
    np.testing.assert_allclose(chunked_sum(f, items, chunk=chunk), f(items).sum(0))
    indices = chunked_map(lambda i: i * 3, n=n, chunk=chunk)
    np.testing.assert_array_equal(indices, np.arange(n) * 3)


def test_chunk_size_per_axis():
    from jaxcam.chunking import per_axis

    axes = ("samples", "directions")
    assert per_axis(None, axes) == {"samples": None, "directions": None}
    assert per_axis(4, axes) == {"samples": 4, "directions": 4}
    assert per_axis({"directions": 64}, axes) == {"samples": None, "directions": 64}
    with pytest.raises(ValueError, match="names the axis 'masks'.*axes are samples, "
                                         "directions"):
        per_axis({"masks": 2}, axes)
    with pytest.raises(ValueError, match=r"chunk_size\['samples'\] must be .*got 0"):
        per_axis({"samples": 0}, axes)
    with pytest.raises(TypeError, match="chunk_size must be a positive integer"):
        per_axis(2.5, axes)


def test_chunk_size_reaches_every_axis_and_never_changes_the_map(tiny_split, tiny_x):
    """Chunking bounds memory only: each axis of each method, by int or by dict, gives the
    map of the default chunks (to rounding; the same program when the chunks agree)."""
    key, c = jax.random.key(0), np.array([0, 3, 4])
    smooth = dict(key=key, n_samples=4, derivatives="exact", link="softmax")
    default = jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, c, **smooth)
    for chunk in (1, {"samples": 3}, {"samples": 2, "directions": 5}):
        np.testing.assert_allclose(
            jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, c, chunk_size=chunk, **smooth),
            default, rtol=1e-5, atol=1e-6)
    smoothed = jaxcam.smoothed("grad_cam_pp")
    np.testing.assert_allclose(
        smoothed(tiny_split, tiny_x, c, chunk_size={"samples": 2, "directions": 7}, **smooth),
        smoothed(tiny_split, tiny_x, c, **smooth), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="names the axis 'directions'.*axes are samples"):
        jaxcam.smoothed("grad_cam")(tiny_split, tiny_x, c, key=key,
                                    chunk_size={"directions": 2})
    np.testing.assert_array_equal(jaxcam.score_cam(tiny_split, tiny_x, c, chunk_size=3),
                                  jaxcam.score_cam(tiny_split, tiny_x, c,
                                                   chunk_size={"masks": 3}))
    np.testing.assert_allclose(jaxcam.ablation_cam(tiny_split, tiny_x, c, chunk_size=2),
                               jaxcam.ablation_cam(tiny_split, tiny_x, c), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="names the axis 'samples'.*axes are masks"):
        jaxcam.score_cam(tiny_split, tiny_x, c, chunk_size={"samples": 2})


def test_chunked_sum_with_log_weights_never_overflows():
    """sum_i exp(lw_i - max lw) v_i with log-weights in the thousands, against float64."""
    rng = np.random.default_rng(0)
    n, batch = 9, 2
    lw = rng.normal(size=(n, batch)) * 5 + np.array([1000.0, -2000.0])
    v = rng.normal(size=(n, batch, 3))
    total, top = chunked_sum(lambda it: (it[1], it[0]),
                             (jnp.asarray(lw, jnp.float32), jnp.asarray(v, jnp.float32)),
                             chunk=4, log_weights=True)
    want = (np.exp(lw - lw.max(0))[..., None] * v).sum(0)
    np.testing.assert_allclose(top, lw.max(0), rtol=1e-6)
    np.testing.assert_allclose(total, want, rtol=1e-4, atol=1e-5)


# --- noise smoothing as a combinator

def test_smoothed_grad_cam_averages_the_gradients(tiny_split, tiny_x):
    """jaxcam.smoothed("grad_cam"): the gradient (logit link: equal weights) averaged over
    the noisy copies of each image, applied to the clean activations; noise 0 is Grad-CAM."""
    split = _relu_head_split(tiny_split)
    smooth = jaxcam.smoothed("grad_cam")
    assert smooth.__name__ == "smooth_grad_cam"
    key, n, c = jax.random.key(4), 4, 2
    got = smooth(split, tiny_x, c, key=key, n_samples=n, noise=0.2, upsample=False,
                 normalize=False)
    sigma = 0.2 * (tiny_x.max(axis=(1, 2, 3)) - tiny_x.min(axis=(1, 2, 3)))
    grads = []
    for k in jax.random.split(key, n):
        noisy = tiny_x + sigma[:, None, None, None] * jax.random.normal(k, tiny_x.shape[1:])[None]
        a = split.activations(noisy)
        grads.append(jax.grad(lambda a: split.logits_from(a)[:, c].sum())(a))
    a = split.activations(tiny_x)
    w = jnp.mean(jnp.stack(grads), axis=0).mean(axis=(1, 2))
    want = np.maximum(np.einsum("bhwk,bk->bhw", a, w), 0)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    clean = smooth(split, tiny_x, c, key=key, n_samples=2, noise=0.0)
    np.testing.assert_allclose(clean, jaxcam.grad_cam(split, tiny_x, c), **CLOSE)


def test_smoothed_refuses_methods_without_head_derivatives():
    for name in ("guided_backprop", "smooth_grad_cam_pp"):
        with pytest.raises(ValueError, match="noise smoothing averages head derivatives"):
            jaxcam.smoothed(name)
    with pytest.raises(ValueError, match="unknown method"):
        jaxcam.smoothed("no_such_method")


def test_head_derivatives_is_pure_derivatives_of_each_example(tiny_split, tiny_x):
    """jaxcam.derivatives.head_derivatives == pure_derivatives of Y_b = softmax(head(A_b))_c
    for each example b (generic engine, nested JVPs)."""
    split = _relu_head_split(tiny_split).replace(
        head=lambda v, a: jax.nn.gelu(a - 0.3).mean(axis=(1, 2)) @ v["w"],
        piecewise_linear_head=False)
    a = split.activations(tiny_x)
    classes = np.array([0, 2, 4])
    got = jaxcam.derivatives.head_derivatives(split, a, classes, link="softmax",
                                              chunk_size=64)
    for b, c in enumerate(classes):
        score = lambda ab: jax.nn.softmax(split.logits_from(ab[None])[0])[c]  # noqa: E731
        want = jaxcam.pure_derivatives(score, a[b], chunk_size=64)
        for d, w in zip(got, want):
            np.testing.assert_allclose(d[b], w, rtol=1e-3, atol=1e-6 * np.abs(w).max())
    with pytest.raises(ValueError, match=r"a must be activations \(B, h, w, K\)"):
        jaxcam.derivatives.head_derivatives(split, a[0], 1)
