"""Eigen-CAM and Eigen-Grad-CAM against pytorch-grad-cam, image by image: their agreement
as the suite measures it, and with pytorch-grad-cam's projection flipped to jaxcam's sign
rule (the principal component's channel loadings sum to a non-negative number, the same
as the projection P correlating non-negatively with the rows' sums of the centred X).

    python -m benchmarks.eigen_sign [--batch 8] [--model resnet50 --layer layer4 --size 224]

The suite's inputs and models (``jaxcam.bench.Setup``: by default ResNet-50 at layer4,
224 px, the same seeded weights in both libraries). Where a row "as is" is near -0.8 and the flipped
one is 1.000, the two maps differ by the sign of the component alone.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks._standin import torchvision_standin
from jaxcam import bench


def _signed(get_2d_projection):
    """``get_2d_projection`` with each image's sign set by jaxcam's rule."""
    def projection(batch):
        out = []
        for x, p in zip(batch, get_2d_projection(batch)):
            xc = x.reshape(x.shape[0], -1).T
            xc = xc - xc.mean(0)
            out.append(p if float(p.ravel() @ xc.sum(1)) >= 0 else -p)
        return np.float32(out)
    return projection


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eigen_sign",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    rows = run(args.model, args.layer, args.size, args.batch)
    for method, (as_is, signed) in rows.items():
        print(f"{method}: as is, mean {np.mean(as_is):.3f}, per image "
              f"{[round(v, 3) for v in as_is]}; with jaxcam's sign rule, min "
              f"{min(signed):.6f} ({sum(v < 0 for v in as_is)} of {args.batch} images "
              "had the other sign)")
    return 0


def run(model: str, layer: str, size: int, batch: int) -> dict[str, tuple[list, list]]:
    """{method: (per-image agreement as is, per-image agreement with the sign rule)}."""
    rows = {}
    with torchvision_standin():                       # pytorch-grad-cam imports torchvision
        import pytorch_grad_cam.eigen_cam as eigen_cam
        import pytorch_grad_cam.eigen_grad_cam as eigen_grad_cam

        setup = bench.Setup(model, layer, size)
        if setup.torch_model is None:
            raise ValueError(f"no PyTorch reference of {model} at {layer!r}: the peers run "
                             "on the ResNets at layer4 (jaxcam.bench.Setup)")
        x, classes = setup.inputs(batch)
        for method, module in (("eigen_cam", eigen_cam), ("eigen_grad_cam", eigen_grad_cam)):
            case = bench.Case(model, layer, size, method, batch)
            (peer,) = bench.case_peers(case)
            mine = np.asarray(bench.jaxcam_call(setup, case, x, classes)())
            theirs = np.asarray(bench.peer_call(peer, setup, case, x, classes)())
            original = module.get_2d_projection
            module.get_2d_projection = _signed(original)
            try:
                flipped = np.asarray(bench.peer_call(peer, setup, case, x, classes)())
            finally:
                module.get_2d_projection = original
            rows[method] = (bench.agreement(mine, theirs, per_image=True),
                            bench.agreement(mine, flipped, per_image=True))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
