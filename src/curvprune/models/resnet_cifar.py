"""CIFAR ResNets of He et al. (2016), section 4.2: depth 6n + 2, widths 16/32/64.

Shortcuts that change shape use option B (1x1 convolution + BatchNorm) rather than the paper's
zero-padding option A, so every channel dimension belongs to a prunable layer.
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, three stages of ``n`` blocks, global pool, linear.

    The stages have 16, 32 and 64 channels and strides 1, 2, 2.

    Args:
        depth: 6n + 2 (20, 32, 44, 56, 110).
        in_channels: Input channels.
        num_classes: Output logits.
    """

    def __init__(self, depth: int, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=False)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def resnet20(*, in_channels: int, num_classes: int, image_size: int) -> CifarResNet:
    """ResNet-20: 272,474 parameters on CIFAR-10 (269,722 with option-A shortcuts)."""
    return CifarResNet(20, in_channels=in_channels, num_classes=num_classes)


def resnet32(*, in_channels: int, num_classes: int, image_size: int) -> CifarResNet:
    """ResNet-32."""
    return CifarResNet(32, in_channels=in_channels, num_classes=num_classes)


def resnet56(*, in_channels: int, num_classes: int, image_size: int) -> CifarResNet:
    """ResNet-56."""
    return CifarResNet(56, in_channels=in_channels, num_classes=num_classes)
