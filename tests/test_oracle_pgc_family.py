"""jaxcam's other pytorch-grad-cam methods == pytorch-grad-cam 1.5.7's, on identical weights.

The set-up is :mod:`test_oracle_pytorch_grad_cam`'s, whose fixtures are reused: the
PyTorch reference models (torchvision parameter names, random weights) and jaxcam's
ports of them loaded from the same state dict, ResNet-18 split at ``layer4`` (96 x 96
inputs, a 3 x 3 map) and VGG-16 at ``features.29`` (64 x 64, 4 x 4); two images.

What is compared, per model:

* raw maps, at the target layer's resolution: pytorch-grad-cam's
  ``BaseCAM.compute_cam_per_layer`` passes ``ReLU(get_cam_image(...))`` to
  ``scale_cam_image(cam, target_size)``; a spy on that name in ``pytorch_grad_cam.base_cam``
  records it (FinerCAM goes through its base GradCAM's ``compute_cam_per_layer``, so the
  same spy serves). It must equal jaxcam's ``upsample=False, normalize=False`` maps to
  1e-4 relative (plus 1e-4 of the largest value), and be non-zero for every image:
  XGradCAM (eps 1e-7), LayerCAM, HiResCAM, GradCAMElementWise, AblationCAM, ShapleyCAM
  (``ClassifierOutputReST`` targets, jaxcam's default ``link="rest"``) and FinerCAM (the
  predicted class, and a given ``target_idx``), all with ``ClassifierOutputTarget``
  (logit) targets unless said otherwise;
* Eigen-CAM, EigenGrad-CAM and Grad-CAM's ``eigen_smooth``, up to the sign of the
  principal component. ``get_2d_projection`` returns P = X_c v (X_c the centred
  (positions, channels) matrix of the (weighted) activations, v its first right singular
  vector) with whichever sign of v LAPACK returns; jaxcam fixes the sign so that
  sum_k v_k >= 0, which is the same as P correlating non-negatively with the per-position
  channel sum of X_c (sum_n P_n sum_k X_c[n, k] = v^T X_c^T X_c 1 = sigma_1^2 sum_k v_k).
  A spy on ``get_2d_projection`` in the module that calls it records its argument X and
  P; the test flips P per image by that rule (computed from X), and jaxcam's raw maps
  must equal ReLU(flipped P). Independently of the rule, each of jaxcam's maps must equal
  ReLU(P) or ReLU(-P);
* on ResNet-18, Grad-CAM at two layers (layer3, layer4) and with ``aug_smooth``: each
  layer's raw map as above, and pytorch-grad-cam's returned (scaled, ``cv2.resize``-d,
  fused) maps against jaxcam's defaults, by the mean absolute difference (the resizing
  kernels differ slightly). Both scale each layer's map at its own resolution, then
  resize it, before the mean.

AblationCAM is compared in float64 (both libraries): its weights (Y - Y_k) / Y are
differences of nearly equal whole-network scores, and each library computes the
un-ablated Y in another pass (another batch size, so another summation order) than the
Y_k, so a float32 rounding error e in Y moves every weight by e / Y and the map by
(e / Y) sum_k A^k: in float32 the two agree only to about 1.5e-4 of the map on VGG-16,
which measures rounding, not the method; in float64 they agree to about 1e-6 (what
remains is pytorch-grad-cam rounding the scores to float32).
"""

from __future__ import annotations

import numpy as np
import pytest
import test_oracle_pytorch_grad_cam as base

import jaxcam

torch = pytest.importorskip("torch")

# the fixtures, by name in this module so that pytest uses them here
pgc, case = base.pgc, base.case
TARGETS = base.TARGETS

RTOL = 1e-4


def _nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _logit_targets():
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(c) for c in TARGETS]


def _run_pgc(pgc, make_cam, x, targets, *, requires_grad=True, **call):
    """Runs ``make_cam()`` (a pytorch-grad-cam CAM object) on x (NHWC) under the
    ``scale_cam_image`` spy: (raw maps, one (B, h, w) per target layer; returned maps)."""
    real, raw = pgc.base_cam.scale_cam_image, []

    def spy(cam, target_size=None):
        if target_size is not None:  # the call in compute_cam_per_layer
            raw.append(np.array(cam))
        return real(cam, target_size)

    inputs = _nchw(x)
    if requires_grad:  # the case's parameters need none, so the input must (for the hooks)
        inputs.requires_grad_(True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pgc.base_cam, "scale_cam_image", spy)
        with make_cam() as cam:
            default = cam(input_tensor=inputs, targets=targets, **call)
    return raw, np.asarray(default)


def _check_raw(got, expected, rtol=RTOL):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.ndim == 3
    scale = expected.max(axis=(1, 2))
    assert np.all(scale > 0)  # non-trivial maps for every image, so the test can fail
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale.max())


# --- methods that differ from Grad-CAM only in the weights or the element-wise product

GRADIENT_FAMILY = {  # jaxcam method: (pytorch-grad-cam class name, jaxcam options)
    "xgrad_cam": ("XGradCAM", {"eps": 1e-7}),
    "layer_cam": ("LayerCAM", {}),
    "hires_cam": ("HiResCAM", {}),
    "grad_cam_elementwise": ("GradCAMElementWise", {}),
}


@pytest.mark.parametrize("method", sorted(GRADIENT_FAMILY))
def test_gradient_family_raw_maps(method, pgc, case):
    """XGradCAM (eps 1e-7), LayerCAM, HiResCAM, GradCAMElementWise == jaxcam's, logit
    targets, one class per image."""
    model, layer, split, x = case
    name, options = GRADIENT_FAMILY[method]
    raw, _ = _run_pgc(pgc, lambda: getattr(pgc, name)(model=model, target_layers=[layer]),
                      x, _logit_targets())
    assert len(raw) == 1
    got = getattr(jaxcam, method)(split, x, np.asarray(TARGETS, np.int32), upsample=False,
                                  normalize=False, **options)
    _check_raw(got, raw[0])


# --- the principal-component methods, up to the component's sign

def _capture_projection(mp, module, captured):
    """Spies on ``module.get_2d_projection``: records (its argument, its result)."""
    real = module.get_2d_projection

    def spy(activations):
        projection = real(activations)
        captured.append((np.array(activations), np.array(projection)))
        return projection

    mp.setattr(module, "get_2d_projection", spy)


def _check_projection(got, weighted, projection):
    """jaxcam's raw maps == ReLU(P flipped by jaxcam's sign rule), and each == ReLU(+-P).

    weighted: get_2d_projection's argument (B, K, h, w); projection: its P (B, h, w)."""
    got = np.asarray(got, np.float64)
    b = weighted.shape[0]
    xc = weighted.reshape(b, weighted.shape[1], -1).astype(np.float64)
    xc = xc - xc.mean(axis=2, keepdims=True)                     # centred over positions
    p = projection.reshape(b, -1).astype(np.float64)
    corr = np.sum(p * xc.sum(axis=1), axis=1)                    # <P, sum_k X_c[:, k]>
    # the sign is well defined: P is not orthogonal to the channel sum
    assert np.all(np.abs(corr) > 1e-3 * np.linalg.norm(p, axis=1)
                  * np.linalg.norm(xc.sum(axis=1), axis=1))
    for g, pb in zip(got, projection, strict=True):              # rule-free: ReLU(+-P)
        assert min(np.abs(g - np.maximum(s * pb, 0)).max() for s in (1, -1)) \
            <= RTOL * np.abs(pb).max()
    sign = np.where(corr < 0, -1.0, 1.0)[:, None, None]
    _check_raw(got, np.maximum(sign * projection, 0))


@pytest.mark.parametrize("method", ["eigen_cam", "eigen_grad_cam"])
def test_eigen_raw_maps_up_to_sign(method, pgc, case):
    """EigenCAM (activations) and EigenGradCAM (gradients x activations) == jaxcam's, with
    pytorch-grad-cam's projection flipped to jaxcam's sign convention."""
    model, layer, split, x = case
    module, cls = {"eigen_cam": (pgc.eigen_cam, pgc.EigenCAM),
                   "eigen_grad_cam": (pgc.eigen_grad_cam, pgc.EigenGradCAM)}[method]
    captured = []
    with pytest.MonkeyPatch.context() as mp:
        _capture_projection(mp, module, captured)
        raw, _ = _run_pgc(pgc, lambda: cls(model=model, target_layers=[layer]), x,
                          _logit_targets(), requires_grad=method != "eigen_cam")
    assert len(captured) == len(raw) == 1
    weighted, projection = captured[0]
    np.testing.assert_array_equal(raw[0], np.maximum(projection, 0))   # the spies agree
    got = getattr(jaxcam, method)(split, x, np.asarray(TARGETS, np.int32), upsample=False,
                                  normalize=False)
    _check_projection(got, weighted, projection)


def test_eigen_smooth_raw_maps_up_to_sign(pgc, case):
    """GradCAM(eigen_smooth=True): the first component of the weighted activations ==
    jaxcam's ``eigen_smooth=True``, up to the sign convention."""
    model, layer, split, x = case
    captured = []
    with pytest.MonkeyPatch.context() as mp:
        _capture_projection(mp, pgc.base_cam, captured)
        raw, _ = _run_pgc(pgc, lambda: pgc.GradCAM(model=model, target_layers=[layer]), x,
                          _logit_targets(), eigen_smooth=True)
    assert len(captured) == len(raw) == 1
    weighted, projection = captured[0]
    np.testing.assert_array_equal(raw[0], np.maximum(projection, 0))
    got = jaxcam.grad_cam(split, x, np.asarray(TARGETS, np.int32), eigen_smooth=True,
                          upsample=False, normalize=False)
    _check_projection(got, weighted, projection)


# --- Ablation-CAM, ShapleyCAM, FinerCAM

def test_ablation_cam_raw_maps(pgc, case, x64):
    """AblationCAM (ablated channels set to 0: both layers are post-ReLU) == jaxcam's
    ``value=0``, the predicted class of one image, in float64 (module docstring).

    pytorch-grad-cam ablates by putting its AblationLayer in place of the target layer,
    which outputs the cached activations with channels zeroed and ignores its input, then
    running the whole network on ``batch_size`` copies of the image. The layers before it
    compute a value it discards; a pre-hook feeds them one copy instead of 128 (the maps
    are unchanged, bit for bit), which saves most of the time on 2 CPU cores."""
    from pytorch_grad_cam.ablation_layer import AblationLayer

    model, layer, split, x = case
    x = np.ascontiguousarray(x[:1], np.float64)

    def one_copy(module, args):
        (batch,) = args
        if any(isinstance(m, AblationLayer) for m in model.modules()):     # ablating
            assert torch.equal(batch, batch[:1].expand_as(batch))
            return (batch[:1],)
        return None

    def make():
        cam = pgc.AblationCAM(model=model, target_layers=[layer])
        cam.batch_size = 128
        return cam

    hook = model.register_forward_pre_hook(one_copy)
    try:
        model.double()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pgc.ablation_cam.tqdm, "tqdm", lambda it, **kw: it)   # quiet
            raw, _ = _run_pgc(pgc, make, x, None, requires_grad=False)
    finally:
        model.float()          # float32 -> float64 -> float32 is exact: the case's weights
        hook.remove()
    assert len(raw) == 1
    got = jaxcam.ablation_cam(split.astype(np.float64), x, None, chunk_size=128,
                              upsample=False, normalize=False)
    assert np.asarray(got).dtype == np.float64
    _check_raw(got, raw[0])


def test_shapley_cam_raw_maps(pgc, case):
    """ShapleyCAM with ClassifierOutputReST targets == jaxcam's default ``link="rest"``.

    pytorch-grad-cam gets H A by double backpropagation from the INPUT (it sets
    ``compute_input_gradient=True`` and differentiates the gradient hook's output), so the
    case's parameters without gradients do not matter. H A is not zero here (the ReST
    target's softmax part), so the map is not Grad-CAM's (checked)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST

    model, layer, split, x = case
    raw, _ = _run_pgc(pgc, lambda: pgc.ShapleyCAM(model=model, target_layers=[layer]), x,
                      [ClassifierOutputReST(c) for c in TARGETS], requires_grad=False)
    assert len(raw) == 1
    t = np.asarray(TARGETS, np.int32)
    got = jaxcam.shapley_cam(split, x, t, upsample=False, normalize=False)
    _check_raw(got, raw[0])
    grad_cam = np.asarray(jaxcam.grad_cam(split, x, t, link="rest", upsample=False,
                                          normalize=False))
    assert np.abs(grad_cam - raw[0]).max() > 100 * RTOL * raw[0].max()


@pytest.mark.parametrize("target", ["predicted", "given"])
def test_finer_cam_raw_maps(target, pgc, case):
    """FinerCAM (GradCAM base; each image's class against the classes ranked 1, 2, 3 by
    |S_j - S_c|) with ``targets=None`` == jaxcam's ``finer_cam``: ``target_idx=None`` (the
    predicted class) against ``target=None``, ``target_idx=c`` against ``target=c``."""
    model, layer, split, x = case
    c = None if target == "predicted" else TARGETS[0]
    raw, _ = _run_pgc(pgc, lambda: pgc.FinerCAM(model=model, target_layers=[layer]), x,
                      None, target_idx=c)
    assert len(raw) == 1
    got = jaxcam.finer_cam(split, x, c, upsample=False, normalize=False)
    _check_raw(got, raw[0])


# --- several layers, test-time augmentation: the returned maps, loosely

@pytest.fixture(scope="module")
def two_layers(pgc, case):
    """pytorch-grad-cam's GradCAM at ResNet-18's layer3 and layer4: (raw maps per layer,
    returned maps), and the case."""
    model, _, _, x = case
    raw, default = _run_pgc(
        pgc, lambda: pgc.GradCAM(model=model, target_layers=[model.layer3[-1],
                                                             model.layer4[-1]]),
        x, _logit_targets())
    return raw, default, case


@pytest.mark.parametrize("case", ["resnet18"], indirect=True)
def test_multi_layer_raw_maps(two_layers):
    """Each layer's raw map of a two-layer GradCAM == jaxcam's at that cut (``Split.at``)."""
    raw, _, (_, _, split, x) = two_layers
    assert [r.shape[1:] for r in raw] == [(6, 6), (3, 3)]
    t = np.asarray(TARGETS, np.int32)
    for layer, expected in zip(["layer3", "layer4"], raw, strict=True):
        _check_raw(jaxcam.grad_cam(split.at(layer), x, t, upsample=False, normalize=False),
                   expected)


@pytest.mark.parametrize("case", ["resnet18"], indirect=True)
def test_multi_layer_default_maps(two_layers):
    """GradCAM at layer3 and layer4 (each layer's map scaled, resized, then the mean, scaled
    again) == jaxcam's ``layers=["layer3", "layer4"], fuse="mean"``, up to the resizing
    kernels (which agree to ~1e-6 here)."""
    _, expected, (_, _, split, x) = two_layers
    got = np.asarray(jaxcam.grad_cam(split, x, np.asarray(TARGETS, np.int32),
                                     layers=["layer3", "layer4"], fuse="mean"))
    assert got.shape == expected.shape == x.shape[:3]
    assert np.abs(got - expected).mean() < 1e-4


@pytest.mark.parametrize("case", ["resnet18"], indirect=True)
def test_aug_smooth_default_maps(pgc, case):
    """GradCAM(aug_smooth=True): the mean of the six (flip x intensity 0.9, 1, 1.1) copies'
    maps, which pytorch-grad-cam does not rescale, min-max scaled == jaxcam's
    ``aug_smooth=True`` (which rescales the mean), up to the resizing kernels."""
    model, layer, split, x = case
    _, mean = _run_pgc(pgc, lambda: pgc.GradCAM(model=model, target_layers=[layer]), x,
                       _logit_targets(), aug_smooth=True)
    lo = mean.min(axis=(1, 2), keepdims=True)
    hi = mean.max(axis=(1, 2), keepdims=True)
    assert np.all(hi - lo > 0)
    expected = (mean - lo) / (hi - lo)
    got = np.asarray(jaxcam.grad_cam(split, x, np.asarray(TARGETS, np.int32),
                                     aug_smooth=True))
    assert got.shape == expected.shape == x.shape[:3]
    assert np.abs(got - expected).mean() < 1e-4
