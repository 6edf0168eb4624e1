"""ResNet-18/34/50/101/152 (He et al., 2016), torchvision's v1.5 layout.

Stages: ``conv1``, ``bn1``, ``relu``, ``maxpool``, one stage per residual block
(``layer1.0`` ..), ``avgpool``, ``fc``; ``layer1`` .. ``layer4`` name the output of their
last block. Bottlenecks put the stride on the 3x3 conv. Padding is PyTorch's symmetric
padding (Flax 'SAME' would shift every strided map by one pixel).
"""

from __future__ import annotations

import flax.linen as nn

from jaxcam.models._layers import (Act, BatchNorm, Block, Conv, GlobalAvgPool, Linear,
                                   MaxPool, Stage, activate, batch_norm, conv, symmetric)

LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
           152: ("bottleneck", (3, 8, 36, 3))}


class BasicBlock(nn.Module):
    features: int
    stride: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x, activation):
        y = conv(self.features, 3, self.stride, padding=symmetric(1), name="conv1")(x)
        y = activate(batch_norm(1e-5, "bn1")(y), activation)
        y = conv(self.features, 3, padding=symmetric(1), name="conv2")(y)
        y = batch_norm(1e-5, "bn2")(y)
        return activate(y + _shortcut(self, x, self.features), activation)


class Bottleneck(nn.Module):
    features: int  # width of the 3x3 conv; the block outputs 4x as many channels
    stride: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x, activation):
        y = conv(self.features, 1, padding="VALID", name="conv1")(x)
        y = activate(batch_norm(1e-5, "bn1")(y), activation)
        y = conv(self.features, 3, self.stride, padding=symmetric(1), name="conv2")(y)
        y = activate(batch_norm(1e-5, "bn2")(y), activation)
        y = conv(4 * self.features, 1, padding="VALID", name="conv3")(y)
        y = batch_norm(1e-5, "bn3")(y)
        return activate(y + _shortcut(self, x, 4 * self.features), activation)


def _shortcut(block: nn.Module, x, out_features: int):
    if not block.downsample:
        return x
    x = conv(out_features, 1, block.stride, padding="VALID", name="downsample.0")(x)
    return batch_norm(1e-5, "downsample.1")(x)


def resnet_stages(depth: int, num_classes: int = 1000) -> tuple[Stage, ...]:
    """The named stages of a torchvision ResNet."""
    kind, repeats = LAYOUTS[depth]
    block, expansion = (BasicBlock, 1) if kind == "basic" else (Bottleneck, 4)
    stages = [Stage("conv1", Conv(64, 7, 2, padding=symmetric(3))),
              Stage("bn1", BatchNorm(1e-5)),
              Stage("relu", Act(), activates=True),
              Stage("maxpool", MaxPool(3, 2, 1))]
    in_features = 64
    for layer, (n, width) in enumerate(zip(repeats, (64, 128, 256, 512)), start=1):
        for i in range(n):
            stride = 2 if (i == 0 and layer > 1) else 1
            down = i == 0 and (stride != 1 or in_features != width * expansion)
            config = (("features", width), ("stride", stride), ("downsample", down))
            aliases = (f"layer{layer}",) if i == n - 1 else ()
            stages.append(Stage(f"layer{layer}.{i}", Block(block, config), aliases, activates=True))
            in_features = width * expansion
    stages += [Stage("avgpool", GlobalAvgPool()), Stage("fc", Linear(num_classes))]
    return tuple(stages)
