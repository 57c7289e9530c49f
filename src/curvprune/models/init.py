"""Weight initialization shared by the convolutional classifiers."""

from torch import nn


def init_conv_bn_linear(model: nn.Module) -> None:
    """He (fan-out) for convolutions, BatchNorm to identity, N(0, 0.01) for Linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
