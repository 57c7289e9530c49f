"""Models from torchvision and timm, adapted to the dataset's channels, classes and image size."""

from __future__ import annotations

import difflib
import importlib

from torch import nn

from curvprune.errors import InvalidArgument


def no_inplace(model: nn.Module) -> nn.Module:
    """Switch every module's ``inplace`` flag (ReLU, Hardswish, Dropout, ...) off, in place.

    Curvature hooks keep activations; an in-place activation would overwrite them.
    """
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return model


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)


def adapt_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the first 3-channel `nn.Conv2d` by a freshly initialized one with ``in_channels``.

    Raises:
        InvalidArgument: The model has no 3-channel convolution to adapt.
    """
    if in_channels == 3:
        return model
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            new = nn.Conv2d(
                in_channels,
                m.out_channels,
                m.kernel_size,
                stride=m.stride,
                padding=m.padding,
                dilation=m.dilation,
                groups=m.groups,
                bias=m.bias is not None,
                padding_mode=m.padding_mode,
            )
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            if new.bias is not None:
                nn.init.zeros_(new.bias)
            _set_submodule(model, name, new)
            return model
    raise InvalidArgument(
        f"cannot adapt {type(model).__name__} to {in_channels} input channels: "
        "no 3-channel Conv2d found"
    )


def _torchvision_resnet(
    arch: str, in_channels: int, num_classes: int, image_size: int
) -> nn.Module:
    import torchvision.models

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if image_size <= 64:
        # Small-image stem (as for CIFAR): a 7x7/2 conv and a max-pool would leave 8x8 maps
        # after the stem and 1x1 by the last stage.
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    else:
        adapt_first_conv(model, in_channels)
    return no_inplace(model)


def resnet18(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Torchvision ResNet-18; 3x3 stride-1 stem and no max-pool for images up to 64 px."""
    return _torchvision_resnet("resnet18", in_channels, num_classes, image_size)


def resnet50(*, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Torchvision ResNet-50; 3x3 stride-1 stem and no max-pool for images up to 64 px."""
    return _torchvision_resnet("resnet50", in_channels, num_classes, image_size)


def torchvision_model(
    name: str, *, in_channels: int, num_classes: int, image_size: int, pretrained: bool = False
) -> nn.Module:
    """Any torchvision classification model via ``torchvision.models.get_model``.

    Untrained, or with ``pretrained=True`` the weights enum's ``DEFAULT`` weights from
    torchvision's cache (see `curvprune.models.pretrained`), with a new head for another class
    count and a new first convolution for other than 3 input channels.
    """
    import torchvision.models

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidArgument(
            f"unknown torchvision model {name!r}{hint} (valid: {', '.join(available)})"
        )
    if pretrained:
        from curvprune.models.pretrained import torchvision_pretrained

        model = torchvision_pretrained(name, num_classes)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return no_inplace(adapt_first_conv(model, in_channels))


def timm_model(
    name: str, *, in_channels: int, num_classes: int, image_size: int, pretrained: bool = False
) -> nn.Module:
    """Any timm model via ``timm.create_model`` (timm must be installed).

    ``pretrained=True`` loads timm's pretrained weights (its Hugging Face cache; timm itself
    replaces the head and adapts the first convolution).
    """
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise InvalidArgument(
            f"model 'timm:{name}' needs timm, which is not installed: pip install timm"
        ) from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidArgument(f"unknown timm model {name!r}{hint} (see timm.list_models())")
    if pretrained:
        from curvprune.models.pretrained import timm_pretrained

        return no_inplace(timm_pretrained(timm, name, num_classes, in_channels))
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    return no_inplace(model)
