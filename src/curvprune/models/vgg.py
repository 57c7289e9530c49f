"""VGG with BatchNorm for small images (the CIFAR variant: 3x3 convolutions, one linear layer)."""

from __future__ import annotations

from torch import Tensor, nn

from curvprune.models.init import init_conv_bn_linear

# Channel widths; "M" is a 2x2 max-pool.
CONFIGS: dict[int, list[int | str]] = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M"]
    + [512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """conv3x3-BN-ReLU stacks with max-pooling, global average pool, one linear layer.

    A pool that would shrink the feature map below 1x1 is skipped, so 28x28 inputs work too; on
    32x32 inputs the map is 1x1 after the last pool, as in the usual CIFAR VGG.

    Args:
        depth: 16 or 19.
        in_channels: Input channels.
        num_classes: Output logits.
        image_size: Input side length.
    """

    def __init__(self, depth: int, *, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width, side = in_channels, image_size
        for v in CONFIGS[depth]:
            if v == "M":
                if side >= 2:
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                continue
            layers += [
                nn.Conv2d(width, v, 3, padding=1, bias=False),
                nn.BatchNorm2d(v),
                nn.ReLU(inplace=False),
            ]
            width = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg16_bn(*, in_channels: int, num_classes: int, image_size: int) -> VGG:
    """VGG-16 with BatchNorm, CIFAR variant."""
    return VGG(16, in_channels=in_channels, num_classes=num_classes, image_size=image_size)


def vgg19_bn(*, in_channels: int, num_classes: int, image_size: int) -> VGG:
    """VGG-19 with BatchNorm, CIFAR variant."""
    return VGG(19, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
