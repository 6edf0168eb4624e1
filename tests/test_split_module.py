"""``jaxcam.split_module``: a user's own Flax model (linen or NNX) split at a named
submodule gives the same maps as a split written by hand, for every registered method
that applies (the guided ones need a guided forward pass, which a module split has not).

Where the submodule is not a cut (a residual bypasses it), the head recomputes the rest
from x and holds it fixed: the derivative is the one a PyTorch forward hook gives.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxcam
from test_registry import call

CLOSE = dict(rtol=2e-5, atol=2e-6)
METHODS = [n for n in jaxcam.available_methods()
           if "guided" not in jaxcam.method_info(n).needs]


def _x(seed=0, batch=2, size=16):
    return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


def assert_same_maps(split, hand, x, target, methods=METHODS):
    """Every method that applies (CAM: a pooled linear head) gives the same maps, and
    most of them are not all zero (a random net can make some maps vanish)."""
    nonzero = []
    for name in methods:
        if "gap_linear_head" in jaxcam.method_info(name).needs and not hand.gap_linear_head:
            continue
        got = call(name, split, x, target)
        want = call(name, hand, x, target)
        np.testing.assert_allclose(got, want, **CLOSE, err_msg=name)
        nonzero.append(np.abs(np.asarray(want)).max() > 0)
    assert sum(nonzero) > len(nonzero) // 2, nonzero


# --- (a) a small linen CNN written here

class SmallCNN(nn.Module):
    classes: int = 5

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv2")(x))
        return nn.Dense(self.classes, name="fc")(x.mean((1, 2)))


def _small_cnn():
    model = SmallCNN()
    variables = model.init(jax.random.key(1), _x())
    p = variables["params"]

    def features(v, x):
        x = nn.relu(nn.Conv(6, (3, 3)).apply({"params": v["params"]["conv1"]}, x))
        return nn.Conv(8, (3, 3), strides=2).apply({"params": v["params"]["conv2"]}, x)

    def head(v, a):
        return nn.Dense(5).apply({"params": v["params"]["fc"]}, nn.relu(a).mean((1, 2)))

    hand = jaxcam.Split(variables=variables, features=features, head=head, layer="conv2",
                        piecewise_linear_head=True)
    assert p["conv2"]["kernel"].shape == (3, 3, 6, 8)
    return model, variables, hand


def test_linen_cnn_equals_a_hand_written_split():
    model, variables, hand = _small_cnn()
    split = jaxcam.split_module(model, variables, "conv2", piecewise_linear_head=True)
    x = _x()
    np.testing.assert_allclose(split.activations(x), hand.activations(x), **CLOSE)
    np.testing.assert_allclose(split.logits(x), model.apply(variables, x), **CLOSE)
    assert_same_maps(split, hand, x, jnp.array([1, 3]))


def test_module_split_is_a_cut_under_jit():
    """The head of a cut never runs the trunk: its compiled program has only the
    head's convolution-free ops (ReLU, mean, dense)."""
    model, variables, _ = _small_cnn()
    split = jaxcam.split_module(model, variables, "conv2")
    x = _x()
    a = split.activations(x)
    hlo = jax.jit(lambda s, a: s.logits_from(a)).lower(split.given(x), a).as_text()
    assert "convolution" not in hlo
    hlo_full = jax.jit(lambda s, x: s.logits(x)).lower(split, x).as_text()
    assert "convolution" in hlo_full


def test_module_split_errors():
    model, variables, _ = _small_cnn()
    x = _x()
    with pytest.raises(ValueError, match=r"no submodule 'conv3'.*Did you mean 'conv2'"):
        jaxcam.grad_cam(jaxcam.split_module(model, variables, "conv3"), x)
    with pytest.raises(TypeError, match="linen model needs its variables"):
        jaxcam.split_module(model, None, "conv2")
    with pytest.raises(TypeError, match="flax.linen or flax.nnx Module"):
        jaxcam.split_module(lambda x: x, variables, "conv2")
    with pytest.raises(TypeError, match="TokenGrid"):
        jaxcam.split_module(model, variables, "conv2", reshape=(1, 14, 14))

    class Shared(nn.Module):
        @nn.compact
        def __call__(self, x):
            conv = nn.Conv(3, (3, 3), name="twice")
            return conv(conv(x)).mean((1, 2))

    shared = Shared()
    v = shared.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="called 2 times"):
        jaxcam.grad_cam(jaxcam.split_module(shared, v, "twice"), x)
    head_only = jaxcam.split_module(model, variables, "conv2")
    with pytest.raises(ValueError, match=r"needs the input x.*given\(x\)"):
        head_only.logits_from(head_only.activations(x))


def test_module_split_recuts_by_name():
    model, variables, _ = _small_cnn()
    split = jaxcam.split_module(model, variables, "conv2")
    other = split.at("conv1")
    assert other.layer == "conv1" and other.activations(_x()).shape == (2, 16, 16, 6)
    fused = jaxcam.grad_cam(split, _x(), 0, layers=["conv1", "conv2"])
    assert fused.shape == (2, 16, 16) and np.isfinite(np.asarray(fused)).all()


# --- (b) a linen ResNet in the style of flax's ImageNet example

class ResNetBlock(nn.Module):
    filters: int
    conv: type
    norm: type
    act: callable
    strides: tuple = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=nn.initializers.ones)(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class ResNet(nn.Module):
    stage_sizes: tuple
    num_classes: int
    num_filters: int = 4

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = functools.partial(nn.Conv, use_bias=False)
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                 epsilon=1e-5)
        x = conv(self.num_filters, (3, 3), padding=[(1, 1), (1, 1)], name="conv_init")(x)
        x = nn.relu(norm(name="bn_init")(x))
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = ResNetBlock(self.num_filters * 2**i, conv, norm, nn.relu, strides)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


def _random_stats(variables, key):
    """BatchNorm statistics away from (0, 1), so that eval mode is exercised."""
    paths, tree = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])
    keys = jax.random.split(key, len(paths))
    stats = [0.2 * jax.random.normal(k, v.shape) if path[-1].key == "mean"
             else 0.5 + jax.random.uniform(k, v.shape) for k, (path, v) in zip(keys, paths)]
    return {**variables, "batch_stats": jax.tree_util.tree_unflatten(tree, stats)}


def _resnet():
    model = ResNet(stage_sizes=(1, 1), num_classes=4)
    variables = _random_stats(model.init(jax.random.key(2), _x(), train=False),
                              jax.random.key(3))
    return model, variables


def _block(model, variables, name, i, x):
    conv = functools.partial(nn.Conv, use_bias=False)
    norm = functools.partial(nn.BatchNorm, use_running_average=True, momentum=0.9,
                             epsilon=1e-5)
    block = ResNetBlock(model.num_filters * 2**i, conv, norm, nn.relu,
                        (2, 2) if i > 0 else (1, 1))
    sub = {c: variables[c][name] for c in ("params", "batch_stats")}
    return block.apply(sub, x)


def test_linen_resnet_example_style_equals_a_hand_written_split():
    model, variables = _resnet()

    def features(v, x):      # the stem and the first block, written out
        conv = functools.partial(nn.Conv, use_bias=False)
        h = conv(4, (3, 3), padding=[(1, 1), (1, 1)]).apply(
            {"params": v["params"]["conv_init"]}, x)
        h = nn.BatchNorm(use_running_average=True, epsilon=1e-5).apply(
            {c: v[c]["bn_init"] for c in ("params", "batch_stats")}, h)
        return _block(model, v, "ResNetBlock_0", 0, nn.relu(h))

    def head(v, a):
        h = _block(model, v, "ResNetBlock_1", 1, a).mean((1, 2))
        return nn.Dense(4).apply({"params": v["params"]["Dense_0"]}, h)

    hand = jaxcam.Split(variables=variables, features=features, head=head,
                        layer="ResNetBlock_0", piecewise_linear_head=True)
    split = jaxcam.split_module(model, variables, "ResNetBlock_0",
                                apply_kwargs={"train": False}, piecewise_linear_head=True)
    x = _x(4)
    np.testing.assert_allclose(split.logits(x), model.apply(variables, x, train=False),
                               **CLOSE)
    assert_same_maps(split, hand, x, None)


def test_a_submodule_bypassed_by_the_residual_holds_the_rest_fixed():
    """Split at the second BatchNorm inside the last block: the residual does not go
    through it. The gradient in A is that of the block's output r + A with r, the
    shortcut computed from x, held fixed (what a forward hook on that module gives)."""
    model, variables = _resnet()
    x = _x(5)
    split = jaxcam.split_module(model, variables, "ResNetBlock_1/BatchNorm_1",
                                apply_kwargs={"train": False})
    assert split.needs_input

    def shortcut(v, x):      # the block's input, through its 1x1 projection
        inner = jaxcam.split_module(model, v, "ResNetBlock_0",
                                    apply_kwargs={"train": False}).activations(x)
        sub = {c: v[c]["ResNetBlock_1"] for c in ("params", "batch_stats")}
        proj = nn.Conv(8, (1, 1), (2, 2), use_bias=False).apply(
            {"params": sub["params"]["conv_proj"]}, inner)
        return nn.BatchNorm(use_running_average=True, epsilon=1e-5).apply(
            {c: sub[c]["norm_proj"] for c in ("params", "batch_stats")}, proj)

    def head(v, a, x):
        h = nn.relu(shortcut(v, x) + a).mean((1, 2))
        return nn.Dense(4).apply({"params": v["params"]["Dense_0"]}, h)

    hand = jaxcam.Split(variables=variables, features=split.features, head=head,
                        layer="ResNetBlock_1/BatchNorm_1", head_takes_input=True)
    np.testing.assert_allclose(split.logits(x), model.apply(variables, x, train=False),
                               **CLOSE)
    assert_same_maps(split, hand, x, 2, methods=["grad_cam", "grad_cam_pp", "score_cam"])
    # by hand: dY/dA = relu'(r + A) * W_c / (h w)
    a = split.activations(x)
    r = shortcut(variables, x)
    w = variables["params"]["Dense_0"]["kernel"][:, 2]
    g = (r + a > 0) * w[None, None, None, :] / (a.shape[1] * a.shape[2])
    weights = g.mean((1, 2))
    raw = jax.nn.relu(jnp.sum(weights[:, None, None, :] * a, -1))
    np.testing.assert_allclose(jaxcam.grad_cam(split, x, 2, upsample=False, normalize=False),
                               raw, rtol=1e-5, atol=1e-7)


# --- (c) an NNX CNN

class NnxBlock(nnx.Module):
    def __init__(self, channels: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(channels, channels, (3, 3), rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.conv(x) + x)


class NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.stem = nnx.Conv(3, 6, (3, 3), rngs=rngs)
        self.blocks = nnx.List([NnxBlock(6, rngs) for _ in range(2)])
        self.fc = nnx.Linear(6, 5, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean((1, 2)))


def test_nnx_cnn_equals_a_hand_written_split():
    model = NnxCNN(nnx.Rngs(4))
    graphdef, state = nnx.split(model)

    def features(state, x):
        m = nnx.merge(graphdef, state)
        return m.blocks[0](nnx.relu(m.stem(x)))

    def head(state, a):
        m = nnx.merge(graphdef, state)
        return m.fc(m.blocks[1](a).mean((1, 2)))

    hand = jaxcam.Split(variables=state, features=features, head=head, layer="blocks/0",
                        piecewise_linear_head=True)
    split = jaxcam.split_module(model, "blocks/0", piecewise_linear_head=True)
    x = _x(6)
    np.testing.assert_allclose(split.logits(x), model(x), **CLOSE)
    np.testing.assert_allclose(split.activations(x), hand.activations(x), **CLOSE)
    assert_same_maps(split, hand, x, jnp.array([0, 4]))


def test_nnx_submodule_bypassed_by_the_residual():
    model = NnxCNN(nnx.Rngs(5))
    graphdef, state = nnx.split(model)
    split = jaxcam.split_module(model, "blocks/1/conv")

    def head(state, a, x):  # the block's input, the residual, held fixed
        m = nnx.merge(graphdef, state)
        r = m.blocks[0](nnx.relu(m.stem(x)))
        return m.fc(nnx.relu(a + r).mean((1, 2)))

    hand = jaxcam.Split(variables=state, features=split.features, head=head,
                        layer="blocks/1/conv", head_takes_input=True)
    x = _x(7)
    np.testing.assert_allclose(split.logits(x), model(x), **CLOSE)
    assert_same_maps(split, hand, x, 1, methods=["grad_cam", "grad_cam_pp", "ablation_cam"])
    with pytest.raises(ValueError, match=r"no submodule 'blocks/7'"):
        jaxcam.grad_cam(jaxcam.split_module(model, "blocks/7"), x)
    with pytest.raises(TypeError, match="NNX model carries its own state"):
        jaxcam.split_module(model, state, "blocks/0")


# --- the zoo's splits are cuts: split_module of the same network agrees

@pytest.mark.parametrize("layer", ["layer3.1", "layer4.1"])
def test_zoo_splits_agree_with_split_module(layer):
    zoo = jaxcam.models.load("resnet18", layer=layer, weights="random")
    net = jaxcam.models.info("resnet18").net
    split = jaxcam.split_module(net, zoo.variables, layer, piecewise_linear_head=True)
    x = _x(8, size=64)
    np.testing.assert_allclose(split.activations(x), zoo.activations(x), **CLOSE)
    for method, options in ((jaxcam.grad_cam, {}),
                            (jaxcam.grad_cam_pp, {"derivatives": "exact"})):
        np.testing.assert_allclose(method(split, x, 3, **options), method(zoo, x, 3, **options),
                                   **CLOSE)
