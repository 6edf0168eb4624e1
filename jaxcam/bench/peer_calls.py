"""Calling a peer library's CAM on a PyTorch model: torch and NumPy only, no JAX, so that
a process measuring a peer's memory (``python -m benchmarks memory``) holds nothing of
jaxcam's. It imports nothing of the jaxcam package and may be loaded by its path."""

from __future__ import annotations

import contextlib
import importlib

import numpy as np


# zoo model -> (its torch reference, the torch module of the default layer, torch-cam's name)
TORCH_MODELS = {
    "resnet18": (lambda r: r.resnet(18), lambda m: m.layer4[-1], "layer4"),
    "resnet50": (lambda r: r.resnet(50), lambda m: m.layer4[-1], "layer4"),
}


@contextlib.contextmanager
def patched(obj, name: str, value):
    """``obj.name = value`` within the block."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def call(library: str, cls: str, kwargs: dict, model, layer, torchcam_layer: str,
         x: np.ndarray, classes: np.ndarray):
    """A call of the peer's class ``cls`` on ``model`` at ``layer`` (pytorch-grad-cam: the
    module; torch-cam: its name ``torchcam_layer``) for images ``x`` (B, H, W, 3) and
    ``classes`` (B,), returning maps (B, h, w). ``kwargs`` go to the constructor
    (torch-cam) or are set as attributes (pytorch-grad-cam's ScoreCAM ``batch_size``).
    A torch-cam call has ``.extractor`` (remove its hooks when done)."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    if library == "pytorch_grad_cam":
        pgc = importlib.import_module("pytorch_grad_cam")
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = getattr(pgc, cls)(model, [layer])
        for name, value in kwargs.items():
            setattr(cam, name, value)
        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        quiet = getattr(getattr(pgc, "score_cam", None), "tqdm", None)

        def run():
            if quiet is not None:                     # ScoreCAM's progress bar, silenced
                with patched(quiet, "tqdm", lambda it, **kw: it):
                    return cam(input_tensor=xt, targets=targets)
            return cam(input_tensor=xt, targets=targets)

        return run
    methods = importlib.import_module("torchcam.methods")
    extractor = getattr(methods, cls)(model, target_layer=torchcam_layer, **kwargs)
    idx = [int(c) for c in classes]

    def run():
        scores = model(xt)
        maps = extractor(class_idx=idx, scores=scores)[0]
        return maps.detach().numpy()

    run.extractor = extractor
    return run
