"""CIFAR-10 architectures used by the AMC paper and common mobile baselines, sized for 32x32 inputs.

Every downsampling residual uses a 1x1 conv + BN projection shortcut (ResNet "option B"), not the zero-padding
shortcut of the original CIFAR ResNets: a projection is an ordinary layer that pruning and TFLite both handle,
while zero padding would tie pruned channel indices to a fixed padding layout.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model


def conv_bn_relu(
    c_in: int, c_out: int, stride: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        act(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers, with an identity (or projection) shortcut when `residual` is set."""

    def __init__(self, c_in: int, c_out: int, stride: int, residual: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return torch.relu(out)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (6n+2 layers, widths 16/32/64); `residual=False` gives the "plain" net."""

    def __init__(self, depth: int, num_classes: int = 10, residual: bool = True, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        widths = [width, 2 * width, 4 * width]
        self.stem = conv_bn_relu(3, widths[0])
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for stage, c_out in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride, residual))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, 4w, H/4, W/4)
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 with the stem and the first stride-2 stage at stride 1, so 32x32 inputs end at 4x4, not 1x1."""

    # (expansion, out channels, repeats, stride) as in the paper's Table 2, strides adapted to 32x32.
    SETTINGS = [
        (1, 16, 1, 1),
        (6, 24, 2, 1),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0, last_channels: int = 1280):
        super().__init__()

        def scaled(c: int) -> int:
            return max(8, int(c * width_mult + 4) // 8 * 8)

        c_in = scaled(32)
        layers: list[nn.Module] = [conv_bn_relu(3, c_in, act=nn.ReLU6)]
        for expand, c, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(c_in, scaled(c), stride if i == 0 else 1, expand))
                c_in = scaled(c)
        layers += [nn.Conv2d(c_in, last_channels, 1, bias=False), nn.BatchNorm2d(last_channels), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(last_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # (B, 1280, 1, 1)
        return self.fc(self.dropout(torch.flatten(x, 1)))


class VGGCifar(nn.Module):
    """VGG with BatchNorm; five 2x2 max-pools take 32x32 to 1x1, then a single linear classifier."""

    CONFIGS = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]}

    def __init__(self, depth: int = 11, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in self.CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn_relu(c_in, int(v)))
                c_in = int(v)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@register_model
def plain20(num_classes: int = 10) -> nn.Module:
    """ResNet-20 without shortcuts (AMC's CIFAR "Plain-20")."""
    return CifarResNet(20, num_classes, residual=False)


@register_model
def resnet20(num_classes: int = 10) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016), 0.27M parameters."""
    return CifarResNet(20, num_classes)


@register_model
def resnet56(num_classes: int = 10) -> nn.Module:
    """ResNet-56 for CIFAR (He et al. 2016), 0.86M parameters."""
    return CifarResNet(56, num_classes)


@register_model
def mobilenet_v2_cifar(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2 with strides adapted to 32x32 inputs."""
    return MobileNetV2Cifar(num_classes, width_mult)


@register_model
def vgg11_cifar(num_classes: int = 10) -> nn.Module:
    """VGG-11 with BatchNorm and a single linear classifier."""
    return VGGCifar(11, num_classes)
