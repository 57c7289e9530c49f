"""`load_pruned` for registry models: rebuild a `save_pruned` file from its recorded spec."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from curvprune.models.registry import build_model
from curvprune.structured.serialize import load_pruned as _load_with


def load_pruned(
    path: str | os.PathLike,
    *,
    factory: Callable[[], nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a model saved by `curvprune.save_pruned`: identical modules, shapes and weights.

    Files saved with a ``spec`` (``curvprune prune --structured`` writes one) are rebuilt with
    `curvprune.models.build_model`; for your own model pass ``factory=lambda: MyNet()``, which
    builds the *dense* model (torchvision models too: ``factory=lambda: resnet18()``).

    Args:
        path: the ``.safetensors`` file.
        factory: builds the dense model; overrides the recorded spec.
        device: where the tensors go.

    Returns:
        The pruned model, in the train/eval mode it was saved in.

    Raises:
        CheckpointError: missing or corrupt file, not a `save_pruned` file, or a dense model
            whose modules differ from the recorded ones.
    """
    return _load_with(path, factory=factory, device=device, builder=build_model)


__all__ = ["load_pruned"]
