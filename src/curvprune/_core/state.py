"""Leave the model as we found it: modes, buffers, and no ``.grad``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from curvprune.errors import InvalidArgument

#: The train/eval flags a model is scored with: "eval" (BatchNorm's running statistics, no
#: dropout), every criterion's default, or "train" (batch statistics, dropout on).
SCORING_MODES = ("eval", "train")


def check_mode(mode: object) -> str:
    """`mode` if it is one of `SCORING_MODES`; else an error listing them."""
    if mode not in SCORING_MODES:
        raise InvalidArgument(f"mode must be one of {', '.join(SCORING_MODES)}, got {mode!r}")
    return mode


@contextlib.contextmanager
def modes_kept(model: nn.Module, *, eval: bool = False) -> Iterator[nn.Module]:
    """Restore every module's train/eval flag on exit; with ``eval=True`` enter in eval mode.

    Flags are saved per module, so a model whose submodules were in mixed modes comes back
    exactly as it was.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        if eval:
            model.eval()
        yield model
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def scoring_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Score `model` in `mode` (one of `SCORING_MODES`); every module's flag is restored."""
    with modes_kept(model):
        model.train(check_mode(mode) == "train")
        yield model


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag and every buffer on exit.

    Train-mode BatchNorm updates its running statistics on each forward pass; curvature
    estimates must not. Scaled dot-product attention is forced to its math backend because the
    fused CPU/GPU kernels have no double backward, which Hessian-vector products need.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with modes_kept(model), sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
