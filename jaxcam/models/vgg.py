"""VGG 11/13/16/19, with and without BatchNorm (Simonyan & Zisserman, 2015).

Layer names and parameter layout follow torchvision: ``features.0`` .. ``features.N``
(one stage per conv, BatchNorm, ReLU and max-pool), ``avgpool`` (adaptive, to 7x7),
``classifier.0`` .. ``classifier.6``. The Flax ``classifier.0`` flattens in NHWC order;
the checkpoint converter permutes torchvision's NCHW-ordered weight accordingly.
"""

from __future__ import annotations

from jaxcam.models._layers import (Act, AdaptiveAvgPool, BatchNorm, Conv, Identity, Linear,
                                   MaxPool, Stage, symmetric)

# Channel plans; "M" is a 2x2 max-pool.
CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}


def vgg_stages(depth: int, batch_norm: bool = False, num_classes: int = 1000) -> tuple[Stage, ...]:
    """The named stages of a torchvision VGG."""
    ops: list[tuple[object, bool]] = []
    for item in CONFIGS[depth]:
        if item == "M":
            ops.append((MaxPool(2, 2), False))
            continue
        ops.append((Conv(item, 3, padding=symmetric(1), bias=True), False))
        if batch_norm:
            ops.append((BatchNorm(1e-5), False))
        ops.append((Act(), True))
    stages = [Stage(f"features.{i}", op, activates=act) for i, (op, act) in enumerate(ops)]
    stages.append(Stage("avgpool", AdaptiveAvgPool(7)))
    classifier = [(Linear(4096), False), (Act(), True), (Identity(), False),
                  (Linear(4096), False), (Act(), True), (Identity(), False),
                  (Linear(num_classes), False)]
    stages += [Stage(f"classifier.{i}", op, activates=act) for i, (op, act) in enumerate(classifier)]
    return tuple(stages)


def vgg_default_layer(stages: tuple[Stage, ...]) -> str:
    """The last ReLU of ``features`` (``features.29`` for VGG16), the usual Grad-CAM target."""
    return [s.name for s in stages if s.activates and s.name.startswith("features.")][-1]
