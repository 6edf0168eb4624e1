"""jaxcam's ``variant="torchcam"`` == torch-cam 0.5.0 (PyPI ``torchcam``) on identical weights.

torch-cam is an independent implementation, used here only as an oracle: a test
dependency installed with ``pip install --no-deps torchcam==0.5.0`` (``torchcam.methods``
imports torch alone; the package declares torchvision only for its demo, scripts and
tests). What it computes, read from ``torchcam/methods/gradient.py`` and checked here:

* ``GradCAMpp`` forms alpha = g^2 / (2 g^2 + sum_ab A_ab g^3_ab + eps) in place on a
  boolean-mask selection, which PyTorch copies, so alpha stays g^2 and the weights it
  returns are sum_ij g^2 ReLU(g), with g = dS/dA of the logit:
  ``jaxcam.grad_cam_pp(..., variant="torchcam")``.
* ``SmoothGradCAMpp`` averages g^2 and g^3 over its noisy passes with equal weights,
  divides for real with the mixed-index denominator 2 m2 + sum_ab A_ab m3_ab + 1e-8, where
  A is the CLEAN pass's activations, and takes ReLU(g) and the map's A from the LAST noisy
  pass (its forward hook overwrites them): ``jaxcam.smooth_grad_cam_pp(...,
  variant="torchcam", eps=1e-8)``.
* ``XGradCAM`` weighs channel k by sum_ij g_ij A_ij / (sum_ij A_ij + 1e-8) (its ``eps``
  keyword, default 1e-8): ``jaxcam.xgrad_cam(..., eps=1e-8)``.
* ``LayerCAM`` weighs every activation by ReLU(g) at its own position: ``jaxcam.layer_cam``.
  Its ``fuse_cams`` (classmethod ``_CAM.fuse_cams`` with LayerCAM's ``_scale_cams``) takes
  the per-layer maps the extractor returned (normalised by default), scales each to
  tanh(2 M) AT ITS OWN RESOLUTION, then resizes them bilinearly (``align_corners=False``)
  to the largest layer's size and takes their element-wise maximum.

torch-cam draws its noise with ``self._distrib.sample(input.size())``, a
``torch.distributions.Normal``. That sampler is replaced by one returning jaxcam's own
noise for each pass, built here from jaxcam's documented rule (copy i of image b adds
sigma_b * ``jax.random.normal(jax.random.split(key, n)[i - 1], x.shape[1:])``, sigma_b =
noise * (max - min) of image b), so both see the same noisy copies and the comparison is
exact.

What is compared: torch-cam's raw maps (``normalized=False``: ReLU(nansum_k w_k A^k) at the
layer's resolution) against jaxcam's ``upsample=False, normalize=False`` maps, in float32,
to 1e-5 relative (plus 1e-5 of the map's largest value, for cancellations). torch-cam's
normalisation (cam - min) / (max + 1e-8) is not compared: its 1e-8 is not scale-free.
At ResNet-18's ``layer4`` the head is pooling + linear, so g is the same at every position;
at ``layer3`` it varies, and the mixed indices and the clean-versus-last activations
matter.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxcam

torch = pytest.importorskip("torch")
methods = pytest.importorskip("torchcam.methods")
torch_reference = pytest.importorskip("jaxcam.bench.torch_models")

LAYERS = ["layer4", "layer3"]  # jaxcam's split layer == the module whose output torch-cam hooks
TARGETS = [3, 8]               # a different class per image
SIZE = 64
N_SAMPLES = 4                  # torch-cam's default
NOISE = 0.05                   # relative to each image's value range (jaxcam's convention)
KEY = 7


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """(torch ResNet-18, jaxcam variables) on the same random weights."""
    model = torch_reference.randomize_(torch_reference.resnet(18), seed=0)
    path = tmp_path_factory.mktemp("oracle") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    with pytest.MonkeyPatch.context() as mp:  # module scope: before conftest's cache fixture
        mp.setenv("JAXCAM_CACHE", str(tmp_path_factory.getbasetemp() / "jaxcam-cache"))
        variables = jaxcam.models.load("resnet18", layer=LAYERS[0], weights=path).variables
    model.requires_grad_(False)  # speed: the input requires grad instead
    return model, variables


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    return x * np.float32([1.0, 0.5])[:, None, None, None]  # different ranges: sigmas


def _nchw(a: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _scaled(maps: np.ndarray) -> np.ndarray:
    lo, hi = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    return (maps - lo) / (hi - lo)


def _close(got: np.ndarray, expected: np.ndarray, tol: float = 1e-5) -> None:
    assert got.shape == expected.shape and got.ndim == 3
    scale = np.abs(expected).max(axis=(1, 2))
    assert np.all(scale > 0)  # non-trivial maps for both images, so the test can fail
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * scale.max())


@pytest.mark.parametrize("layer", LAYERS)
def test_grad_cam_pp_matches_torchcam(resnet18, x, layer):
    model, variables = resnet18
    with methods.GradCAMpp(model, layer) as extractor:
        scores = model(_nchw(x).requires_grad_(True))
        expected = extractor(class_idx=TARGETS, scores=scores, normalized=False)[0].numpy()
    split = jaxcam.models.load("resnet18", layer=layer, weights=variables)
    options = dict(upsample=False, normalize=False)
    got = np.asarray(jaxcam.grad_cam_pp(split, x, np.array(TARGETS), variant="torchcam",
                                        **options))
    _close(got, expected)
    # The formula torch-cam's code spells out (and the paper's) give other maps.
    paper = np.asarray(jaxcam.grad_cam_pp(split, x, np.array(TARGETS), **options))
    assert not np.allclose(_scaled(paper), _scaled(expected), atol=1e-2)


# --- XGradCAM and LayerCAM: one backward pass each

GRADIENT_METHODS = {  # torch-cam's extractor: jaxcam's method and the options it needs
    "XGradCAM": (jaxcam.xgrad_cam, {"eps": 1e-8}),
    "LayerCAM": (jaxcam.layer_cam, {}),
}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("name", list(GRADIENT_METHODS))
def test_xgrad_and_layer_cam_match_torchcam(resnet18, x, name, layer):
    """torch-cam's raw maps, ReLU(nansum_k w_k A^k) with its ReLU for gradient methods:
    XGradCAM's w_k = sum_ij g A / (sum_ij A + 1e-8), LayerCAM's w = ReLU(g) element-wise."""
    model, variables = resnet18
    with getattr(methods, name)(model, layer) as extractor:
        scores = model(_nchw(x).requires_grad_(True))
        expected = extractor(class_idx=TARGETS, scores=scores, normalized=False)[0].numpy()
    split = jaxcam.models.load("resnet18", layer=layer, weights=variables)
    method, options = GRADIENT_METHODS[name]
    got = np.asarray(method(split, x, np.array(TARGETS), upsample=False, normalize=False,
                            **options))
    _close(got, expected, tol=1e-4)


def test_layer_cam_fusion_matches_torchcam(resnet18, x):
    """torch-cam's ``LayerCAM(model, ["layer3", "layer4"])`` normalises each layer's map,
    (cam - min) / (max + 1e-8) with max taken after the shift; ``fuse_cams`` scales each to
    tanh(2 cam), resizes it bilinearly (half-pixel centres) to layer3's size and takes the
    element-wise maximum. jaxcam normalises the fused map once more, so it is compared with
    torch-cam's fused map min-max scaled: to 1e-5 absolute (the maps lie in [0, 1]; the
    1e-8 of torch-cam's normalisation moves them by about that)."""
    model, variables = resnet18
    layers = ["layer3", "layer4"]
    with methods.LayerCAM(model, layers) as extractor:
        scores = model(_nchw(x).requires_grad_(True))
        cams = extractor(class_idx=TARGETS, scores=scores)
        expected = _scaled(extractor.fuse_cams(cams).numpy())
    assert [c.shape[1] for c in cams] == [SIZE // 16, SIZE // 32]  # two resolutions
    split = jaxcam.models.load("resnet18", layer="layer4", weights=variables)
    got = np.asarray(jaxcam.layer_cam(split, x, np.array(TARGETS), layers=layers,
                                      fuse="layercam", upsample=False))
    assert got.shape == expected.shape == (len(TARGETS), SIZE // 16, SIZE // 16)
    assert np.all(np.ptp(expected, axis=(1, 2)) > 0.5)  # non-trivial fused maps
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


class _JaxcamNoise:
    """Stands in for torch-cam's ``Normal(0, std)``: pass i gets jaxcam's copy i."""

    def __init__(self, x: np.ndarray):
        keys = jax.random.split(jax.random.key(KEY), N_SAMPLES)
        sigma = np.float32(NOISE) * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
        self.noise = [sigma[:, None, None, None]
                      * np.asarray(jax.random.normal(k, x.shape[1:], x.dtype))[None]
                      for k in keys]
        self.calls = 0

    def sample(self, size):
        noise = _nchw(self.noise[self.calls])
        assert tuple(size) == tuple(noise.shape)
        self.calls += 1
        return noise


@pytest.mark.parametrize("layer", LAYERS)
def test_smooth_grad_cam_pp_matches_torchcam(resnet18, x, layer):
    model, variables = resnet18
    noise = _JaxcamNoise(x)
    with methods.SmoothGradCAMpp(model, layer, num_samples=N_SAMPLES) as extractor:
        extractor._distrib = noise
        model(_nchw(x))  # the clean pass: the input and the clean activations
        expected = extractor(class_idx=TARGETS, normalized=False)[0].numpy()
    assert noise.calls == N_SAMPLES
    split = jaxcam.models.load("resnet18", layer=layer, weights=variables)
    got = np.asarray(jaxcam.smooth_grad_cam_pp(
        split, x, np.array(TARGETS), key=jax.random.key(KEY), n_samples=N_SAMPLES,
        noise=NOISE, variant="torchcam", eps=1e-8, upsample=False, normalize=False))
    _close(got, expected)


# --- the Score-CAM family, at layer3 (256 channels, 2 x 2 at 32 x 32: one forward pass of
# the whole network per channel and sample)

SCORE_SAMPLES = 2
SCORE_SIZE = 32


class _MaskNoise:
    """Stands in for SSCAM's ``Normal(0, std)``: sample i gets jaxcam's documented noise,
    sigma * normal(split(split(key, n)[i], K)[k], (H, W)) for channel k, every image."""

    def __init__(self, k: int, sigma: float):
        keys = jax.random.split(jax.random.key(KEY), SCORE_SAMPLES)
        self.noise = [sigma * np.asarray(jax.vmap(lambda kk: jax.random.normal(
            kk, (SCORE_SIZE, SCORE_SIZE)))(jax.random.split(key, k))) for key in keys]
        self.calls = 0

    def sample(self, size):
        noise = torch.from_numpy(np.broadcast_to(self.noise[self.calls], tuple(size)).copy())
        self.calls += 1
        return noise


@pytest.mark.parametrize("name", ["ScoreCAM", "SSCAM", "ISCAM"])
def test_score_cam_family_matches_torchcam(resnet18, x, name):
    model, variables = resnet18
    layer, sigma = "layer3", 0.5
    x = np.ascontiguousarray(x[:, :SCORE_SIZE, :SCORE_SIZE])
    kwargs = {} if name == "ScoreCAM" else {"num_samples": SCORE_SAMPLES}
    if name == "SSCAM":
        kwargs["std"] = sigma
    with getattr(methods, name)(model, layer, batch_size=64,
                                input_shape=(3, SCORE_SIZE, SCORE_SIZE),
                                **kwargs) as extractor:
        if name == "SSCAM":
            extractor._distrib = noise = _MaskNoise(256, sigma)
        model(_nchw(x))
        expected = extractor(class_idx=TARGETS, normalized=False)[0].numpy()
    if name == "SSCAM":
        assert noise.calls == SCORE_SAMPLES
    split = jaxcam.models.load("resnet18", layer=layer, weights=variables)
    options = dict(chunk_size=64, upsample=False, normalize=False)
    t = np.array(TARGETS)
    if name == "ScoreCAM":
        got = jaxcam.score_cam(split, x, t, variant="torchcam", **options)
    elif name == "SSCAM":
        got = jaxcam.ss_cam(split, x, t, key=jax.random.key(KEY), n_samples=SCORE_SAMPLES,
                            noise=sigma, **options)
    else:
        got = jaxcam.is_cam(split, x, t, steps=SCORE_SAMPLES, **options)
    got = np.asarray(got)
    assert got.shape == expected.shape
    scale = np.abs(expected).max(axis=(1, 2))
    assert np.all(scale > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale.max())
