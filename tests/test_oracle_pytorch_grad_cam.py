"""jaxcam's Grad-CAM and Grad-CAM++ == pytorch-grad-cam's (PyPI ``grad-cam``) on identical weights.

pytorch-grad-cam is an independent implementation, used here only as an oracle: a test
dependency installed with ``pip install --no-deps grad-cam`` (its declared dependencies
pull torchvision). It imports torchvision at import time; where the real torchvision is
missing, the test-only stand-in ``tests/_torchvision_standin`` is put on ``sys.path`` for
that import, and removed (with the modules imported through it) after this module.

What is compared, per model and method, from ONE pytorch-grad-cam call:

* the raw maps, at the target layer's resolution: pytorch-grad-cam's
  ``BaseCAM.compute_cam_per_layer`` computes ``cam = np.maximum(get_cam_image(...), 0)``,
  i.e. ``ReLU(sum_k w_k A^k)``, and passes it to ``scale_cam_image(cam, target_size)``
  (min-max scaling, then ``cv2.resize`` to the input). A spy on that name in
  ``pytorch_grad_cam.base_cam`` records this first argument and then calls the real
  function. It must equal jaxcam's ``upsample=False, normalize=False`` maps to 1e-5
  relative (plus an absolute 1e-5 of the largest value, for cancellations);
* the returned, default maps (min-max scaled, ``cv2.resize``-d bilinearly, averaged over
  the one target layer, min-max scaled again) against jaxcam's defaults (bilinear
  upsampling, then min-max scaling): the same up to the resizing kernels, so loosely.

Targets are ``ClassifierOutputTarget(c)``, the logit, with a different class per image.
jaxcam uses ``link="logit"`` for Grad-CAM and its default ``link="exp"`` (exp(S - S0), S0
held constant) for Grad-CAM++, whose closed form (``derivatives="approx"``) then uses
g = dS/dA, g^2, g^3 exactly like pytorch-grad-cam's eq. 19, with its eps = 1e-6.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxcam

torch = pytest.importorskip("torch")
torch_reference = pytest.importorskip("jaxcam.bench.torch_models")

STANDIN = Path(__file__).resolve().parent / "_torchvision_standin"
TARGETS = [3, 8]  # a different class per image; both give partly positive maps here

# zoo name: (split layer, input size, torch model, its target layer: what jaxcam's split
# returns as A, i.e. torchvision's model.layer4[-1] / model.features[29], the last ReLU)
CASES = {
    "resnet18": ("layer4", 96, lambda: torch_reference.resnet(18), lambda m: m.layer4[-1]),
    "vgg16": ("features.29", 64, lambda: torch_reference.vgg(16, False),
              lambda m: m.features[29]),
}


@pytest.fixture(scope="module")
def pgc():
    """The ``pytorch_grad_cam`` package, imported with the torchvision stand-in if needed."""
    saved_path = list(sys.path)
    before = set(sys.modules)
    try:
        importlib.import_module("torchvision")
    except ImportError:
        sys.path.insert(0, str(STANDIN))
    try:
        yield pytest.importorskip("pytorch_grad_cam")
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - before:
            if name.partition(".")[0] in ("torchvision", "pytorch_grad_cam"):
                del sys.modules[name]


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    """(torch model, its target layer, jaxcam split, NHWC input) on the same random weights."""
    layer, size, build, target_layer = CASES[request.param]
    model = torch_reference.randomize_(build(), seed=0)
    path = tmp_path_factory.mktemp("oracle") / f"{request.param}.pth"
    torch.save(model.state_dict(), path)
    with pytest.MonkeyPatch.context() as mp:  # module scope: before conftest's cache fixture
        mp.setenv("JAXCAM_CACHE", str(tmp_path_factory.getbasetemp() / "jaxcam-cache"))
        split = jaxcam.models.load(request.param, layer=layer, weights=path)
    # Speed only: the variables on the device once, not once per call (VGG-16: 0.5 GB),
    # and no parameter gradients in torch (the input requires grad instead, so the target
    # layer's output still does and pytorch-grad-cam's gradient hook still fires).
    split = split.replace(variables=jax.device_put(split.variables))
    model.requires_grad_(False)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    return model, target_layer(model), split, x


@pytest.fixture(scope="module", params=["grad_cam", "grad_cam_pp"])
def oracle(request, pgc, case):
    """(method, raw maps (B, h, w), default maps (B, H, W)) from pytorch-grad-cam."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, target_layer, _, x = case
    real = pgc.base_cam.scale_cam_image
    raw = []

    def spy(cam, target_size=None):
        if target_size is not None:  # the call in compute_cam_per_layer
            raw.append(np.array(cam, np.float32))
        return real(cam, target_size)

    cls = {"grad_cam": pgc.GradCAM, "grad_cam_pp": pgc.GradCAMPlusPlus}[request.param]
    inputs = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_(True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pgc.base_cam, "scale_cam_image", spy)
        with cls(model=model, target_layers=[target_layer]) as cam:
            default = cam(input_tensor=inputs,
                          targets=[ClassifierOutputTarget(c) for c in TARGETS])
    assert len(raw) == 1  # one target layer
    return request.param, raw[0], np.asarray(default)


def _jaxcam(method: str, split, x: np.ndarray, **kw) -> np.ndarray:
    t = np.asarray(TARGETS, np.int32)
    if method == "grad_cam":
        return np.asarray(jaxcam.grad_cam(split, x, t, link="logit", **kw))
    return np.asarray(jaxcam.grad_cam_pp(split, x, t, link="exp", eps=1e-6, **kw))


def test_raw_maps_match_pytorch_grad_cam(oracle, case):
    _, _, split, x = case
    method, expected, _ = oracle
    got = _jaxcam(method, split, x, upsample=False, normalize=False)
    assert got.shape == expected.shape and got.ndim == 3
    scale = expected.max(axis=(1, 2))
    assert np.all(scale > 0)  # non-trivial maps for both images, so the test can fail
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale.max())


def test_default_maps_close_to_pytorch_grad_cam(oracle, case):
    _, _, split, x = case
    method, _, expected = oracle
    got = _jaxcam(method, split, x)
    assert got.shape == expected.shape == x.shape[:3]
    assert np.abs(got - expected).mean() < 1e-4


# Score-CAM: one forward pass of the whole network per channel (512 here), so one image and
# small inputs: ResNet-18's layer4 at 64 x 64 is 2 x 2, VGG-16's features.29 at 32 x 32 too.
SCORE_CAM_SIZE = {"resnet18": 64, "vgg16": 32}


def test_score_cam_raw_maps_match_pytorch_grad_cam(pgc, case):
    """pytorch-grad-cam's ScoreCAM (logits of the masked inputs, softmax across channels,
    align_corners=True upsampling, +1e-8) == variant="pytorch-grad-cam"."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, target_layer, split, x = case
    size = SCORE_CAM_SIZE["resnet18" if split.layer == "layer4" else "vgg16"]
    x = np.ascontiguousarray(x[:1, :size, :size])
    real, raw = pgc.base_cam.scale_cam_image, []

    def spy(cam, target_size=None):
        if target_size is not None:
            raw.append(np.array(cam, np.float32))
        return real(cam, target_size)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pgc.base_cam, "scale_cam_image", spy)
        mp.setattr(pgc.score_cam.tqdm, "tqdm", lambda it, **kw: it)   # quiet
        with pgc.ScoreCAM(model=model, target_layers=[target_layer]) as cam:
            cam.batch_size = 64
            cam(input_tensor=torch.from_numpy(x.transpose(0, 3, 1, 2)),
                targets=[ClassifierOutputTarget(TARGETS[0])])
    expected = raw[0]
    got = np.asarray(jaxcam.score_cam(split, x, TARGETS[0], variant="pytorch-grad-cam",
                                      chunk_size=64, upsample=False, normalize=False))
    assert got.shape == expected.shape
    scale = expected.max(axis=(1, 2))
    assert np.all(scale > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale.max())
