"""The model registry: one `ModelInfo` per name, used by `build_model`, the CLI and the docs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from curvprune._core.checks import positive_int
from curvprune.errors import InvalidArgument
from curvprune.models import external, lenet, mlp, mobilenet, resnet_cifar, vgg, vit

PREFIXES = ("torchvision:", "timm:")


@dataclass(frozen=True)
class ModelInfo:
    """A named model.

    Attributes:
        name: Registry key.
        description: One line for ``curvprune list``.
        factory: ``factory(*, in_channels, num_classes, image_size) -> nn.Module``.
    """

    name: str
    description: str
    factory: Callable[..., nn.Module]


def _info(name: str, description: str, factory: Callable[..., nn.Module]) -> tuple[str, ModelInfo]:
    return name, ModelInfo(name, description, factory)


MODELS: dict[str, ModelInfo] = dict(
    [
        _info("mlp", "MLP flatten-128-64 with ReLU, for digits", mlp.mlp),
        _info("lenet300", "LeNet-300-100 fully connected network (MNIST family)", mlp.lenet300),
        _info("lenet5", "LeNet-5 convolutional network, ReLU and max-pooling", lenet.lenet5),
        _info("lenet5_bn", "LeNet-5 with BatchNorm after each conv and hidden fc", lenet.lenet5_bn),
        _info(
            "resnet20", "CIFAR ResNet-20 (16/32/64 ch., 1x1-conv shortcuts)", resnet_cifar.resnet20
        ),
        _info(
            "resnet32", "CIFAR ResNet-32 (16/32/64 ch., 1x1-conv shortcuts)", resnet_cifar.resnet32
        ),
        _info(
            "resnet56", "CIFAR ResNet-56 (16/32/64 ch., 1x1-conv shortcuts)", resnet_cifar.resnet56
        ),
        _info(
            "vgg16_bn", "VGG-16 with BatchNorm, CIFAR variant with one linear layer", vgg.vgg16_bn
        ),
        _info(
            "vgg19_bn", "VGG-19 with BatchNorm, CIFAR variant with one linear layer", vgg.vgg19_bn
        ),
        _info("resnet18", "torchvision ResNet-18, small-image stem up to 64 px", external.resnet18),
        _info("resnet50", "torchvision ResNet-50, small-image stem up to 64 px", external.resnet50),
        _info(
            "mobilenet_v1",
            "MobileNet v1 width 1.0, stride-1 stem up to 64 px",
            mobilenet.mobilenet_v1,
        ),
        _info("vit_tiny", "ViT-Tiny: patch 4, dim 192, depth 12, 3 heads, MLP 768", vit.vit_tiny),
    ]
)


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    seed: int | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """Build an untrained model by name.

    Args:
        name: A key of `MODELS`, ``torchvision:NAME`` or ``timm:NAME``.
        in_channels: Input channels (from the dataset).
        num_classes: Output logits (from the dataset).
        image_size: Input side length in pixels (from the dataset); picks stems and paddings.
        seed: If given, initialize under ``torch.manual_seed(seed)`` without disturbing the
            global random state; otherwise draw from the global state.
        pretrained: ``torchvision:NAME`` and ``timm:NAME`` only: load their pretrained weights
            from their own caches (`curvprune.models.pretrained`); a new head when
            `num_classes` differs from the weights' classes.

    Returns:
        The model in training mode.

    Raises:
        InvalidArgument: Unknown name, bad sizes, ``timm:`` without timm installed, or
            pretrained weights that are not available.
    """
    sizes = {
        "in_channels": positive_int("in_channels", in_channels),
        "num_classes": positive_int("num_classes", num_classes),
        "image_size": positive_int("image_size", image_size),
    }
    if not isinstance(name, str):
        raise InvalidArgument(f"model name must be a string, got {name!r}")
    if not isinstance(pretrained, bool):
        raise InvalidArgument(f"pretrained must be True or False, got {pretrained!r}")
    if name.startswith("torchvision:"):
        name = name.removeprefix("torchvision:")
        factory = partial(external.torchvision_model, name, pretrained=pretrained)
    elif name.startswith("timm:"):
        factory = partial(external.timm_model, name.removeprefix("timm:"), pretrained=pretrained)
    elif pretrained:
        raise InvalidArgument(
            f"pretrained weights are available for torchvision:NAME and timm:NAME models, not "
            f"{name!r} (e.g. torchvision:resnet18 instead of resnet18)"
        )
    elif name in MODELS:
        factory = MODELS[name].factory
    else:
        raise InvalidArgument(
            f"unknown model {name!r}; valid names: {', '.join(MODELS)}, "
            "or torchvision:NAME, timm:NAME"
        )
    if seed is None:
        return factory(**sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(**sizes)
