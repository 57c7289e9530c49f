"""The gradient of the objective L (mean per-sample loss over all batches)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from curvprune._core import distributed
from curvprune._core.batches import iter_batches
from curvprune._core.params import trainable_parameters
from curvprune._core.state import preserved
from curvprune.errors import InvalidArgument

LossFn = Callable[[Tensor, Tensor], Tensor]


def default_loss(loss_fn: LossFn | None) -> LossFn:
    """`loss_fn`, or cross-entropy averaged over the batch."""
    return nn.CrossEntropyLoss() if loss_fn is None else loss_fn


def batch_loss(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> Tensor:
    """The batch-mean loss, checked to be a scalar."""
    loss = loss_fn(model(x), y)
    if loss.dim() != 0:
        raise InvalidArgument(
            f"loss_fn must return the batch mean (a scalar), got shape {tuple(loss.shape)}; "
            "use reduction='mean'"
        )
    return loss


def loss_gradient(model: nn.Module, loss_fn: LossFn | None, batches: Iterable) -> dict[str, Tensor]:
    """∇L for every trainable parameter, L the mean per-sample loss over all batches.

    A batch of B samples out of N in all contributes (B / N)·∇(batch-mean loss).
    """
    loss_fn = default_loss(loss_fn)
    params = trainable_parameters(model)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    with preserved(model):
        for x, y in iter_batches(batches, model):
            loss = batch_loss(model, loss_fn, x, y)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            b = x.shape[0]
            for (n, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    total[n].add_(g, alpha=b)
            count += b
    return distributed.mean_over_samples(count, total)[0]
