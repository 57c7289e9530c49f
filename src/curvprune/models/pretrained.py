"""Pretrained weights for ``torchvision:NAME`` and ``timm:NAME`` models, from their own caches.

torchvision keeps downloaded weights in ``$TORCH_HOME/hub/checkpoints/<file name of the
weights' URL>`` (``~/.cache/torch`` by default); timm in the Hugging Face hub cache
(``$HF_HOME``). A file already there is used as it is; otherwise it is downloaded, and without
a network the error names the file to put in place. When the dataset has another number of
classes than the weights, the classifier gets a new, freshly initialized head.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from curvprune.errors import CheckpointError, InvalidArgument


def torchvision_weights(name: str):
    """The ``DEFAULT`` entry of the model's torchvision weights enum, and its cache file.

    Raises:
        InvalidArgument: the model has no pretrained weights in torchvision.
    """
    import torchvision.models

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise InvalidArgument(f"torchvision has no pretrained weights for {name!r}") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    return weights, path


def _fetch(url: str, path: Path, label: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as err:  # URLError, timeouts, HTTP errors: all mean "not available"
        raise InvalidArgument(
            f"pretrained weights for {label} are not in the cache and cannot be downloaded "
            f"({type(err).__name__}: {err}); offline, download {url} elsewhere and put it at "
            f"{path} (the directory comes from $TORCH_HOME)"
        ) from None


def replace_head(model: nn.Module, old_classes: int, num_classes: int) -> nn.Module:
    """Swap the last Linear (or 1x1-conv) layer with `old_classes` outputs for a fresh one.

    Raises:
        InvalidArgument: no such layer.
    """
    found = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == old_classes:
            found = name, nn.Linear(m.in_features, num_classes, bias=m.bias is not None)
        elif isinstance(m, nn.Conv2d) and m.out_channels == old_classes:
            found = name, nn.Conv2d(
                m.in_channels, num_classes, m.kernel_size, m.stride, m.padding,
                bias=m.bias is not None,
            )  # fmt: skip
    if found is None:
        raise InvalidArgument(
            f"cannot find the classifier of {type(model).__name__} (a layer with "
            f"{old_classes} outputs) to give it {num_classes} classes"
        )
    name, head = found
    head = head.to(next(model.parameters()).dtype)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, head)
    return model


def torchvision_pretrained(name: str, num_classes: int) -> nn.Module:
    """``torchvision.models.get_model(name, weights=DEFAULT)``, offline from the cache.

    Raises:
        InvalidArgument: no pretrained weights, or none cached and no download possible.
        CheckpointError: a cached file that cannot be read.
    """
    import torchvision.models

    weights, path = torchvision_weights(name)
    if not path.is_file():
        _fetch(weights.url, path, f"torchvision:{name}")
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except Exception as err:
        raise CheckpointError(
            f"cannot load the pretrained weights of torchvision:{name} from {path} "
            f"({type(err).__name__}: {str(err)[:200]}); delete the file to download it again"
        ) from err
    categories = len(weights.meta.get("categories") or [])
    if categories and categories != num_classes:
        replace_head(model, categories, num_classes)
    return model


def timm_pretrained(timm, name: str, num_classes: int, in_channels: int) -> nn.Module:
    """``timm.create_model(name, pretrained=True, ...)``; timm resizes the head and stem.

    Raises:
        InvalidArgument: the weights are neither cached nor downloadable.
    """
    try:
        return timm.create_model(
            name, pretrained=True, num_classes=num_classes, in_chans=in_channels
        )
    except Exception as err:  # hub errors, timeouts, missing pretrained config
        raise InvalidArgument(
            f"cannot load pretrained weights for timm:{name} ({type(err).__name__}: "
            f"{str(err)[:200]}); offline, they must already be in the Hugging Face cache "
            "($HF_HOME; set HF_HUB_OFFLINE=1 to use it without a network)"
        ) from None


__all__ = ["replace_head", "timm_pretrained", "torchvision_pretrained", "torchvision_weights"]
