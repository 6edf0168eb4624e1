"""Model zoo contract: names, layers, splitting, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam import models


def test_available_lists_the_whole_zoo():
    expected = {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")}
    expected |= {f"resnet{d}" for d in (18, 34, 50, 101, 152)} | {"efficientnet_lite0"}
    expected |= {"vit_b_16", "shapes-relu", "shapes-smooth"}
    assert set(models.available()) == expected


@pytest.mark.parametrize("name, default, some_layers, not_spatial", [
    ("vgg16", "features.29", ["features.0", "features.30", "avgpool"], ["classifier.6"]),
    ("vgg16_bn", "features.42", ["features.43"], ["classifier.0"]),
    ("resnet18", "layer4", ["conv1", "bn1", "relu", "maxpool", "layer4.1"], ["avgpool", "fc"]),
    ("resnet50", "layer4", ["layer4.2", "layer3.5", "layer1"], ["fc"]),
    ("efficientnet_lite0", "_swish", ["_conv_stem", "_blocks.0", "_blocks.15", "_conv_head",
                                      "_bn1"], ["avgpool", "_fc"]),
    ("vit_b_16", "encoder.layers.encoder_layer_11.ln_1",
     ["conv_proj", "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_5.ln_1"],
     ["encoder.ln", "heads.head", "encoder.layers.encoder_layer_12"]),
])
def test_layers_and_default(name, default, some_layers, not_spatial):
    names = models.layers(name)
    assert models.default_layer(name) == default
    assert default in names and set(some_layers) <= set(names)
    assert not set(not_spatial) & set(names)  # no map to explain after pooling/flattening
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", models.available())
def test_default_layer_is_listed(name):
    assert models.default_layer(name) in models.layers(name)


def test_layers_are_in_forward_order():
    names = models.layers("resnet50")
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert names.index("layer1.2") < names.index("layer1") < names.index("layer2.0")
    assert names[-2:] == ["layer4.2", "layer4"]
    vgg = models.layers("vgg16")
    assert vgg == [f"features.{i}" for i in range(31)] + ["avgpool"]  # adaptive: a 7 x 7 map


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'.*'resnet50'"):
        models.load("resnet5")
    with pytest.raises(ValueError, match="Available models"):
        models.layers("alexnet")


def test_unknown_layer_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown layer of resnet18 'layer5'.*'layer4'"):
        models.load("resnet18", layer="layer5", weights="random")
    with pytest.raises(ValueError, match=r"'features.29'"):
        models.load("vgg16", layer="feature.29", weights="random")


@pytest.mark.parametrize("name, layer, last", [
    ("resnet18", "fc", "'layer4.1', 'layer4'"), ("resnet18", "avgpool", "'layer4'"),
    ("vgg16", "classifier.6", "'avgpool'"), ("efficientnet_lite0", "_fc", "'_swish'")])
def test_non_spatial_layer_is_refused_naming_the_last_spatial_ones(name, layer, last):
    with pytest.raises(ValueError, match=rf"layer '{layer}' of {name} is not spatial.*{last}"):
        models.load(name, layer=layer, weights="random")


def test_pretrained_only_where_bundled():
    with pytest.raises(ValueError, match="no bundled weights"):
        models.load("resnet18", weights="pretrained")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load("resnet18", weights="/nonexistent/resnet18.pth")


def _split_invariance(name: str, size: int):
    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    split = models.load(name, weights="random", layer=models.default_layer(name))
    # Perturb the batch statistics so BatchNorm is not the identity.
    variables = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.1 if "batch_stats" in str(p) else v, split.variables)
    full = models.info(name).net.apply(variables, x)
    scale = float(jnp.max(jnp.abs(full)))
    assert scale > 0
    for layer in models.layers(name):
        s = models.load(name, weights=variables, layer=layer)
        a = s.features(variables, x)
        logits = s.head(variables, a)
        np.testing.assert_allclose(logits, full, atol=1e-5 * scale, rtol=0, err_msg=layer)


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("vgg16", 32),
                                        ("efficientnet_lite0", 64)])
def test_split_invariance_every_layer(name, size):
    _split_invariance(name, size)


def test_split_shapes_and_metadata():
    s = models.load("resnet50", weights="random")
    x = jnp.zeros((3, 224, 224, 3))
    a = s.activations(x)
    assert a.shape == (3, 7, 7, 2048)
    assert s.logits_from(a).shape == (3, 1000)
    assert s.layer == "layer4" and s.piecewise_linear_head
    assert isinstance(s.preprocess, jaxcam.Preprocess)
    vgg = models.load("vgg16", weights="random", layer="features.29")
    assert vgg.activations(x[:1]).shape == (1, 14, 14, 512)


def test_piecewise_linear_flag_follows_head_activation():
    assert models.load("efficientnet_lite0", weights="random").piecewise_linear_head
    relu = models.load("resnet18", weights="random", layer="layer4.0")
    gelu = models.load("resnet18", weights="random", layer="layer4.0", activation="gelu")
    assert relu.piecewise_linear_head and not gelu.piecewise_linear_head
    # Only the head changes: same features, different logits.
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
    np.testing.assert_array_equal(relu.activations(x), gelu.activations(x))
    assert not np.allclose(relu.logits(x), gelu.logits(x), atol=1e-3)
    # Only pooling and the linear layer after layer4: no activation to swap.
    assert models.load("resnet18", weights="random", layer="layer4",
                       activation="gelu").piecewise_linear_head
    with pytest.raises(ValueError, match="unknown activation"):
        models.load("resnet18", weights="random", activation="tanh")


def test_split_is_a_pytree_with_static_functions():
    s = models.load("resnet18", weights="random")
    leaves, treedef = jax.tree_util.tree_flatten(s)
    assert len(leaves) == len(jax.tree_util.tree_leaves(s.variables))
    again = models.load("resnet18", weights="random")
    assert jax.tree_util.tree_structure(again) == treedef  # same static metadata: no retrace

    @jax.jit
    def forward(split, x):
        return split.logits(x)

    x = jnp.ones((1, 32, 32, 3))
    np.testing.assert_allclose(forward(s, x), s.logits(x), rtol=1e-4, atol=1e-5)


def test_user_split_from_plain_functions():
    w = {"k": jnp.arange(6.0).reshape(1, 1, 3, 2)}
    s = jaxcam.Split(variables=w,
                     features=lambda v, x: jnp.einsum("bhwc,xyck->bhwk", x, v["k"]),
                     head=lambda v, a: a.mean(axis=(1, 2)), layer="mine")
    assert s.logits(jnp.ones((2, 4, 4, 3))).shape == (2, 2)
    assert not s.piecewise_linear_head


def test_preprocess_geometry(assets):
    from jaxcam import viz

    image = viz.read_image(assets / "chelsea.png")
    assert image.dtype == np.uint8 and image.shape[-1] == 3
    pre = models.load("efficientnet_lite0").preprocess
    x = pre(image)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    h, w = image.shape[:2]
    top, left, rh, rw = pre.crop_box(h, w)
    assert min(rh, rw) == 256 and abs(rw / rh - w / h) < 0.01
    with pytest.raises(ValueError, match="RGB uint8"):
        pre(image.astype(np.float32))


def test_real_lite0_weights_classify_the_photos(assets):
    from jaxcam import viz

    split = models.load("efficientnet_lite0")
    x = np.stack([split.preprocess(viz.read_image(assets / f)) for f in
                  ("chelsea.png", "coffee.png")])
    top1 = np.asarray(jnp.argmax(split.logits(x), axis=-1))
    assert top1[0] in {281, 282, 285}
    assert top1[1] == 967


