"""The rest of the CAM family against hand computations in NumPy, on networks whose head
derivatives are known in closed form, and the options every map method shares (several
layers, test-time augmentation, eigen smoothing, noise smoothing).

The tiny network of conftest has the head S = mean_hw(A) W + b, so dS_c/dA_hwk = W[k, c]/Z
(Z = h w) exactly: every gradient method's raw map is computed here from A and W alone.
"""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from conftest import _conv, tiny_head, tiny_variables

RAW = dict(upsample=False, normalize=False)
TARGETS = np.array([0, 3, 4])


def _relu(v):
    return np.maximum(v, 0.0)


def _activations(split, x):
    return np.asarray(split.activations(x), np.float64)


def _gradient(split, a, targets):
    """dS_c/dA of the tiny head: W[:, c] / Z at every position, (B, h, w, K)."""
    w = np.asarray(split.variables["w"], np.float64)
    z = a.shape[1] * a.shape[2]
    return np.broadcast_to((w[:, targets].T / z)[:, None, None, :], a.shape)


def _logits(split, a):
    v = split.variables
    return a.mean(axis=(1, 2)) @ np.asarray(v["w"], np.float64) + np.asarray(v["b"], np.float64)


def _projection(m):
    """First principal component of (h, w, K) by NumPy's SVD, sign: loadings sum >= 0."""
    h, w, k = m.shape
    xc = m.reshape(h * w, k) - m.reshape(h * w, k).mean(axis=0)
    v = np.linalg.svd(xc, full_matrices=False)[2][0]
    v = -v if v.sum() < 0 else v
    return (xc @ v).reshape(h, w)


def _normalize(m):
    lo, hi = m.min(axis=(-2, -1), keepdims=True), m.max(axis=(-2, -1), keepdims=True)
    return np.where(hi > lo, (m - lo) / np.where(hi > lo, hi - lo, 1), 0.0)


def _close(got, expected, rtol=1e-5):
    expected = np.asarray(expected)
    assert np.abs(expected).max() > 0  # a non-trivial reference, so the test can fail
    np.testing.assert_allclose(np.asarray(got), expected, rtol=rtol,
                               atol=rtol * np.abs(expected).max())


# --- the formulas on hand-made arrays

def test_xgrad_cam_weights_by_hand():
    a = np.array([[[[1.0, 0.0], [2.0, 0.0]], [[3.0, 0.0], [4.0, 0.0]]]])  # (1, 2, 2, 2)
    g = np.array([[[[1.0, 5.0], [0.0, 5.0]], [[-1.0, 5.0], [2.0, 5.0]]]])
    w = jaxcam.weighting.xgrad_cam_weights(jnp.asarray(a), jnp.asarray(g))
    # channel 0: (1*1 + 2*0 + 3*(-1) + 4*2) / 10; channel 1 sums to 0: weight 0, not NaN
    np.testing.assert_allclose(w, [[0.6, 0.0]], rtol=1e-6)
    w_eps = jaxcam.weighting.xgrad_cam_weights(jnp.asarray(a), jnp.asarray(g), eps=0.5)
    np.testing.assert_allclose(w_eps, [[6.0 / 10.5, 0.0]], rtol=1e-6)


def test_ablation_weights_by_hand():
    w = jaxcam.weighting.ablation_weights(jnp.array([2.0, 0.0]),
                                          jnp.array([[1.0, 3.0], [1.0, -1.0]]))
    np.testing.assert_allclose(w, [[0.5, -0.5], [0.0, 0.0]])   # Y = 0: 0, never inf


def test_first_component_is_numpy_svd_with_the_sign_rule():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(2, 5, 4, 6))
    got = np.asarray(jaxcam.weighting.first_component(jnp.asarray(m, jnp.float32)))
    for i in range(2):
        _close(got[i], _projection(m[i]), rtol=1e-4)
    # the sign rule makes the map independent of the sign the decomposition returns
    np.testing.assert_allclose(jaxcam.weighting.first_component(-jnp.asarray(m)),
                               -got, rtol=1e-4, atol=1e-5)
    flipped = np.asarray(jaxcam.weighting.first_component(jnp.asarray(m[..., ::-1].copy())))
    np.testing.assert_allclose(flipped, got, rtol=1e-4, atol=1e-5)  # channel order: no effect


# --- the methods on the tiny network (closed-form gradient)

@pytest.mark.parametrize("name, rule", [
    ("xgrad_cam",
     lambda a, g: (np.sum(a * g, axis=(1, 2)) / np.sum(a, axis=(1, 2)))[:, None, None] * a),
    ("layer_cam", lambda a, g: _relu(g) * a),
    ("hires_cam", lambda a, g: g * a),
    ("grad_cam_elementwise", lambda a, g: _relu(g * a)),
])
def test_gradient_family_by_hand(name, rule, tiny_split, tiny_x):
    a = _activations(tiny_split, tiny_x)
    expected = _relu(np.sum(rule(a, _gradient(tiny_split, a, TARGETS)), axis=-1))
    got = getattr(jaxcam, name)(tiny_split, tiny_x, TARGETS, **RAW)
    _close(got, expected)


def test_hires_cam_is_cam_over_z_on_a_gap_linear_head(tiny_split, tiny_x):
    hires = jaxcam.hires_cam(tiny_split, tiny_x, TARGETS, **RAW)
    cam = jaxcam.cam(tiny_split, tiny_x, TARGETS, **RAW)
    _close(hires, np.maximum(np.asarray(cam), 0) / 64)


def test_eigen_cam_and_eigen_grad_cam_by_hand(tiny_split, tiny_x):
    a = _activations(tiny_split, tiny_x)
    g = _gradient(tiny_split, a, TARGETS)
    eigen = jaxcam.eigen_cam(tiny_split, tiny_x, None, **RAW)
    eigen_grad = jaxcam.eigen_grad_cam(tiny_split, tiny_x, TARGETS, **RAW)
    for i in range(3):
        _close(eigen[i], _relu(_projection(a[i])), rtol=1e-4)
        _close(eigen_grad[i], _relu(_projection(g[i] * a[i])), rtol=1e-4)
    # no class: the target changes nothing
    np.testing.assert_array_equal(jaxcam.eigen_cam(tiny_split, tiny_x, TARGETS, **RAW), eigen)


def test_eigen_smooth_is_the_first_component_of_the_weighted_activations(tiny_split, tiny_x):
    a = _activations(tiny_split, tiny_x)
    weights = _gradient(tiny_split, a, TARGETS).mean(axis=(1, 2))   # Grad-CAM's channel weights
    got = jaxcam.grad_cam(tiny_split, tiny_x, TARGETS, eigen_smooth=True, **RAW)
    for i in range(3):
        _close(got[i], _relu(_projection(a[i] * weights[i])), rtol=1e-4)


def test_ablation_cam_by_hand(tiny_split, tiny_x):
    a = _activations(tiny_split, tiny_x)
    s = _logits(tiny_split, a)[np.arange(3), TARGETS]
    ablated = np.stack([_logits(tiny_split, np.where(np.arange(6) == k, 0.0, a))
                        [np.arange(3), TARGETS] for k in range(6)], axis=-1)   # (B, K)
    w = (s[:, None] - ablated) / s[:, None]
    expected = _relu(np.einsum("bhwk,bk->bhw", a, w))
    for chunk in (1, 4, 6):  # the chunking changes nothing
        _close(jaxcam.ablation_cam(tiny_split, tiny_x, TARGETS, chunk_size=chunk, **RAW),
               expected)
    # a traced ablation value: channel k set to -1 instead of 0
    ablated = np.stack([_logits(tiny_split, np.where(np.arange(6) == k, -1.0, a))
                        [np.arange(3), TARGETS] for k in range(6)], axis=-1)
    w = (s[:, None] - ablated) / s[:, None]
    _close(jaxcam.ablation_cam(tiny_split, tiny_x, TARGETS, value=-1.0, **RAW),
           _relu(np.einsum("bhwk,bk->bhw", a, w)))


def test_shapley_cam_rest_hvp_by_hand(tiny_split, tiny_x):
    """ReST on the linear head: Y = S_c + log_softmax_c(S), S = M vec(A) + b, so
    g = M^T (2 e_c - p) and H A = -M^T (diag p - p p^T) M vec(A)."""
    a = _activations(tiny_split, tiny_x)
    b, h, w_, k = a.shape
    wt = np.asarray(tiny_split.variables["w"], np.float64)          # (K, C)
    m = np.broadcast_to(wt.T[:, None, None, :] / (h * w_), (5, h, w_, k)).reshape(5, -1)
    expected = []
    for i in range(b):
        s = m @ a[i].reshape(-1) + np.asarray(tiny_split.variables["b"], np.float64)
        p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        e = np.eye(5)[TARGETS[i]]
        g = m.T @ (2 * e - p)
        hvp = -m.T @ ((np.diag(p) - np.outer(p, p)) @ (m @ a[i].reshape(-1)))
        weights = (g - 0.5 * hvp).reshape(h, w_, k).mean(axis=(0, 1))
        expected.append(_relu(a[i] @ weights))
    _close(jaxcam.shapley_cam(tiny_split, tiny_x, TARGETS, **RAW), np.stack(expected))
    # with the logit the head is linear: H = 0, and ShapleyCAM is Grad-CAM
    _close(jaxcam.shapley_cam(tiny_split, tiny_x, TARGETS, link="logit", **RAW),
           jaxcam.grad_cam(tiny_split, tiny_x, TARGETS, **RAW))


def test_rest_link_exact_derivatives_both_engines(tiny_split, tiny_x):
    """The "rest" link in the exact engines: the linearised one (Jacobian moments plus the
    target's row) == the generic Taylor series through the head."""
    first, _ = _two_cuts()
    a = first.activations(tiny_x)
    d = {engine: jaxcam.derivatives.head_derivatives(first, a, TARGETS, link="rest",
                                                     engine=engine)
         for engine in ("generic", "linearised")}
    for k in range(3):
        _close(d["linearised"][k], d["generic"][k], rtol=1e-4)


def test_shapley_cam_hvp_against_finite_differences(x64):
    """A smooth head (tanh between two linear maps): H A from jax.jvp of the gradient ==
    central differences of the gradient along A, in float64."""
    rng = np.random.default_rng(3)
    v = {"k": rng.normal(size=(3, 3, 3, 4)) * 0.5, "w1": rng.normal(size=(4, 7)),
         "w2": rng.normal(size=(7, 5))}

    def head(v, a):
        return jnp.tanh(a.mean(axis=(1, 2)) @ v["w1"]) @ v["w2"]

    split = jaxcam.Split(variables=v, features=lambda v, x: jax.nn.relu(_conv(x, v["k"])),
                         head=head, layer="k")
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)))
    t = np.array([1, 4])
    a = split.activations(x)

    def grad(a):
        return jax.grad(lambda a: jnp.sum(head(v, a)[jnp.arange(2), t]))(a)

    eps = 1e-5
    hvp = (grad(a + eps * a) - grad(a - eps * a)) / (2 * eps)
    weights = np.mean(np.asarray(grad(a) - 0.5 * hvp), axis=(1, 2))
    expected = _relu(np.einsum("bhwk,bk->bhw", np.asarray(a), weights))
    _close(jaxcam.shapley_cam(split, x, t, link="logit", **RAW), expected, rtol=1e-6)


def _finer_reference(split, x, classes, ranks, alpha):
    """Grad-CAM of the FinerCAM score, with the compared classes chosen here in NumPy."""
    logits = np.asarray(split.logits(x), np.float64)
    others = np.stack([np.argsort(np.abs(logits[i] - logits[i, c]), kind="stable")[list(ranks)]
                       for i, c in enumerate(classes)])
    c, o = jnp.asarray(classes), jnp.asarray(others)

    def score(s):
        p = jax.nn.softmax(s, axis=-1)
        p_j = jnp.take_along_axis(p, o, axis=-1)
        s_j = jnp.take_along_axis(s, o, axis=-1)
        s_c = jnp.take_along_axis(s, c[:, None], axis=-1)
        return jnp.sum(p_j * (s_c - alpha * s_j), axis=-1) / (jnp.sum(p_j, axis=-1) + 1e-9)

    return jaxcam.grad_cam(split, x, score, **RAW)


@pytest.mark.parametrize("ranks, alpha", [((1, 2, 3), 1.0), ((1,), 0.5), ((2, 4), 0.0)])
def test_finer_cam_is_grad_cam_of_the_contrast(ranks, alpha, tiny_split, tiny_x):
    got = jaxcam.finer_cam(tiny_split, tiny_x, TARGETS, comparisons=ranks, alpha=alpha, **RAW)
    _close(got, _finer_reference(tiny_split, tiny_x, TARGETS, ranks, alpha), rtol=1e-4)
    top = np.argmax(np.asarray(tiny_split.logits(tiny_x)), axis=-1)
    predicted = jaxcam.finer_cam(tiny_split, tiny_x, None, comparisons=ranks, alpha=alpha, **RAW)
    _close(predicted, _finer_reference(tiny_split, tiny_x, top, ranks, alpha), rtol=1e-4)


def test_finer_cam_runs_any_gradient_method(tiny_split, tiny_x):
    plain = jaxcam.finer_cam(tiny_split, tiny_x, TARGETS, method="layer_cam", **RAW)
    a = _activations(tiny_split, tiny_x)
    assert plain.shape == a.shape[:3] and np.abs(np.asarray(plain)).max() > 0
    with pytest.raises(ValueError, match="gradient method"):
        jaxcam.finer_cam(tiny_split, tiny_x, 1, method="score_cam")
    with pytest.raises(ValueError, match="comparisons must be ranks 1..4"):
        jaxcam.finer_cam(tiny_split, tiny_x, 1, comparisons=(1, 5))
    with pytest.raises(ValueError, match="not a callable"):
        jaxcam.finer_cam(tiny_split, tiny_x, lambda s: s[:, 0])


# --- several layers

def _two_cuts():
    """The tiny network cut after its first and after its second convolution (8 x 8)."""
    v = tiny_variables()
    first = jaxcam.Split(
        variables=v, features=lambda v, x: jax.nn.relu(_conv(x, v["k1"], 2)),
        head=lambda v, a: tiny_head(v, jax.nn.relu(_conv(a, v["k2"]))), layer="k1")
    second = jaxcam.Split(
        variables=v, features=lambda v, x: jax.nn.relu(_conv(jax.nn.relu(_conv(x, v["k1"], 2)),
                                                             v["k2"])),
        head=tiny_head, layer="k2")
    return first, second


def _resize(maps, size):
    """OpenCV's bilinear resize (half-pixel centres), the independent upsampler."""
    return np.stack([cv2.resize(m, size[::-1], interpolation=cv2.INTER_LINEAR) for m in maps])


@pytest.mark.parametrize("fuse, rule", [
    ("mean", lambda m1, m2: (m1 + m2) / 2),
    ("max", np.maximum),
    ("layercam", np.maximum),
])
def test_fusion_by_hand(fuse, rule, tiny_x):
    """Each layer's map normalised at its own resolution (and for "layercam" scaled to
    tanh(2 M) there), resized to the input, fused, normalised again."""
    first, second = _two_cuts()
    scale = np.tanh if fuse == "layercam" else (lambda v: v / 2)
    m1, m2 = (_resize(scale(2 * np.asarray(jaxcam.layer_cam(s, tiny_x, TARGETS, upsample=False),
                                           np.float64)), (16, 16))
              for s in (first, second))
    fused = jaxcam.layer_cam(first, tiny_x, TARGETS, layers=[first, second], fuse=fuse)
    _close(fused, _normalize(rule(m1, m2)), rtol=1e-4)


def test_one_layer_in_the_list_is_that_layer_alone(tiny_x):
    first, second = _two_cuts()
    for name in ("grad_cam", "xgrad_cam", "score_cam", "eigen_cam"):
        f = getattr(jaxcam, name)
        np.testing.assert_array_equal(f(first, tiny_x, TARGETS, layers=[second]),
                                      f(second, tiny_x, TARGETS))
        np.testing.assert_array_equal(f(second, tiny_x, TARGETS, layers=["k2"]),
                                      f(second, tiny_x, TARGETS))


def test_zoo_layers_by_name_and_resolutions():
    split = jaxcam.models.load("resnet18", layer="layer4", weights="random")
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    t = np.array([3, 8])
    at3 = split.at("layer3")
    np.testing.assert_array_equal(
        jaxcam.grad_cam(at3, x, t),
        jaxcam.grad_cam(jaxcam.models.load("resnet18", layer="layer3", weights="random"), x, t))
    np.testing.assert_array_equal(jaxcam.grad_cam(split, x, t, layers=["layer4"]),
                                  jaxcam.grad_cam(split, x, t))
    # at the layers' own resolutions (4 x 4 and 2 x 2), fused at the larger one: the 2 x 2
    # map is resized bilinearly (OpenCV's kernel as the independent upsampler)
    m3 = np.asarray(jaxcam.grad_cam(at3, x, t, upsample=False), np.float64)
    m4 = np.asarray(jaxcam.grad_cam(split, x, t, upsample=False), np.float64)
    m4_up = np.stack([cv2.resize(m, (4, 4), interpolation=cv2.INTER_LINEAR) for m in m4])
    fused = jaxcam.grad_cam(split, x, t, layers=["layer3", "layer4"], fuse="max",
                            upsample=False)
    assert fused.shape == (2, 4, 4)
    _close(fused, _normalize(np.maximum(m3, m4_up)))


def test_layer_errors(tiny_split, tiny_x):
    with pytest.raises(ValueError, match="cannot be re-cut at layer 'k1'.*Split objects"):
        jaxcam.grad_cam(tiny_split, tiny_x, 1, layers=["k1"])
    with pytest.raises(ValueError, match="layers is empty"):
        jaxcam.grad_cam(tiny_split, tiny_x, 1, layers=[])
    with pytest.raises(TypeError, match="layer names"):
        jaxcam.grad_cam(tiny_split, tiny_x, 1, layers=[3])
    with pytest.raises(ValueError, match="unknown fuse 'sum'"):
        jaxcam.grad_cam(tiny_split, tiny_x, 1, layers=[tiny_split], fuse="sum")
    with pytest.raises(ValueError, match="unknown layer of resnet18 'layer5'"):
        jaxcam.models.load("resnet18", weights="random").at("layer5")
    with pytest.raises(ValueError, match="input gradients"):
        jaxcam.guided_grad_cam(tiny_split, tiny_x, 1, layers=[tiny_split])


# --- test-time augmentation

def test_identity_augmentation_alone_is_no_smoothing(tiny_split, tiny_x):
    for name in ("grad_cam", "layer_cam", "ablation_cam"):
        f = getattr(jaxcam, name)
        np.testing.assert_array_equal(
            f(tiny_split, tiny_x, TARGETS, augmentations=[jaxcam.Augment()]),
            f(tiny_split, tiny_x, TARGETS))


def test_augmentations_by_hand(tiny_split, tiny_x):
    """Each copy's map mapped back to the input's frame, averaged, normalised; the class
    is the CLEAN image's prediction for every copy."""
    top = np.argmax(np.asarray(tiny_split.logits(tiny_x)), axis=-1)
    copies = []
    for flip in (False, True):
        for m in (0.9, 1.0, 1.1):
            xa = (tiny_x[:, :, ::-1] if flip else tiny_x) * m
            maps = np.asarray(jaxcam.grad_cam(tiny_split, xa, top), np.float64)
            copies.append(maps[..., ::-1] if flip else maps)
    got = jaxcam.grad_cam(tiny_split, tiny_x, None, aug_smooth=True)
    _close(got, _normalize(np.mean(copies, axis=0)))
    assert len(jaxcam.augmentations()) == 6
    flip_only = jaxcam.grad_cam(tiny_split, tiny_x, TARGETS,
                                augmentations=jaxcam.augmentations(multiply=(1.0,)))
    flipped = np.asarray(jaxcam.grad_cam(tiny_split, tiny_x[:, :, ::-1], TARGETS))[..., ::-1]
    _close(flip_only, _normalize((np.asarray(jaxcam.grad_cam(tiny_split, tiny_x, TARGETS))
                                  + flipped) / 2))
    with pytest.raises(TypeError, match="jaxcam.Augment"):
        jaxcam.grad_cam(tiny_split, tiny_x, 1, augmentations=[(True, 1.0)])


# --- noise smoothing for every gradient method

GRADIENT = [n for n in jaxcam.available_methods()     # those that draw no noise of their own
            if jaxcam.method_info(n).kind == "gradient" and "key" not in jaxcam.method_info(n).needs]


@pytest.mark.parametrize("name", GRADIENT)
def test_noise_smoothing_applies_to_every_gradient_method(name, tiny_x):
    """Without noise every copy is the image itself: smoothing changes nothing; with
    noise, the map changes (a head with a ReLU, whose gradient depends on A)."""
    tiny_split, _ = _two_cuts()
    if name == "cam":
        pytest.skip("CAM needs a global-average-pool + linear head")
    smooth = jaxcam.smoothed(name)
    plain = getattr(jaxcam, name)(tiny_split, tiny_x, TARGETS, **RAW)
    quiet = smooth(tiny_split, tiny_x, TARGETS, key=jax.random.key(0), n_samples=2,
                   noise=0.0, **RAW)
    np.testing.assert_allclose(quiet, plain, rtol=1e-5, atol=1e-6 * np.abs(plain).max())
    noisy = smooth(tiny_split, tiny_x, TARGETS, key=jax.random.key(0), n_samples=2,
                   noise=0.5, **RAW)
    assert np.abs(np.asarray(noisy) - np.asarray(plain)).max() > 1e-3 * np.abs(plain).max()


def test_noise_smoothing_refuses_methods_without_head_derivatives():
    for name in ("eigen_cam", "ablation_cam", "score_cam"):
        with pytest.raises(ValueError, match="noise smoothing averages head derivatives"):
            jaxcam.smoothed(name)
