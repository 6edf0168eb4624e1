"""Per-method checks of the gradient methods (the contract every method shares is in
tests/test_registry.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from conftest import tiny_features, tiny_head, tiny_variables


def test_guided_relu_rule():
    x = jnp.array([-1.0, 0.5, 2.0, 7.0, 3.0])
    g = jnp.array([1.0, 1.0, -1.0, 1.0, 2.0])
    _, vjp = jax.vjp(jaxcam.guided_relu, x)
    np.testing.assert_array_equal(vjp(g)[0], [0.0, 1.0, 0.0, 1.0, 2.0])
    _, vjp6 = jax.vjp(lambda x: jaxcam.guided_relu(x, 6.0), x)
    np.testing.assert_array_equal(vjp6(g)[0], [0.0, 1.0, 0.0, 0.0, 2.0])  # ReLU6: 7 is clipped
    np.testing.assert_array_equal(jaxcam.guided_relu(x, 6.0), jnp.clip(x, 0, 6))


def test_guided_backprop_equals_hand_written_reference():
    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(12, 8)).astype(np.float32)
    w2 = rng.normal(size=(8, 4)).astype(np.float32)

    def head(v, a):
        return a.reshape(a.shape[0], -1) @ v["w2"]

    def features(v, x, relu=jax.nn.relu):
        return relu(x.reshape(x.shape[0], -1) @ v["w1"]).reshape(-1, 1, 1, 8)

    split = jaxcam.Split(variables={"w1": w1, "w2": w2}, features=features, head=head,
                         guided=lambda v, x: head(v, features(v, x, jaxcam.guided_relu)))
    x = rng.normal(size=(2, 2, 2, 3)).astype(np.float32)
    got = jaxcam.guided_backprop(split, x, np.array([1, 3]))
    for b, c in enumerate([1, 3]):
        z = x[b].reshape(-1) @ w1
        r = w2[:, c]                               # dY/dh, h = relu(z)
        expected = w1 @ (r * ((z > 0) & (r > 0)))  # pass only where input and gradient > 0
        np.testing.assert_allclose(got[b].reshape(-1), expected, rtol=1e-5, atol=1e-6)


def test_guided_grad_cam_is_cam_times_guided_gradients(tiny_split, tiny_x):
    t = np.array([0, 1, 2])
    ggc = jaxcam.guided_grad_cam(tiny_split, tiny_x, t)
    expected = jaxcam.grad_cam(tiny_split, tiny_x, t)[..., None] * jaxcam.guided_backprop(
        tiny_split, tiny_x, t)
    assert ggc.shape == tiny_x.shape
    np.testing.assert_allclose(ggc, expected, rtol=1e-5, atol=1e-7)


def test_zoo_guided_backprop_differs_from_plain_gradient():
    split = jaxcam.models.load("resnet18", weights="random")
    x = jax.random.normal(jax.random.key(2), (1, 32, 32, 3))
    guided = jaxcam.guided_backprop(split, x, 3)
    plain = jax.grad(lambda x: split.logits(x)[0, 3])(x)
    assert guided.shape == x.shape and np.all(np.isfinite(guided))
    assert not np.allclose(guided, plain, atol=1e-6)


def test_cam_equals_class_weights_times_activations(tiny_split, tiny_x):
    raw = jaxcam.cam(tiny_split, tiny_x, np.array([1, 2, 3]), upsample=False, normalize=False)
    a = tiny_split.activations(tiny_x)
    w = tiny_split.variables["w"]
    for b, c in enumerate([1, 2, 3]):
        np.testing.assert_allclose(raw[b], np.einsum("hwk,k->hw", a[b], w[:, c]),
                                   rtol=1e-5, atol=1e-6)


def test_grad_cam_equals_definition(tiny_split, tiny_x):
    raw = jaxcam.grad_cam(tiny_split, tiny_x, 2, upsample=False, normalize=False)
    a = tiny_split.activations(tiny_x)
    g = jax.grad(lambda a: tiny_split.logits_from(a)[:, 2].sum())(a)
    expected = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a, g.mean(axis=(1, 2))))
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-6)


def test_counterfactual_is_the_negated_score(tiny_split, tiny_x):
    negated = tiny_split.replace(head=lambda v, a: -tiny_head(v, a))
    np.testing.assert_allclose(jaxcam.grad_cam(tiny_split, tiny_x, 1, counterfactual=True),
                               jaxcam.grad_cam(negated, tiny_x, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("link", ["logit", "exp", "softmax", "log_softmax"])
def test_links_follow_their_definition(link, tiny_split, tiny_x):
    fns = {"logit": lambda s: s, "exp": jnp.exp, "softmax": jax.nn.softmax,
           "log_softmax": jax.nn.log_softmax}
    raw = jaxcam.grad_cam(tiny_split, tiny_x, 2, link=link, upsample=False, normalize=False)
    a = tiny_split.activations(tiny_x)
    g = jax.grad(lambda a: fns[link](tiny_split.logits_from(a))[:, 2].sum())(a)
    if link == "exp":  # exp(S - S0): the same gradient divided by exp(S0) > 0
        g = g / jnp.exp(tiny_split.logits_from(a)[:, 2])[:, None, None, None]
    expected = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a, g.mean(axis=(1, 2))))
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-6)


def test_callable_target(tiny_split, tiny_x):
    by_class = jaxcam.grad_cam(tiny_split, tiny_x, 3)
    by_callable = jaxcam.grad_cam(tiny_split, tiny_x, lambda logits: logits[:, 3])
    np.testing.assert_allclose(by_callable, by_class, rtol=1e-5, atol=1e-6)
    contrast = jaxcam.grad_cam(tiny_split, tiny_x, lambda s: s[:, 3] - s[:, 0])
    assert contrast.shape == by_class.shape and not np.allclose(contrast, by_class)
    with pytest.raises(ValueError, match="callable target"):
        jaxcam.grad_cam(tiny_split, tiny_x, lambda s: s[:, 3], link="softmax")


def test_all_zero_map_stays_zero_not_nan(tiny_x):
    # A head whose score only falls as activations rise: Grad-CAM weights are all negative
    # and A >= 0, so the rectified map is identically zero.
    split = jaxcam.Split(variables=tiny_variables(), features=tiny_features,
                         head=lambda v, a: -(a.mean((1, 2)) @ jnp.abs(v["w"])))
    for f in (jaxcam.grad_cam, jaxcam.grad_cam_pp):
        maps = f(split, tiny_x, 0)
        assert np.all(np.isfinite(maps)) and np.all(maps == 0)


def test_clear_errors(tiny_split, tiny_x):
    with pytest.raises(ValueError, match=r"class 7 is out of range.*5 classes.*\[0, 4\]"):
        jaxcam.grad_cam(tiny_split, tiny_x, 7)
    with pytest.raises(ValueError, match=r"class -1 is out of range"):
        jaxcam.grad_cam_pp(tiny_split, tiny_x, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=r"shape \(2,\); expected \(3,\)"):
        jaxcam.grad_cam(tiny_split, tiny_x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"x\[None\]"):
        jaxcam.grad_cam(tiny_split, tiny_x[0], 0)
    with pytest.raises(ValueError, match="preprocess"):
        jaxcam.grad_cam(tiny_split, np.zeros((1, 16, 16, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="NaN"):
        jaxcam.grad_cam(tiny_split, tiny_x.at[0, 0, 0, 0].set(jnp.nan), 0)
    with pytest.raises(ValueError, match="unknown link 'sigmoid'"):
        jaxcam.grad_cam(tiny_split, tiny_x, 0, link="sigmoid")
    with pytest.raises(ValueError, match="unknown derivatives"):
        jaxcam.grad_cam_pp(tiny_split, tiny_x, 0, derivatives="taylor")
    with pytest.raises(TypeError, match="jaxcam.Split"):
        jaxcam.grad_cam(lambda x: x, tiny_x, 0)
    plain = tiny_split.replace(guided=None, gap_linear_head=False)
    with pytest.raises(ValueError, match="guided_relu"):
        jaxcam.guided_backprop(plain, tiny_x, 0)
    with pytest.raises(ValueError, match="global average pooling"):
        jaxcam.cam(plain, tiny_x, 0)


def test_cam_refuses_vgg_and_accepts_resnet_and_lite0():
    with pytest.raises(ValueError, match="global average pooling"):
        jaxcam.cam(jaxcam.models.load("vgg11", weights="random"), jnp.zeros((1, 32, 32, 3)), 0)
    assert jaxcam.models.load("resnet18", weights="random").gap_linear_head
    assert jaxcam.models.load("efficientnet_lite0", weights="random").gap_linear_head
    assert not jaxcam.models.load("resnet18", weights="random", layer="layer3").gap_linear_head


def test_lite0_maps_point_at_the_evidence(assets):
    """On a real photo, hiding the 20 % of pixels the map ranks highest lowers the
    'espresso' probability far more than hiding the 20 % it ranks lowest."""
    split = jaxcam.models.load("efficientnet_lite0")
    x = split.preprocess(jaxcam.viz.read_image(assets / "coffee.png"))[None]
    p0 = float(jax.nn.softmax(split.logits(x))[0, 967])
    for f in (jaxcam.grad_cam, jaxcam.grad_cam_pp):
        m = np.asarray(f(split, x, 967))[0]
        drop = {}
        for name, hidden in (("top", m >= np.quantile(m, 0.8)), ("bottom", m <= np.quantile(m, 0.2))):
            masked = np.where(hidden[None, :, :, None], 0.0, x)  # 0 is mid-grey after (x-127)/128
            drop[name] = p0 - float(jax.nn.softmax(split.logits(masked))[0, 967])
        assert drop["top"] > 0.3 and drop["top"] > 5 * max(drop["bottom"], 0.01), drop
