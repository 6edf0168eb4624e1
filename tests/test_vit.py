"""The zoo's ViT-B/16 against a PyTorch reference with torchvision's names (read back by
the torch-free reader, converted by pretrained_ports), and against pytorch-grad-cam's
GradCAM with its ViT ``reshape_transform``; every registered method on a small ViT."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxcam
import pretrained_ports
import torch_vit
from jaxcam.models.vit import VisionTransformer
from test_oracle_pytorch_grad_cam import pgc  # noqa: F401  (the fixture)
from test_registry import call

SMALL = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
             mlp_dim=64, num_classes=10)


def _converted(model: torch.nn.Module, module: VisionTransformer, path):
    torch.save(model.state_dict(), path)
    shapes = jax.eval_shape(module.init, jax.random.key(0),
                            jnp.zeros((1, module.image_size, module.image_size, 3)))
    return pretrained_ports.convert("vit", pretrained_ports.read_checkpoint(path), shapes)


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    model = torch_vit.randomized(torch_vit.VisionTransformer(**SMALL), seed=1)
    module = VisionTransformer(**SMALL)
    variables = _converted(model, module, tmp_path_factory.mktemp("vit") / "small.pth")
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    return model, module, variables, x


def test_small_vit_logits_equal_the_pytorch_reference(small):
    model, module, variables, x = small
    want = _torch_logits(model, x)
    got = np.asarray(module.apply(variables, x))
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert np.abs(want).max() > 0.1 and want.std() > 0.01


def test_a_checkpoint_that_does_not_fit_is_reported(small, tmp_path):
    model, module, _, _ = small
    state = dict(model.state_dict())
    del state["encoder.layers.encoder_layer_1.self_attention.in_proj_bias"]
    state["class_token"] = torch.zeros(1, 2, 32)
    torch.save(state, tmp_path / "bad.pth")
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(pretrained_ports.ConversionError,
                       match=r"(?s)encoder_layer_1.self_attention.in_proj_bias.*class_token"):
        pretrained_ports.convert("vit", pretrained_ports.read_checkpoint(tmp_path / "bad.pth"),
                                 shapes)


@dataclasses.dataclass(frozen=True)
class _Forward:
    """A user's choice of guided pass for a network without ReLUs: its plain forward (the
    zoo gives a ViT none)."""

    module: Any

    def __call__(self, variables, x):
        return self.module.apply(variables, x)


def _small_split(small, layer="encoder/layers/encoder_layer_1/ln_1"):
    _, module, variables, _ = small
    split = jaxcam.split_module(module, variables, layer, reshape=jaxcam.TokenGrid(prefix=1))
    return split.replace(guided=_Forward(module))


def test_every_registered_method_runs_on_a_vit(small):
    """CAM needs a pooled linear head and says so; every other method gives a finite,
    non-trivial map from the 4 x 4 patch grid."""
    split, x = _small_split(small), small[3]
    assert split.activations(x).shape == (2, 4, 4, 32)
    for name in jaxcam.available_methods():
        if name == "cam":
            with pytest.raises(ValueError, match="global average pooling"):
                call(name, split, x, 3)
            continue
        out = np.asarray(call(name, split, x, 3))
        assert np.isfinite(out).all() and np.abs(out).max() > 0, name


def test_exact_grad_cam_pp_on_a_vit_differs_from_the_closed_form(small):
    """Attention, LayerNorm and GELU make the head curved: the exact D2 is not g^2."""
    split, x = _small_split(small), small[3]
    a = split.activations(x)
    g_split = split.given(jnp.asarray(x))
    d1, d2, _ = jaxcam.derivatives.head_derivatives(g_split, a, 3, link="exp")
    _, a2, _ = jaxcam.derivatives.head_derivatives(g_split, a, 3, link="exp", derivatives="approx")
    rel = float(jnp.linalg.norm(d2 - a2) / jnp.linalg.norm(a2))
    assert rel > 0.05, rel
    np.testing.assert_allclose(a2, d1**2, rtol=1e-4, atol=1e-10)   # D1 = g in both


# --- ViT-B/16 at full size

@pytest.fixture(scope="module")
def vit_b_16(tmp_path_factory):
    """(torch model, jaxcam split at the last block's ln_1, NHWC image) on the same
    random weights, loaded through the zoo from a torchvision-style checkpoint."""
    model = torch_vit.randomized(torch_vit.VisionTransformer(), seed=0)
    model.requires_grad_(False)
    path = tmp_path_factory.mktemp("vit") / "vit_b_16.pth"
    torch.save(model.state_dict(), path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXCAM_CACHE", str(tmp_path_factory.getbasetemp() / "jaxcam-cache"))
        split = jaxcam.models.load("vit_b_16", weights=path)
    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    return model, split, x


@pytest.mark.slow
def test_vit_b_16_logits_equal_the_pytorch_reference(vit_b_16):
    model, split, x = vit_b_16
    want = _torch_logits(model, x)
    got = np.asarray(split.logits(x))
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.slow
def test_vit_b_16_grad_cam_equals_pytorch_grad_cam(vit_b_16, pgc):  # noqa: F811
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, split, x = vit_b_16
    assert split.layer == "encoder.layers.encoder_layer_11.ln_1"
    target = int(np.argmax(_torch_logits(model, x)[0]))

    def reshape_transform(tensor, height=14, width=14):   # pytorch-grad-cam's ViT tutorial
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    real, raw = pgc.base_cam.scale_cam_image, []

    def spy(cam, target_size=None):
        if target_size is not None:
            raw.append(np.array(cam, np.float32))
        return real(cam, target_size)

    inputs = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_(True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pgc.base_cam, "scale_cam_image", spy)
        with pgc.GradCAM(model=model, target_layers=[model.encoder.layers[-1].ln_1],
                         reshape_transform=reshape_transform) as cam:
            cam(input_tensor=inputs, targets=[ClassifierOutputTarget(target)])
    (expected,) = raw
    got = np.asarray(jaxcam.grad_cam(split, x, target, upsample=False, normalize=False))
    assert got.shape == expected.shape == (1, 14, 14)
    scale = expected.max()
    assert scale > 0
    assert np.abs(got - expected).max() <= 1e-4 * scale


@pytest.mark.slow
def test_vit_b_16_has_no_guided_pass(vit_b_16):
    """ViT has no ReLU to guide: the guided methods say so rather than return the plain
    gradient under guided backpropagation's name."""
    _, split, x = vit_b_16
    assert split.guided is None
    for method in (jaxcam.guided_backprop, jaxcam.guided_grad_cam):
        with pytest.raises(ValueError, match=r"guided ReLUs.*such as ViT, has none"):
            method(split, x, 3)
