"""Exact higher-order derivatives: finite differences, engine agreement, Grad-CAM++ exact
versus closed form, Smooth Grad-CAM++, peer variants, the comparison."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam import weighting as W


# --- small smooth heads (float64) ---------------------------------------------------

def _conv(a, k):
    return jax.lax.conv_general_dilated(a, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def gelu_conv_head(v, a):
    h = jax.nn.gelu(_conv(a, v["k"]), approximate=False)
    return h.mean(axis=(1, 2)) @ v["w"]


def softplus_mlp_head(v, a):
    h = jax.nn.softplus(a.reshape(a.shape[0], -1) @ v["w1"])
    return h @ v["w2"]


def _smooth_variables(rng):
    return {"k": rng.normal(size=(3, 3, 2, 4)), "w": rng.normal(size=(4, 5)),
            "w1": rng.normal(size=(18, 6)) * 0.5, "w2": rng.normal(size=(6, 5))}


LINKS = {"exp": lambda s, s0: jnp.exp(s - s0), "softmax": lambda s, s0: jax.nn.softmax(s),
         "log_softmax": lambda s, s0: jax.nn.log_softmax(s)}


def _fd_pure(phi, h):
    """Central differences of phi(t) at 0 for orders 1-3, Richardson-extrapolated."""
    def once(h):
        p = {k: phi(k * h) for k in (-2, -1, 0, 1, 2)}
        return np.array([(p[1] - p[-1]) / (2 * h),
                         (p[1] - 2 * p[0] + p[-1]) / h**2,
                         (p[2] - 2 * p[1] + 2 * p[-1] - p[-2]) / (2 * h**3)])
    return (4 * once(h / 2) - once(h)) / 3


@pytest.mark.parametrize("head, link", [(gelu_conv_head, "exp"), (softplus_mlp_head, "exp"),
                                        (gelu_conv_head, "softmax"),
                                        (softplus_mlp_head, "log_softmax")])
def test_pure_derivatives_match_finite_differences(x64, head, link):
    rng = np.random.default_rng(0)
    v = _smooth_variables(rng)
    a = rng.normal(size=(3, 3, 2))
    c = 2
    s0 = head(v, a[None])[0, c]
    score = lambda a: LINKS[link](head(v, a[None])[0], s0)[c]  # noqa: E731
    exact = np.stack(jaxcam.pure_derivatives(score, jnp.asarray(a), chunk_size=5))
    assert exact.dtype == np.float64
    fd = np.zeros_like(exact)
    for i in np.ndindex(a.shape):
        e = np.zeros_like(a)
        e[i] = 1.0
        fd[(slice(None), *i)] = _fd_pure(lambda t: float(score(jnp.asarray(a + t * e))), 1e-2)
    for k in range(3):
        err = np.abs(exact[k] - fd[k]).max() / np.abs(fd[k]).max()
        assert err <= 1e-6, (k + 1, err)
    # The closed form is only an approximation on a smooth head.
    approx = np.stack(jaxcam.pure_derivatives(score, jnp.asarray(a), derivatives="approx"))
    assert np.abs(approx[1] - exact[1]).max() > 1e-2 * np.abs(exact[1]).max()


def test_pure_derivatives_hand_computed():
    a = jnp.array([[0.3, -1.2], [2.0, 0.5]])
    d1, d2, d3 = jaxcam.pure_derivatives(lambda a: jnp.sum(a**4) + a[0, 0] * a[1, 1], a)
    np.testing.assert_allclose(d1, 4 * a**3 + jnp.array([[0.5, 0], [0, 0.3]]), rtol=1e-6)
    np.testing.assert_allclose(d2, 12 * a**2, rtol=1e-6)   # the mixed term has no pure part
    np.testing.assert_allclose(d3, 24 * a, rtol=1e-6)
    (g,) = jaxcam.pure_derivatives(lambda a: jnp.sum(jnp.sin(a)), a, order=1, chunk_size=3)
    np.testing.assert_allclose(g, jnp.cos(a), rtol=1e-6)


# --- the two exact engines on zoo heads -------------------------------------------------

def _derivs(split, x, target, link, engine):
    f = jax.jit(lambda s, a: jaxcam.derivatives.head_derivatives(
        s, a, target, link=link, order=3, derivatives="exact", engine=engine, chunk_size=256))
    return f(split, split.activations(x))


def _close(a, b, rtol):
    scale = float(np.abs(b).max())
    assert scale > 0
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("name, layer, size", [
    ("resnet18", "layer4", 64), ("resnet18", "layer4.0", 32),
    ("vgg16", "features.29", 32),              # max-pool in the head
    ("efficientnet_lite0", "_blocks.15", 64),
])
def test_generic_and_linearised_engines_agree(name, layer, size):
    split = jaxcam.models.load(name, layer=layer, weights="random", seed=1)
    assert split.piecewise_linear_head
    x = jax.random.normal(jax.random.key(3), (1, size, size, 3))
    for link in ("exp", "softmax", "log_softmax"):
        generic = _derivs(split, x, 7, link, "generic")
        linear = _derivs(split, x, 7, link, "linearised")
        for k in range(3):
            _close(linear[k], generic[k], 1e-5)


@pytest.mark.parametrize("name, layer", [("resnet18", "layer4"), ("resnet50", "layer3"),
                                         ("vgg16", "features.29"),
                                         ("efficientnet_lite0", "_swish"),
                                         ("efficientnet_lite0", "_blocks.14")])
def test_exact_equals_closed_form_for_exp_on_piecewise_linear_heads(name, layer):
    split = jaxcam.models.load(name, layer=layer, weights="random")
    x = jax.random.normal(jax.random.key(4), (2, 64, 64, 3))
    exact = _derivs(split, x, np.array([1, 5]), "exp", "linearised")
    approx = jaxcam.derivatives.head_derivatives(split, split.activations(x), np.array([1, 5]),
                                                 link="exp", derivatives="approx")
    for k in range(3):
        _close(exact[k], approx[k], 1e-5)
    np.testing.assert_allclose(
        jaxcam.grad_cam_pp(split, x, np.array([1, 5]), derivatives="exact"),
        jaxcam.grad_cam_pp(split, x, np.array([1, 5])), atol=1e-4)


def test_logit_link_has_no_curvature_and_warns_once():
    split = jaxcam.models.load("resnet18", layer="layer3", weights="random")
    x = jax.random.normal(jax.random.key(5), (2, 64, 64, 3))
    d1, d2, d3 = _derivs(split, x, 0, "logit", "linearised")
    assert np.abs(d1).max() > 0 and np.all(d2 == 0) and np.all(d3 == 0)
    with pytest.warns(UserWarning, match=r"D2 = D3 = 0.*link='exp'.*'softmax'.*smooth head"):
        maps = jaxcam.grad_cam_pp(split, x, 0, link="logit", derivatives="exact")
    assert np.all(np.isfinite(maps)) and np.all(maps == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxcam.grad_cam_pp(split, x, 1, link="logit", derivatives="exact")  # once only


def test_softmax_exact_differs_from_closed_form_and_matches_generic():
    split = jaxcam.models.load("resnet18", layer="layer4.1", weights="random")
    x = jax.random.normal(jax.random.key(6), (1, 64, 64, 3))
    cmp = jaxcam.compare_derivatives(split, x, 3, link="softmax")
    assert float(cmp.max_alpha_diff[0]) > 1e-3
    generic = jaxcam.grad_cam_pp(split, x, 3, link="softmax", derivatives="exact",
                                 engine="generic", upsample=False, normalize=False)
    linear = jaxcam.grad_cam_pp(split, x, 3, link="softmax", derivatives="exact",
                                upsample=False, normalize=False)
    _close(generic, linear, 1e-5)


def test_smooth_head_uses_the_generic_engine():
    split = jaxcam.models.load("resnet18", layer="layer4.0", weights="random",
                               activation="softplus")
    x = jax.random.normal(jax.random.key(7), (1, 32, 32, 3))
    auto = jaxcam.grad_cam_pp(split, x, 2, derivatives="exact", upsample=False, normalize=False)
    generic = jaxcam.grad_cam_pp(split, x, 2, derivatives="exact", engine="generic",
                                 upsample=False, normalize=False)
    _close(auto, generic, 1e-6)  # two compilations: equal up to rounding
    with pytest.raises(ValueError, match="piecewise-linear"):
        jaxcam.grad_cam_pp(split, x, 2, derivatives="exact", engine="linearised")
    cmp = jaxcam.compare_derivatives(split, x, 2, link="exp")
    assert float(cmp.max_alpha_diff[0]) > 1e-3  # the closed form is wrong on a smooth head


def test_exact_grad_cam_pp_in_float64(x64, tiny_split, tiny_x):
    split = jaxcam.models.load("resnet18", layer="layer4.1", weights="random").astype(jnp.float64)
    x = jax.random.normal(jax.random.key(8), (1, 64, 64, 3), jnp.float64)
    for engine in ("linearised", "generic"):
        maps = jaxcam.grad_cam_pp(split, x, 4, link="softmax", derivatives="exact", engine=engine)
        assert maps.dtype == jnp.float64 and np.all(np.isfinite(maps)) and maps.max() == 1.0
    smooth = tiny_split.replace(head=lambda v, a: jax.nn.gelu(a).mean((1, 2)) @ v["w"])
    smooth = smooth.astype(jnp.float64)
    maps = jaxcam.smooth_grad_cam_pp(smooth, tiny_x.astype(jnp.float64), 1, key=jax.random.key(0),
                                     n_samples=3, derivatives="exact", link="softmax")
    assert maps.dtype == jnp.float64 and np.all(np.isfinite(maps))


# --- Smooth Grad-CAM++ -----------------------------------------------------------------

@pytest.fixture(scope="module")
def deep_head():
    return jaxcam.models.load("resnet18", layer="layer3", weights="random")


@pytest.mark.parametrize("layer, size, derivatives, link", [
    ("layer3", 48, "approx", "exp"), ("layer4.0", 32, "exact", "softmax")])
def test_smooth_with_clean_samples_is_grad_cam_pp(layer, size, derivatives, link):
    split = jaxcam.models.load("resnet18", layer=layer, weights="random")
    x = jax.random.normal(jax.random.key(9), (2, size, size, 3))
    t = np.array([3, 8])
    options = dict(link=link, derivatives=derivatives, upsample=False, normalize=False)
    plain = jaxcam.grad_cam_pp(split, x, t, **options)
    assert np.abs(plain).max() > 0
    for n in (1, 3):
        smooth = jaxcam.smooth_grad_cam_pp(split, x, t, key=jax.random.key(0), n_samples=n,
                                           noise=0.0, **options)
        _close(smooth, plain, 1e-4)


def test_smooth_is_a_function_of_the_key(deep_head):
    x = jax.random.normal(jax.random.key(10), (1, 48, 48, 3))
    f = lambda key, chunk: jaxcam.smooth_grad_cam_pp(  # noqa: E731
        deep_head, x, 1, key=key, n_samples=5, chunk_size=chunk)
    same = f(jax.random.key(1), 5)
    np.testing.assert_array_equal(same, f(jax.random.key(1), 5))
    np.testing.assert_allclose(f(jax.random.key(1), 2), same, atol=1e-5)  # chunking: same map
    assert np.abs(f(jax.random.key(2), 5) - same).max() > 1e-3


def _relu_head_split(tiny_split):
    """The tiny split with a head whose gradient varies with A (a ReLU before the pooling),
    so the noisy copies' derivatives differ from each other and between positions."""
    head = lambda v, a: jax.nn.relu(a - 0.3).mean(axis=(1, 2)) @ v["w"]  # noqa: E731
    return tiny_split.replace(head=head, gap_linear_head=False)


# n = 4 noisy copies: chunk_size 1 (4 steps), 2, 3 (padded to 6) and 4 (all at once).
@pytest.mark.parametrize("variant, settings, chunks", [
    ("paper", (True, False), (1, 2, 3, 4)), ("torchcam", (False,), (3, 4))])
def test_smooth_map_depends_on_its_own_image_only(tiny_split, tiny_x, variant, settings,
                                                  chunks):
    """The map of an image is the same in any batch, at any position, for any
    chunk_size, whatever jax_threefry_partitionable is set to (each setting draws other
    noise, so both are checked). Different shapes are different compiled programs: equal
    up to rounding."""
    split = _relu_head_split(tiny_split)
    n, t = 4, np.array([1, 3, 0])
    order = np.array([2, 0, 1])

    def f(x, t, chunk):
        return np.asarray(jaxcam.smooth_grad_cam_pp(
            split, x, t, key=jax.random.key(5), n_samples=n, noise=0.2, variant=variant,
            chunk_size=chunk, upsample=False, normalize=False))

    by_setting = {}
    for partitionable in settings:
        with jax.threefry_partitionable(partitionable):
            # each image alone, at one chunking: what every batch must reproduce
            alone = np.concatenate([f(tiny_x[b:b + 1], t[b:b + 1], n) for b in range(len(t))])
            scale = np.abs(alone).max(axis=(1, 2))
            assert np.all(scale > 0)
            close = dict(rtol=1e-5, atol=1e-6 * scale.max())
            for chunk in chunks:
                np.testing.assert_allclose(f(tiny_x, t, chunk), alone, **close)
            np.testing.assert_allclose(f(tiny_x[order], t[order], chunks[0]), alone[order],
                                       **close)
            by_setting[partitionable] = alone
    if len(by_setting) == 2:
        differ = np.abs(by_setting[True] - by_setting[False]).max(axis=(1, 2))
        assert np.all(differ > 1e-3 * np.abs(by_setting[True]).max(axis=(1, 2))), differ


@pytest.mark.parametrize("variant", ["paper", "torchcam", "renormalized"])
@pytest.mark.parametrize("chunk_size", [1, 4])
def test_smooth_golden_against_the_formula(deep_head, variant, chunk_size):
    # By hand: copy i of image b = x_b + sigma_b * N(0, 1), the standard normal noise
    # drawn for ONE image with jax.random.split(key, n)[i - 1] (the same for every image),
    # sigma_b = 0.2 * (max - min) of image b. With Y = exp(S) the closed form at copy i
    # is D_k = exp(S_i) g_i^k; D1..D3 are averaged over the copies; A (and ReLU(D1)) come
    # from the clean image. torch-cam's SmoothGradCAMpp: g^k averaged with equal weights,
    # alpha = mean g^2 / (2 mean g^2 + sum_ab A_ab mean g^3_ab) with the clean A, and
    # ReLU(g) and the map's A from the last copy. Normalised maps: a common factor
    # exp(S_ref) drops out. The head (resnet18 layer4) is not linear in A, so g differs
    # between the copies and the positions.
    n, c, key = 3, 1, jax.random.key(3)
    x = jax.random.normal(jax.random.key(4), (2, 48, 48, 3))
    x = x * jnp.array([1.0, 0.5])[:, None, None, None]        # two different value ranges
    split = deep_head
    sigma = 0.2 * (x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True))
    score = lambda a: split.logits_from(a)[:, c]  # noqa: E731
    copies, s_ref = [], None
    for k in jax.random.split(key, n):
        a = split.activations(x + sigma * jax.random.normal(k, x.shape[1:], x.dtype)[None])
        g = jax.grad(lambda a: score(a).sum())(a)
        s_ref = score(a) if s_ref is None else s_ref
        e = jnp.exp(score(a) - s_ref) if variant != "torchcam" else jnp.ones(len(x))
        e = e[:, None, None, None]
        copies.append((a, e * g, e * g**2, e * g**3))
    d1, d2, d3 = (sum(copy[k] for copy in copies) / n for k in (1, 2, 3))
    a = split.activations(x)
    if variant == "torchcam":
        den = 2 * d2 + jnp.sum(a * d3, axis=(1, 2), keepdims=True)
        alpha = jnp.where(d2 > 0, d2 / jnp.where(d2 > 0, den, 1.0), 0.0)
        a_last, g_last = copies[-1][0], copies[-1][1]
        w = jnp.sum(alpha * jnp.maximum(g_last, 0.0), axis=(1, 2))
        expected = W.normalize(jnp.maximum(jnp.einsum("bhwk,bk->bhw", a_last, w), 0.0))
    else:
        expected = W.normalize(W.weighted_map(a, W.grad_cam_pp_weights(a, d1, d2, d3,
                                                                       variant=variant)))
    maps = jaxcam.smooth_grad_cam_pp(split, x, c, key=key, n_samples=n, noise=0.2,
                                     variant=variant, chunk_size=chunk_size,
                                     upsample=False)
    assert np.all(np.abs(expected).max(axis=(1, 2)) > 0)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5)
    if variant == "paper":  # the copies' scores differ, so equal weights would not do
        s = np.array([score(copy[0]) for copy in copies])
        assert np.ptp(s, axis=0).min() > 0.05, s


def test_smooth_devices_errors(tiny_split, tiny_x):
    device = jax.devices()[0]
    options = dict(key=jax.random.key(0), n_samples=2)
    for bad in ([], ["cpu"]):
        with pytest.raises(TypeError, match="devices must be a non-empty sequence"):
            jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, devices=bad, **options)
    with pytest.raises(ValueError, match="more than once"):
        jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, devices=[device, device], **options)
    np.testing.assert_allclose(
        jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, devices=[device], **options),
        jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, **options), rtol=1e-6, atol=1e-7)


def test_smooth_errors(tiny_split, tiny_x):
    with pytest.raises(ValueError, match="n_samples"):
        jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, key=jax.random.key(0), n_samples=0)
    with pytest.raises(ValueError, match="noise"):
        jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, key=jax.random.key(0), noise=-1)
    with pytest.raises(TypeError):
        jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x)  # the key is required


# --- peer variants (golden) -------------------------------------------------------------

A = jnp.stack([jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[2.0, 1.0], [1.0, 0.0]])], -1)
G = jnp.stack([jnp.array([[1.0, 0.0], [2.0, -1.0]]), jnp.array([[0.5, 0.5], [-1.0, 1.0]])], -1)


def test_variant_torchcam_is_what_torchcam_grad_cam_pp_returns():
    # torch-cam 0.5.0's GradCAMpp divides a copy, so its alpha is g^2 (tests/
    # test_oracle_torchcam.py checks this against torch-cam itself).
    alpha = W.grad_cam_pp_alphas(A, G**2, G**3, eps=1.0, variant="torchcam")
    np.testing.assert_array_equal(alpha, G**2)                    # no denominator: eps unused
    w = W.grad_cam_pp_weights(A, G, G**2, G**3, variant="torchcam")
    # sum_ij g^2 ReLU(g): channel 0: 1*1 + 4*2 = 9; channel 1: .25*.5 + .25*.5 + 1*1 = 1.25
    np.testing.assert_allclose(w, [9.0, 1.25], rtol=1e-6)


def test_mixed_index_alphas():
    # torch-cam's SmoothGradCAMpp denominator: 2 D2_ij + sum_ab A_ab D3_ab + eps
    alpha = W.mixed_index_alphas(A, G**2, G**3)
    # channel 0: sum_ab A g^3 = 1*1 + 0 + 0 + 1*(-1) = 0, so alpha = g^2 / (2 g^2) = 1/2
    # (and 0 where g = 0)
    np.testing.assert_allclose(alpha[..., 0], [[0.5, 0.0], [0.5, 0.5]])
    # channel 1: sum_ab A g^3 = 2*.125 + 1*.125 + 1*(-1) + 0 = -0.625
    # g=.5: .25/(.5 - .625) = -2; g=-1: 1/(2 - .625); g=1: 1/(2 - .625)
    np.testing.assert_allclose(alpha[..., 1], [[-2.0, -2.0], [1 / 1.375, 1 / 1.375]], rtol=1e-6)
    # eps moves the denominator: channel 0, g=1: 1 / (2 + 0 + 0.5)
    np.testing.assert_allclose(W.mixed_index_alphas(A, G**2, G**3, eps=0.5)[0, 0, 0], 0.4,
                               rtol=1e-6)
    # a vanishing denominator gives 0, never NaN: channel 0 with D3 = -2 D2 / sum(A)
    zero = W.mixed_index_alphas(A, jnp.ones_like(A), jnp.full_like(A, -1.0))
    np.testing.assert_array_equal(zero[..., 0], np.zeros((2, 2)))  # 2 + 2 * (-1) = 0


def test_variant_renormalized_divides_by_the_channel_sum():
    alpha = W.grad_cam_pp_alphas(A, G**2, G**3, variant="renormalized")
    # paper alphas: channel 0 [[1/4, 0], [1/6, 0]] (sum 5/12); channel 1 [[1/4, 1/4], [-1/2, 1/6]]
    np.testing.assert_allclose(alpha[..., 0], np.array([[0.25, 0], [1 / 6, 0]]) / (5 / 12),
                               rtol=1e-6)
    np.testing.assert_allclose(alpha[..., 1], np.array([[0.25, 0.25], [-0.5, 1 / 6]]) / (1 / 6),
                               rtol=1e-5)


def test_variants_through_the_public_api(tiny_split, tiny_x):
    maps = {v: jaxcam.grad_cam_pp(tiny_split, tiny_x, 1, variant=v, upsample=False,
                                  normalize=False) for v in W.GRAD_CAM_PP_VARIANTS}
    a = tiny_split.activations(tiny_x)
    g = jax.grad(lambda a: tiny_split.logits_from(a)[:, 1].sum())(a)
    for v, m in maps.items():
        w = W.grad_cam_pp_weights(a, g, g**2, g**3, variant=v)
        np.testing.assert_allclose(m, W.weighted_map(a, w), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="unknown variant"):
        jaxcam.grad_cam_pp(tiny_split, tiny_x, 1, variant="keras")


# --- the comparison ---------------------------------------------------------------------


def test_compare_on_the_real_photo(assets):
    split = jaxcam.models.load("efficientnet_lite0")
    x = split.preprocess(jaxcam.viz.read_image(assets / "chelsea.png"))[None]
    same = jaxcam.compare_derivatives(split, x, 282, link="exp").summary()
    # Equal up to rounding, which may move a few pixels across the top-20 % threshold.
    assert same["spearman"][0] > 1 - 1e-6 and same["iou_top20"][0] > 0.99
    assert same["relative_l2"][0] < 1e-5 and same["max_alpha_diff"][0] < 1e-5
    soft = jaxcam.compare_derivatives(split, x, 282, link="softmax")
    s = soft.summary()
    assert s["max_alpha_diff"][0] > 0 and s["relative_l2"][0] > 0
    assert -1 <= s["spearman"][0] <= 1 and 0 <= s["iou_top20"][0] <= 1
    assert soft.maps_exact.shape == (1, 224, 224) and soft.alpha_exact.shape == (1, 7, 7, 1280)


def test_any_objective_through_the_full_jacobian():
    """A callable target takes the engine's general path (whole Jacobian, then a Taylor
    expansion of the objective along each column); softmax written by hand must match
    the softmax link (Jacobian moments), and both the generic engine."""
    split = jaxcam.models.load("resnet18", layer="layer4.0", weights="random")
    x = jax.random.normal(jax.random.key(11), (2, 32, 32, 3))
    options = dict(derivatives="exact", upsample=False, normalize=False)
    by_link = jaxcam.grad_cam_pp(split, x, 5, link="softmax", **options)
    by_hand = jaxcam.grad_cam_pp(split, x, lambda s: jax.nn.softmax(s)[:, 5], link="logit",
                                 **options)
    generic = jaxcam.grad_cam_pp(split, x, lambda s: jax.nn.softmax(s)[:, 5], link="logit",
                                 engine="generic", **options)
    _close(by_hand, by_link, 1e-5)
    _close(generic, by_link, 1e-5)
