"""ImageNet-layout architectures of the zoo: MobileNetV1 as the AMC paper prunes it and TensorFlow Lite's reference
models lay it out, so that latency tables imported from those models' phone logs price it op for op."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import IMAGENET, register_model

# TensorFlow's MobileNetV1: (output channels, stride) of the 13 depthwise-separable blocks.
MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


class Conv2dSame(nn.Conv2d):
    """A conv padded like TensorFlow's SAME: as much as the stride needs, the odd pixel at the bottom and right. It is
    how TensorFlow's MobileNets pad their strided convs; the converter turns it into one SAME conv (timm's class of
    the same name does the same for its `tf_` models)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            F.pad(x, same_padding(x.shape[-2:], self.kernel_size, self.stride, self.dilation)),
            self.weight,
            self.bias,
            self.stride,
            0,
            self.dilation,
            self.groups,
        )


def same_padding(size, kernel, stride, dilation) -> list[int]:
    """F.pad's (left, right, top, bottom) for TensorFlow's SAME padding of an (H, W) input."""
    pads = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return [left, right, top, bottom]


class WholeMapAvgPool2d(nn.AvgPool2d):
    """Average pooling with one window over the whole feature map, stride 2, as TensorFlow's MobileNets end (an
    AVERAGE_POOL_2D op in TFLite, where global average pooling would be a MEAN). The window follows the input size."""

    whole_map = True  # the lowering reads the window from the input, not from kernel_size

    def __init__(self):
        super().__init__(kernel_size=1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, x.shape[-2:], stride=2)


def conv_bn_relu6(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    conv = (
        Conv2dSame(c_in, c_out, kernel, stride, groups=groups, bias=False)
        if stride > 1
        else nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2, groups=groups, bias=False)
    )
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class MobileNetV1(nn.Module):
    """Howard et al. 2017 at width `width_mult` (channels int(c * width), at least 8), ending as TensorFlow's does:
    average pooling over the last map and a 1x1 conv classifier."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0):
        super().__init__()

        def scaled(c: int) -> int:
            return max(8, int(c * width_mult))

        c = scaled(32)
        layers = [conv_bn_relu6(3, c, 3, 2)]
        for out, stride in MOBILENET_V1_BLOCKS:
            layers += [conv_bn_relu6(c, c, 3, stride, groups=c), conv_bn_relu6(c, scaled(out), 1, 1)]
            c = scaled(out)
        self.features = nn.Sequential(*layers)
        self.pool = WholeMapAvgPool2d()
        self.classifier = nn.Conv2d(c, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # (B, 1024w, 1, 1)
        return self.classifier(x).flatten(1)


@register_model(defaults=IMAGENET)
def mobilenet_v1(num_classes: int = 1000, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV1 (ImageNet layout, TensorFlow padding), the AMC paper's mobile model."""
    return MobileNetV1(num_classes, width_mult)
