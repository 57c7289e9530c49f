"""MobileNet v1 (Howard et al. 2017), width multiplier 1.0."""

from __future__ import annotations

from torch import Tensor, nn

from curvprune.models.init import init_conv_bn_linear

# (output channels, stride) of the 13 depthwise-separable blocks.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
BLOCKS += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=False),
    ]


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv-BN-ReLU followed by 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Sequential(*_conv_bn(in_ch, in_ch, 3, stride, groups=in_ch))
        self.pointwise = nn.Sequential(*_conv_bn(in_ch, out_ch, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Module):
    """Stem 3x3 conv 32 -> 13 depthwise-separable blocks -> global average pool -> linear.

    For images of at most 64 px the stem has stride 1 (the CIFAR variant), so 32x32 inputs end
    at 2x2 rather than vanishing; larger images use the ImageNet stride 2.

    Args:
        in_channels: Input channels.
        num_classes: Output logits.
        image_size: Input side length.
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        stem_stride = 1 if image_size <= 64 else 2
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(in_channels, 32, 3, stem_stride))]
        width = 32
        for out_ch, stride in BLOCKS:
            layers.append(DepthwiseSeparable(width, out_ch, stride))
            width = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def mobilenet_v1(*, in_channels: int, num_classes: int, image_size: int) -> MobileNetV1:
    """MobileNet v1, width 1.0."""
    return MobileNetV1(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
