"""Metrics throughput: jaxcam.metrics against torch-cam's and pytorch-grad-cam's, same weights.

    python benchmarks/bench_metrics.py                        # ResNet-50, 224 px, batch 16
    python benchmarks/bench_metrics.py --batch 4 --json metrics.json

ResNet-50 (seeded random weights, the same in both frameworks), a batch of random
224 x 224 inputs, and the same maps for every library (jaxcam's Grad-CAM at ``layer4``,
upsampled and normalised). Each row times one metric over the batch and gives images per
second and the largest difference of the per-batch mean from the peer's:

* average drop and increase in confidence: ``jaxcam.metrics`` against torch-cam 0.5.0's
  ``ClassificationMetric`` (its maps given by a stand-in extractor);
* deletion and insertion, 20 steps (21 points), zeros as both substrates: against
  torch-cam's ``DeletionInsertionMetric``, which computes both curves in one call;
* ROAD most relevant first over 9 percentiles: against pytorch-grad-cam 1.5.7's
  ``ROADMostRelevantFirstAverage`` (its imputation noise off, ``torch.randn_like`` patched
  to zeros; SciPy's sparse direct solve per image and percentile).

jaxcam's calls are ``jax.jit``-compiled (the first call, compile and one run, apart;
medians of ``--repeats``); the peers run eagerly with torch on the same cores, medians of
``--peer-repeats``. The first row is each framework's plain forward pass of the batch: on
a CPU every metric is a number of such forwards, and this row says how fast each
framework's convolutions are here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jaxcam  # noqa: E402
from jaxcam import metrics as M  # noqa: E402
from _standin import torchvision_standin  # noqa: E402
from _timing import emit, machine  # noqa: E402


def _median_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peer-repeats", type=int, default=1)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()

    import torch
    from jaxcam.bench import torch_models

    model = torch_models.randomize_(torch_models.resnet(50), seed=0).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.pth"
        torch.save(model.state_dict(), path)
        split = jaxcam.models.load("resnet50", layer="layer4", weights=path)
    x = np.random.default_rng(0).normal(size=(args.batch, args.size, args.size, 3)).astype(
        np.float32)
    logits = jax.jit(split.logits)(x)
    classes = np.asarray(logits).argmax(axis=1)
    maps = np.array(jax.jit(jaxcam.grad_cam)(split, x, classes))
    predict = M.predictor(split)
    x_t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    softmax = partial(torch.softmax, dim=-1)
    idx = [int(c) for c in classes]

    calls = {
        "drop": jax.jit(lambda x, m, c: (M.average_drop(predict, x, m, c, eps=1e-7),
                                         M.increase_in_confidence(predict, x, m, c))),
        "deletion_insertion": jax.jit(lambda x, m, c: (
            M.deletion(predict, x, m, c, steps=20),
            M.insertion(predict, x, m, c, steps=20, substrate=0.0))),
        "road": jax.jit(lambda x, m, c: M.road(predict, x, m, c, order="morf")),
        "forward": jax.jit(lambda x, m, c: split.logits(x)),
    }
    ours, values = {}, {}
    for name, fn in calls.items():          # the first call compiles and gives the values
        compile_s, out = _median_time(lambda: jax.block_until_ready(fn(x, maps, classes)), 1)
        values[name] = jax.tree_util.tree_map(np.asarray, out)
        median_s, _ = _median_time(lambda: jax.block_until_ready(fn(x, maps, classes)),
                                   args.repeats)
        ours[name] = {"compile_s": compile_s, "median_s": median_s}
    drop, increase = values["drop"]
    deletion, insertion = values["deletion_insertion"]
    road = values["road"]

    from torchcam import metrics as tcm

    def classification():
        metric = tcm.ClassificationMetric(torch_models.FixedMaps(model, maps), softmax)
        metric.update(x_t, class_idx=idx)
        return metric.summary()

    def deletion_insertion():
        metric = tcm.DeletionInsertionMetric(torch_models.FixedMaps(model, maps), softmax,
                                             steps=20)
        metric.update(x_t, class_idx=idx)
        return metric.summary()

    with torchvision_standin():
        from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    def road_peer():
        saved = torch.randn_like
        torch.randn_like = torch.zeros_like
        try:
            return ROADMostRelevantFirstAverage()(
                x_t, maps, [ClassifierOutputSoftmaxTarget(c) for c in idx], model)
        finally:
            torch.randn_like = saved

    with torch.inference_mode():
        t_fwd, _ = _median_time(lambda: model(x_t), args.peer_repeats + 1)
        t_cls, peer_cls = _median_time(classification, args.peer_repeats)
        t_di, peer_di = _median_time(deletion_insertion, args.peer_repeats)
    t_road, peer_road = _median_time(road_peer, args.peer_repeats)

    b = args.batch
    rows = {
        "forward pass of the batch (the floor)": {
            "jaxcam_s": ours["forward"]["median_s"], "peer_s": t_fwd, "max_diff": 0.0},
        "average drop + increase (torch-cam ClassificationMetric)": {
            "jaxcam_s": ours["drop"]["median_s"], "peer_s": t_cls,
            "max_diff": float(max(abs(drop.mean() - peer_cls["avg_drop"]),
                                  abs(increase.mean() - peer_cls["conf_increase"])))},
        "deletion + insertion, 20 steps (torch-cam DeletionInsertionMetric)": {
            "jaxcam_s": ours["deletion_insertion"]["median_s"], "peer_s": t_di,
            "max_diff": float(max(abs(deletion.mean() - peer_di["deletion_auc"]),
                                  abs(insertion.mean() - peer_di["insertion_auc"])))},
        "ROAD MoRF, 9 percentiles (pytorch-grad-cam ROADMostRelevantFirstAverage)": {
            "jaxcam_s": ours["road"]["median_s"], "peer_s": t_road,
            "max_diff": float(np.abs(road - peer_road).max())},
    }
    compile_s = {name: t["compile_s"] for name, t in ours.items()}
    for row in rows.values():
        row["jaxcam_img_s"] = b / row["jaxcam_s"]
        row["peer_img_s"] = b / row["peer_s"]
        row["speedup"] = row["peer_s"] / row["jaxcam_s"]
    emit({"machine": machine(), "model": f"resnet50 (random weights), {args.size} px, "
          f"batch {b}", "jaxcam_compile_s": compile_s, "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
