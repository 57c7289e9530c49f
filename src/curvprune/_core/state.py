"""Leave the model as we found it: modes, buffers, and no ``.grad``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag and every buffer on exit.

    Train-mode BatchNorm updates its running statistics on each forward pass; curvature
    estimates must not. Scaled dot-product attention is forced to its math backend because the
    fused CPU/GPU kernels have no double backward, which Hessian-vector products need.
    """
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
