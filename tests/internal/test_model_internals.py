"""The zoo's building blocks (jaxcam/models/): where the listed layers end, the
depthwise convolution as taps against XLA's grouped convolution, the shapes networks'
training net and batch-norm folding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcam import models


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "efficientnet_lite0"])
def test_the_last_listed_layer_outputs_a_spatial_map(name):
    """Up to the last listed layer the output is a map (B, h, w, K); one stage further it
    is not (shapes only: nothing is computed)."""
    from jaxcam.models._layers import stage_index

    net, stages = models.info(name).net, models.info(name).stages
    last = stage_index(stages, models.layers(name)[-1]) + 1  # stages [0, last) are listed
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shape = lambda stop: jax.eval_shape(  # noqa: E731
        lambda v, x: net.apply(v, x, 0, stop), models.variable_shapes(name), x).shape
    assert len(shape(last)) == 4 and min(shape(last)) >= 1
    after = shape(last + 1)
    assert len(after) == 2 or after[1:3] == (1, 1), (stages[last].name, after)


@pytest.mark.parametrize("size, kernel, stride, padding", [
    (9, 3, 1, "SAME"), (10, 3, 2, "SAME"), (11, 5, 2, "SAME"), (8, 5, 1, "VALID"),
    (7, 3, 2, ((1, 1), (1, 1)))])
def test_depthwise_taps_equal_the_grouped_convolution(size, kernel, stride, padding):
    from jaxcam.models._layers import depthwise

    kx, kk, kt = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, size, size, 6))
    k = jax.random.normal(kk, (kernel, kernel, 1, 6))

    def grouped(x):
        return jax.lax.conv_general_dilated(x, k, (stride, stride), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=6)

    def taps(x):
        return depthwise(x, k, stride, padding)

    np.testing.assert_allclose(taps(x), grouped(x), rtol=1e-5, atol=1e-5)
    # and its derivatives (what the CAM methods take through a Lite0 head)
    t = jax.random.normal(kt, x.shape)
    np.testing.assert_allclose(jax.jvp(taps, (x,), (t,))[1], jax.jvp(grouped, (x,), (t,))[1],
                               rtol=1e-5, atol=1e-5)
    ct = jnp.ones_like(grouped(x))
    np.testing.assert_allclose(jax.vjp(taps, x)[1](ct)[0], jax.vjp(grouped, x)[1](ct)[0],
                               rtol=1e-5, atol=1e-5)


def test_folded_batch_norm_equals_the_normalised_network():
    """The zoo network with folded convolutions against the training network (batch
    normalisation with running statistics), on random statistics far from 0 and 1."""
    from jaxcam.models._training import _TrainNet, fold_batch_norm

    net = _TrainNet("gelu", 6)
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    variables = jax.tree_util.tree_map(np.asarray, net.init(jax.random.key(1), x, False))
    rng = np.random.default_rng(0)
    for name, stats in variables["batch_stats"].items():
        stats["mean"] = rng.normal(0, 0.3, stats["mean"].shape).astype(np.float32)
        stats["var"] = rng.uniform(0.2, 3, stats["var"].shape).astype(np.float32)
        variables["params"][name]["scale"] = rng.uniform(0.5, 2, stats["var"].shape).astype(
            np.float32)
        variables["params"][name]["bias"] = rng.normal(0, 0.3, stats["var"].shape).astype(
            np.float32)
    want = net.apply(variables, x, False)
    split = models.load("shapes-smooth", weights=fold_batch_norm(variables), layer="act2")
    got = split.head(split.variables, split.features(split.variables, x))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
