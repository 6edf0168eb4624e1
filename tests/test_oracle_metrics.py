"""jaxcam.metrics == torch-cam 0.5.0's and pytorch-grad-cam 1.5.7's metrics on identical
weights, inputs and maps.

torch-cam's ``ClassificationMetric`` (average drop, increase in confidence) and
``DeletionInsertionMetric`` take a CAM extractor; here the extractor is a stand-in that
returns fixed maps (jaxcam's normalised Grad-CAM at ResNet-18's layer3, 4 x 4 for 64 x 64
inputs, so both libraries also resize them), so what is compared is the metric alone.
torch-cam accumulates sums over the batch; its means are compared with the means of
jaxcam's per-image values. Its quirks, reproduced by options: the drop's denominator is
p + 1e-7 (``eps=1e-7``), and its insertion starts from the same baseline as its deletion
(zeros by default; jaxcam's default is RISE's blur, so ``substrate=0``).

pytorch-grad-cam's ROAD solves its imputation with SciPy's sparse direct solver in float64
and adds 0.01 * ``torch.randn_like`` noise, unseeded; the noise is switched off here
(``torch.randn_like`` patched to zeros), which is jaxcam's ``noise=0``.
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np
import pytest

import jaxcam
import test_oracle_pytorch_grad_cam as pgc_base
import test_oracle_torchcam as tc_base
from jaxcam import metrics as M

torch = pytest.importorskip("torch")
tc_metrics = pytest.importorskip("torchcam.metrics")
torch_reference = pytest.importorskip("jaxcam.bench.torch_models")

SIZE, LAYER = 64, "layer3"
pgc = pgc_base.pgc                    # pytorch_grad_cam, with the torchvision stand-in


resnet18 = tc_base.resnet18          # (torch ResNet-18, jaxcam variables), same weights
_nchw = tc_base._nchw


@pytest.fixture(scope="module")
def case(resnet18):
    model, variables = resnet18
    split = jaxcam.models.load("resnet18", layer=LAYER, weights=variables)
    x = np.random.default_rng(0).normal(size=(4, SIZE, SIZE, 3)).astype(np.float32)
    classes = np.asarray(split.logits(x)).argmax(axis=1)        # the predicted classes
    maps = np.asarray(jaxcam.grad_cam(split, x, classes, upsample=False))
    assert maps.shape == (4, 4, 4) and np.all(maps.max(axis=(1, 2)) == 1)
    return model, split, x, maps, [int(c) for c in classes]


def test_average_drop_and_increase_match_torchcam(case):
    model, split, x, maps, classes = case
    metric = tc_metrics.ClassificationMetric(torch_reference.FixedMaps(model, maps),
                                             partial(torch.softmax, dim=-1))
    metric.update(_nchw(x), class_idx=classes)
    want = metric.summary()
    predict = M.predictor(split)
    drop = M.average_drop(predict, x, maps, np.array(classes), eps=1e-7)
    increase = M.increase_in_confidence(predict, x, maps, np.array(classes))
    assert float(np.mean(drop)) == pytest.approx(want["avg_drop"], abs=1e-5)
    assert float(np.mean(increase)) == pytest.approx(want["conf_increase"], abs=1e-5)
    assert 0 < want["avg_drop"] < 1                  # a case that can fail


def test_deletion_and_insertion_match_torchcam(case):
    """On maps at the input's size: resized by each library, maps equal to a rounding can
    rank near-ties differently, which moves the AUCs by about 1e-5."""
    model, split, x, maps, classes = case
    maps = np.asarray(jax.image.resize(maps, (4, SIZE, SIZE), "bilinear", antialias=False))
    metric = tc_metrics.DeletionInsertionMetric(torch_reference.FixedMaps(model, maps),
                                                partial(torch.softmax, dim=-1), steps=20)
    metric.update(_nchw(x), class_idx=classes)
    want = metric.summary()
    predict = jax.jit(M.predictor(split))
    classes = np.array(classes)
    deletion = M.deletion(predict, x, maps, classes, steps=20)
    insertion = M.insertion(predict, x, maps, classes, steps=20, substrate=0.0)
    assert float(np.mean(deletion)) == pytest.approx(want["deletion_auc"], abs=1e-5)
    assert float(np.mean(insertion)) == pytest.approx(want["insertion_auc"], abs=1e-5)
    reversed_order = M.deletion(predict, x, 1 - maps, classes, steps=20)
    assert abs(float(np.mean(reversed_order)) - want["deletion_auc"]) > 1e-4  # can fail


# --- ROAD against pytorch-grad-cam


def test_linear_imputation_matches_pytorch_grad_cam(pgc, case):
    """The imputed values within 1e-4 of SciPy's float64 direct solve, for a quarter and
    for nine tenths of the pixels removed."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    _, _, x, maps, _ = case
    big = np.array(jax.image.resize(maps, (4, SIZE, SIZE), "bilinear", antialias=False))
    for share in (25, 90):
        known = big < np.percentile(big.reshape(4, -1), share, axis=1)[:, None, None]
        got = M.linear_imputation(x, known)
        assert float(np.max(got.residual)) <= 1e-6
        for b in range(2):
            want = NoisyLinearImputer(noise=0.0)(_nchw(x)[b], torch.from_numpy(
                known[b].astype(np.float32))).numpy().transpose(1, 2, 0)
            np.testing.assert_allclose(np.asarray(got.images[b]), want, atol=1e-4)
            assert np.abs(want - x[b]).max() > 0.1       # something was imputed


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_scores_match_pytorch_grad_cam(pgc, case, order, monkeypatch):
    from pytorch_grad_cam.metrics import road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, split, x, maps, classes = case
    big = np.array(jax.image.resize(maps, (4, SIZE, SIZE), "bilinear", antialias=False))
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
    metric = (road.ROADMostRelevantFirstAverage if order == "morf"
              else road.ROADLeastRelevantFirstAverage)()
    targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
    want = metric(_nchw(x), big, targets, model)
    got = M.road(jax.jit(M.predictor(split)), x, big, np.array(classes), order=order)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
    assert np.abs(want).max() > 1e-3                   # the scores moved: it can fail
