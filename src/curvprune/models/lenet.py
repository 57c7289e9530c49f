"""LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, optionally with BatchNorm."""

from __future__ import annotations

from torch import Tensor, nn

from curvprune.errors import InvalidArgument


class LeNet5(nn.Module):
    """conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc classes.

    The first convolution pads by 2 for images smaller than 32 px, so 28x28 MNIST gets the same
    16x5x5 feature map as the original 32x32 input.

    Args:
        in_channels: Input channels.
        num_classes: Output logits.
        image_size: Input side length; at least 12.
        batch_norm: Add BatchNorm after each convolution and hidden linear layer (their biases
            are then dropped, as BatchNorm's shift replaces them).
    """

    def __init__(
        self, *, in_channels: int, num_classes: int, image_size: int, batch_norm: bool = False
    ) -> None:
        super().__init__()
        pad = 2 if image_size < 32 else 0
        side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
        if side < 1:
            raise InvalidArgument(f"lenet5 needs image_size >= 12, got {image_size}")
        bias = not batch_norm

        def block(layer: nn.Module, width: int, norm: type[nn.Module]) -> list[nn.Module]:
            return [layer, *([norm(width)] if batch_norm else []), nn.ReLU(inplace=False)]

        self.features = nn.Sequential(
            *block(nn.Conv2d(in_channels, 6, 5, padding=pad, bias=bias), 6, nn.BatchNorm2d),
            nn.MaxPool2d(2),
            *block(nn.Conv2d(6, 16, 5, bias=bias), 16, nn.BatchNorm2d),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            *block(nn.Linear(16 * side * side, 120, bias=bias), 120, nn.BatchNorm1d),
            *block(nn.Linear(120, 84, bias=bias), 84, nn.BatchNorm1d),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        return self.classifier(self.features(x))


def lenet5(*, in_channels: int, num_classes: int, image_size: int) -> LeNet5:
    """LeNet-5 without normalization."""
    return LeNet5(in_channels=in_channels, num_classes=num_classes, image_size=image_size)


def lenet5_bn(*, in_channels: int, num_classes: int, image_size: int) -> LeNet5:
    """LeNet-5 with BatchNorm after each convolution and hidden linear layer."""
    return LeNet5(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size, batch_norm=True
    )
