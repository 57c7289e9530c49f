"""Fully connected networks: a small MLP for digits and LeNet-300-100."""

from __future__ import annotations

from torch import nn


def _mlp(in_features: int, hidden: tuple[int, ...], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=False)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def mlp(*, in_channels: int, num_classes: int, image_size: int) -> nn.Sequential:
    """Flatten -> 128 -> 64 -> classes with ReLU (64 -> 128 -> 64 -> 10 on digits)."""
    return _mlp(in_channels * image_size**2, (128, 64), num_classes)


def lenet300(*, in_channels: int, num_classes: int, image_size: int) -> nn.Sequential:
    """LeNet-300-100 (LeCun et al. 1998): flatten -> 300 -> 100 -> classes with ReLU.

    266,610 parameters on 28x28 grey images with 10 classes.
    """
    return _mlp(in_channels * image_size**2, (300, 100), num_classes)
