"""The shapes networks: five-conv CNNs trained on :mod:`jaxcam.datasets.shapes`.

Stages: ``conv1``, ``act1``, ``pool1``, ``conv2``, ``act2``, ``pool2``, ``conv3``,
``act3``, ``conv4``, ``act4``, ``pool4``, ``conv5``, ``act5``, ``avgpool``, ``fc``. The
convolutions are 3x3 with bias (batch normalisation is folded into them after
training), the pools 2x2 max pools. At 64 px, ``act4`` is a 16x16 map and ``act5``, the
usual CAM target, an 8x8 map.

``shapes-relu`` runs ReLU and ``shapes-smooth`` GELU (exact, not tanh-approximated):
split at ``act5`` both heads are global average pooling and one linear layer; split at
``act4`` the head holds ``conv5`` and its activation, piecewise linear in one network and
smooth (almost everywhere: the max pool selects) in the other.
"""

from __future__ import annotations

from jaxcam.viz._preprocess import Preprocess
from jaxcam.models._layers import Act, Conv, GlobalAvgPool, Linear, MaxPool, Stage, symmetric

SHAPES_MODELS = {"shapes-relu": "relu", "shapes-smooth": "gelu"}   # name: activation
# (pixel - 127.5) / 64 at the dataset's 64 px; photos are resized and centre-cropped
SHAPES_PREPROCESS = Preprocess(size=64, resize=64, mean=(127.5,) * 3, std=(64.0,) * 3)

# (features as a multiple of the width, a 2x2 max pool after the activation)
BLOCKS = ((1, True), (2, True), (4, False), (4, True), (8, False))
WIDTH = 16


def shapes_stages(num_classes: int, width: int = WIDTH) -> tuple[Stage, ...]:
    """The named stages of a shapes network with ``num_classes`` outputs."""
    stages = []
    for i, (multiple, pool) in enumerate(BLOCKS, start=1):
        stages += [Stage(f"conv{i}", Conv(multiple * width, 3, padding=symmetric(1), bias=True)),
                   Stage(f"act{i}", Act(), activates=True)]
        if pool:
            stages.append(Stage(f"pool{i}", MaxPool(2, 2)))
    return (*stages, Stage("avgpool", GlobalAvgPool()), Stage("fc", Linear(num_classes)))
