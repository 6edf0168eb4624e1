"""jaxcam.metrics against direct NumPy implementations of the definitions and on cases with
known answers, eagerly and under jax.jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcam import metrics as M

B, H, W, C = 3, 12, 10, 5


def _linear_model(seed=0):
    """A closed-form classifier: softmax of a fixed linear map of the pixels."""
    v = np.random.default_rng(seed).normal(size=(H * W * 3, C)) * 0.05

    def predict_np(x):
        s = x.reshape(x.shape[0], -1) @ v
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    vj = jnp.asarray(v, jnp.float32)
    return (lambda x: jax.nn.softmax(x.reshape(x.shape[0], -1) @ vj, axis=-1)), predict_np


def _data(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, H, W, 3)).astype(np.float32)
    maps = rng.uniform(size=(B, H, W)).astype(np.float32)
    maps[1, 2:5, 3:6] = 0.5                       # ties, broken by the stable order
    return x, maps, np.array([0, 3, 4])


def _np_scores(predict_np, x, classes):
    return predict_np(x.astype(np.float64))[np.arange(len(classes)), classes]


@pytest.mark.parametrize("compiled", [False, True])
def test_map_multiplied_metrics_equal_their_definitions(compiled):
    predict, predict_np = _linear_model()
    x, maps, classes = _data()
    y = _np_scores(predict_np, x, classes)
    o = _np_scores(predict_np, x * maps[..., None], classes)
    fns = {"drop": M.average_drop, "increase": M.increase_in_confidence,
           "change": M.confidence_change}
    if compiled:
        fns = {k: jax.jit(f, static_argnums=0) for k, f in fns.items()}
    np.testing.assert_allclose(fns["drop"](predict, x, maps, classes),
                               np.maximum(y - o, 0) / y, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(fns["increase"](predict, x, maps, classes),
                                  (y < o).astype(np.float32))
    np.testing.assert_allclose(fns["change"](predict, x, maps, classes), o - y, atol=1e-6)
    np.testing.assert_allclose(M.confidence_change(predict, x, maps, classes, relative=True),
                               (o - y) / y, rtol=1e-4, atol=1e-6)


def _np_curve(predict_np, x, maps, classes, steps, substrate, insert):
    pixels = H * W
    s = int(np.ceil(pixels / steps))
    counts = list(range(0, pixels, s)) + [pixels]
    curves = []
    for b in range(len(classes)):
        order = np.argsort(-maps[b].ravel(), kind="stable")
        row = []
        for k in counts:
            chosen = np.zeros(pixels, bool)
            chosen[order[:k]] = True
            chosen = chosen.reshape(H, W, 1)
            img = (np.where(chosen, x[b], substrate[b]) if insert
                   else np.where(chosen, substrate[b], x[b]))
            row.append(_np_scores(predict_np, img[None], classes[b:b + 1])[0])
        curves.append(row)
    curves = np.array(curves)
    f = np.array(counts) / pixels
    return curves, ((curves[:, 1:] + curves[:, :-1]) * np.diff(f)).sum(-1) / 2, f


@pytest.mark.parametrize("insert", [False, True])
@pytest.mark.parametrize("steps", [20, 7])
def test_deletion_and_insertion_equal_their_definitions(insert, steps):
    predict, predict_np = _linear_model()
    x, maps, classes = _data()
    fn = M.insertion if insert else M.deletion
    substrate = (np.asarray(M.blurred(jnp.asarray(x))) if insert
                 else np.zeros_like(x))
    want_curve, want_auc, want_f = _np_curve(predict_np, x, maps, classes, steps, substrate,
                                             insert)
    auc, curve, fractions = fn(predict, x, maps, classes, steps=steps, curve=True)
    np.testing.assert_allclose(fractions, want_f)
    np.testing.assert_allclose(curve, want_curve, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(auc, want_auc, rtol=1e-5, atol=1e-6)
    jitted = jax.jit(lambda x, m, c: fn(predict, x, m, c, steps=steps, chunk_size=3))
    np.testing.assert_allclose(jitted(x, maps, classes), want_auc, rtol=1e-5, atol=1e-6)


def test_blur_is_rises_gaussian():
    """Kernel 11, sigma 5, zero padding 5, per channel: a direct NumPy convolution."""
    x = np.random.default_rng(2).normal(size=(1, 9, 13, 3)).astype(np.float32)
    r = np.arange(11) - 5
    g = np.exp(-r**2 / 50.0)
    k = np.outer(g, g) / np.outer(g, g).sum()
    padded = np.pad(x[0], ((5, 5), (5, 5), (0, 0)))
    want = np.zeros_like(x[0], dtype=np.float64)
    for i in range(9):
        for j in range(13):
            want[i, j] = np.einsum("ab,abc->c", k, padded[i:i + 11, j:j + 11])
    np.testing.assert_allclose(M.blurred(jnp.asarray(x))[0], want, rtol=1e-5, atol=1e-6)


def test_deleting_the_one_pixel_a_model_reads_drops_the_score_at_the_first_step():
    def predict(x):                          # p = sigmoid(x[5, 4, 0] * 4), two classes
        s = 4.0 * x[:, 5, 4, 0]
        return jnp.stack([jax.nn.sigmoid(s), 1 - jax.nn.sigmoid(s)], axis=1)

    x = np.ones((1, H, W, 3), np.float32)
    peaked = np.zeros((1, H, W), np.float32)
    peaked[0, 5, 4] = 1.0
    _, curve, _ = M.deletion(predict, x, peaked, np.array([0]), steps=20, curve=True)
    assert curve[0, 0] == pytest.approx(float(jax.nn.sigmoid(4.0)))
    np.testing.assert_allclose(curve[0, 1:], 0.5, atol=1e-7)   # gone from step 1 on
    last = np.zeros((1, H, W), np.float32)
    last[0, 5, 4] = 0.0
    last[0] += np.arange(H * W).reshape(H, W)[::-1] / (H * W)  # the pixel ranked late
    last[0, 5, 4] = 0.0
    _, curve, _ = M.deletion(predict, x, last, np.array([0]), steps=20, curve=True)
    assert curve[0, 1] == pytest.approx(float(jax.nn.sigmoid(4.0)))


def test_maps_smaller_than_the_input_are_resized_bilinearly():
    predict, _ = _linear_model()
    x, maps, classes = _data()
    small = maps[:, ::2, ::2]
    big = np.asarray(jax.image.resize(jnp.asarray(small), (B, H, W), "bilinear",
                                      antialias=False))
    np.testing.assert_allclose(M.average_drop(predict, x, small, classes),
                               M.average_drop(predict, x, big, classes), rtol=1e-6)


# --- localisation


def _box_mask(top, left, bottom, right, shape=(1, H, W)):
    m = np.zeros(shape, bool)
    m[:, top:bottom, left:right] = True
    return m


def test_pointing_game_hits_inside_misses_outside_and_counts_ties():
    mask = _box_mask(2, 2, 6, 6)
    peak_in = np.zeros((1, H, W), np.float32)
    peak_in[0, 3, 3] = 1
    peak_out = np.zeros((1, H, W), np.float32)
    peak_out[0, 10, 8] = 1
    assert M.pointing_game(peak_in, mask)[0] == 1
    assert M.pointing_game(peak_out, mask)[0] == 0
    tie = peak_out.copy()
    tie[0, 4, 4] = 1                        # a tied maximum inside counts
    assert M.pointing_game(tie, mask)[0] == 1
    # tolerance: (10, 8) is sqrt(4^2 + 2^2) = 4.47 px from the box's corner (5, 5)... (6, 5)
    near = np.zeros((1, H, W), np.float32)
    near[0, 8, 5] = 1                       # 3 px below the box's last row (5)
    assert M.pointing_game(near, mask, tolerance=2.9)[0] == 0
    assert M.pointing_game(near, mask, tolerance=3.0)[0] == 1
    assert jax.jit(lambda m, k: M.pointing_game(m, k, tolerance=3.0))(near, mask)[0] == 1


def test_energy_and_rank_accuracy_equal_their_definitions():
    rng = np.random.default_rng(3)
    maps = rng.uniform(size=(2, H, W)).astype(np.float32)
    masks = np.stack([_box_mask(1, 1, 5, 7)[0], _box_mask(6, 0, 12, 3)[0]])
    want_energy = (maps * masks).sum((1, 2)) / maps.sum((1, 2))
    np.testing.assert_allclose(M.energy_pointing_game(maps, masks), want_energy, rtol=1e-6)
    want_rank = []
    for m, k in zip(maps, masks):
        top = np.argsort(-m.ravel(), kind="stable")[:k.sum()]
        want_rank.append(k.ravel()[top].mean())
    np.testing.assert_allclose(M.relevance_rank_accuracy(maps, masks), want_rank, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(M.energy_pointing_game)(maps, masks), want_energy,
                               rtol=1e-6)
    np.testing.assert_allclose(jax.jit(M.relevance_rank_accuracy)(maps, masks), want_rank,
                               rtol=1e-6)
    outside = np.where(masks, 0.0, 0.7).astype(np.float32)
    np.testing.assert_array_equal(M.energy_pointing_game(outside, masks), [0.0, 0.0])
    np.testing.assert_array_equal(M.relevance_rank_accuracy(
        masks.astype(np.float32), masks), [1.0, 1.0])


def test_bad_inputs_get_errors_that_name_the_problem():
    predict, _ = _linear_model()
    x, maps, classes = _data()
    with pytest.raises(ValueError, match=r"masks of images \[1\] are empty"):
        M.pointing_game(maps[:2], np.stack([_box_mask(0, 0, 2, 2)[0], np.zeros((H, W))]))
    with pytest.raises(ValueError, match="normalize"):
        M.average_drop(predict, x, maps * 3, classes)
    bad = maps.copy()
    bad[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"images \[2\] are not finite"):
        M.deletion(predict, x, bad, classes)
    with pytest.raises(ValueError, match="classes must be"):
        M.insertion(predict, x, maps, classes.astype(np.float32))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        M.deletion(predict, x, maps, classes, steps=0)


def test_summary_gives_the_mean_inside_a_reproducible_interval():
    v = np.random.default_rng(4).normal(1.0, 0.5, size=200)
    s = M.summary(v, seed=1)
    assert s["mean"] == pytest.approx(v.mean())
    assert s["low"] < s["mean"] < s["high"]
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)          # the normal interval, roughly
    assert s["high"] - s["low"] == pytest.approx(2 * half, rel=0.15)
    assert M.summary(v, seed=1) == s
    with pytest.raises(ValueError, match="not finite"):
        M.summary([1.0, np.nan])


# --- ROAD


def _np_imputation(img, known):
    """Dense float64 solve of the imputation system, from its definition: each removed
    pixel equals the weighted mean of its in-image neighbours."""
    h, w = known.shape
    weights = {(-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12, (0, -1): 1 / 6,
               (0, 1): 1 / 6, (1, -1): 1 / 12, (1, 0): 1 / 6, (1, 1): 1 / 12}
    removed = [(i, j) for i in range(h) for j in range(w) if not known[i, j]]
    index = {p: n for n, p in enumerate(removed)}
    a = np.zeros((len(removed), len(removed)))
    rhs = np.zeros((len(removed), img.shape[-1]))
    for n, (i, j) in enumerate(removed):
        for (di, dj), wt in weights.items():
            q = (i + di, j + dj)
            if not (0 <= q[0] < h and 0 <= q[1] < w):
                continue
            a[n, n] += wt
            if q in index:
                a[n, index[q]] -= wt
            else:
                rhs[n] += wt * img[q]
    out = img.astype(np.float64).copy()
    out[tuple(np.array(removed).T)] = np.linalg.solve(a, rhs)
    return out


def test_linear_imputation_equals_the_dense_solve_of_its_definition():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    known = rng.uniform(size=(2, 9, 11)) < 0.3
    known[1] = False
    known[1, 4, 5] = True                     # one known pixel fills the whole image
    got = jax.jit(M.linear_imputation)(x, known)
    for b in range(2):
        np.testing.assert_allclose(got.images[b], _np_imputation(x[b], known[b]),
                                   atol=2e-5)
    np.testing.assert_allclose(got.images[1], np.broadcast_to(x[1, 4, 5], (9, 11, 3)),
                               atol=1e-5)
    assert np.all(np.asarray(got.residual) <= 1e-6)
    with pytest.raises(ValueError, match=r"images \[0\] have no known pixel"):
        M.linear_imputation(x[:1], np.zeros((1, 9, 11), bool))


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_equals_its_definition(order):
    predict, predict_np = _linear_model()
    x, maps, classes = _data()
    y = _np_scores(predict_np, x, classes)
    ranked = maps if order == "morf" else 1 - maps
    want = []
    for p in (20, 50, 80):
        row = []
        for b in range(B):
            known = ranked[b] < np.percentile(ranked[b], p)
            filled = _np_imputation(x[b], known)
            row.append(_np_scores(predict_np, filled[None], classes[b:b + 1])[0] - y[b])
        want.append(row)
    want = np.array(want).T                                        # (B, P)
    mean, values = M.road(predict, x, maps, classes, percentiles=(20, 50, 80), order=order,
                          curve=True)
    np.testing.assert_allclose(values, want, atol=2e-6)
    np.testing.assert_allclose(mean, want.mean(1), atol=2e-6)
    jitted = jax.jit(lambda x, m, c: M.road(predict, x, m, c, percentiles=(20, 50, 80),
                                            order=order))
    np.testing.assert_allclose(jitted(x, maps, classes), want.mean(1), atol=2e-6)
    combined = M.road_combined(predict, x, maps, classes, percentiles=(20, 50, 80))
    lerf = M.road(predict, x, maps, classes, percentiles=(20, 50, 80), order="lerf")
    morf = M.road(predict, x, maps, classes, percentiles=(20, 50, 80), order="morf")
    np.testing.assert_allclose(combined, (lerf - morf) / 2, atol=1e-7)


def test_road_noise_is_keyed_and_reproducible():
    predict, _ = _linear_model()
    x, maps, classes = _data()
    one = M.road(predict, x, maps, classes, noise=0.1, key=jax.random.key(3))
    np.testing.assert_array_equal(one, M.road(predict, x, maps, classes, noise=0.1,
                                              key=jax.random.key(3)))
    assert not np.allclose(one, M.road(predict, x, maps, classes, noise=0.1,
                                       key=jax.random.key(4)))
    with pytest.raises(ValueError, match="needs a key"):
        M.road(predict, x, maps, classes, noise=0.1)
    with pytest.raises(ValueError, match=r"percentiles must lie in \(0, 100\)"):
        M.road(predict, x, maps, classes, percentiles=(0, 50))


# --- sanity check


def test_spearman_equals_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(6)
    a = rng.integers(0, 4, size=(3, 5, 6)).astype(np.float32)      # many ties
    b = a + rng.normal(size=a.shape).astype(np.float32)
    want = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(3)]
    np.testing.assert_allclose(M.spearman(a, b), want, rtol=1e-12)
    assert M.spearman(np.zeros((1, 5, 6)), b[:1])[0] == 0.0       # constant: no ranks


def test_forward_order_follows_the_network():
    import jaxcam

    split = jaxcam.models.load("resnet18", layer="layer3", weights="random", seed=0)
    order = M.forward_order(split, np.zeros((1, 32, 32, 3), np.float32))
    assert order == ["conv1", "bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
                     "layer3.0", "layer3.1", "layer4.0", "layer4.1", "fc"]


@pytest.mark.slow
def test_sanity_check_grad_cam_decorrelates_an_edge_detector_does_not():
    """ResNet-18 (random weights) at layer3, 6 x 6 maps: cascading re-initialisation from
    fc down takes Grad-CAM's maps away from the model's; a map of the image's edges, which
    ignores the model, stays exactly where it was."""
    import jaxcam

    split = jaxcam.models.load("resnet18", layer="layer3", weights="random", seed=0)
    x = np.random.default_rng(0).normal(size=(4, 96, 96, 3)).astype(np.float32)
    classes = np.asarray(split.logits(x)).argmax(1)
    grad_cam = jax.jit(lambda s, x, c: jaxcam.grad_cam(s, x, c, upsample=False))
    result = M.sanity_check(grad_cam, split, x, classes, key=jax.random.key(0))
    assert result.layers[0] == "fc" and result.layers[-1] == "conv1"
    assert result.spearman.shape == (11, 4)
    assert np.mean(result.spearman[-3:]) < 0.6      # all but the stem re-initialised
    assert np.all(np.abs(result.spearman) <= 1)

    def edges(split, x, classes):                   # ignores the model
        grey = x.mean(-1)
        return jnp.abs(grey[:, 1:, 1:] - grey[:, :-1, 1:]) + jnp.abs(
            grey[:, 1:, 1:] - grey[:, 1:, :-1])

    control = M.sanity_check(edges, split, x, classes, order="independent")
    np.testing.assert_array_equal(control.spearman, 1.0)
    with pytest.raises(ValueError, match="unknown parameter groups"):
        M.sanity_check(edges, split, x, classes, layers=["head"])
