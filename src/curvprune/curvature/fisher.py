"""The empirical Fisher diagonal."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from curvprune._core import distributed
from curvprune._core.params import trainable_parameters
from curvprune._core.state import preserved
from curvprune.curvature.gradient import LossFn, default_loss
from curvprune.curvature.per_sample import chunk_gradients


def empirical_fisher_diag(
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable,
    *,
    fisher_batch_size: int = 1,
    names: list[str] | None = None,
    chunk_size: int | None = None,
    max_memory: int | str | None = None,
) -> dict[str, Tensor]:
    """Diagonal of the empirical Fisher: the mean over gradients g of g ⊙ g.

    Each g is the gradient of the loss averaged over `fisher_batch_size` consecutive samples
    (1: per-sample gradients). Chunks run across batch boundaries; only the last chunk of all
    the data may be shorter, and every chunk counts once in the mean. Under `torch.distributed`
    the sums are combined over ranks; chunks do not span ranks, so the result equals one
    process over all ranks' data when each rank's sample count is a multiple of
    `fisher_batch_size`.

    Args:
        model: the network; left unchanged.
        loss_fn: batch-mean loss; None for cross-entropy.
        batches: iterable of ``(inputs, targets)``.
        fisher_batch_size: samples per gradient.
        names: restrict to these parameter names (default: every trainable parameter).
        chunk_size: at most this many samples per forward/backward pass (bounds memory).
        max_memory: or a memory budget (bytes, or a string like "8GiB") to choose it from.

    Returns:
        ``{name: F}`` with F shaped like the parameter, for every trainable parameter.
    """
    loss_fn = default_loss(loss_fn)
    params = trainable_parameters(model)
    names = list(params) if names is None else list(names)
    total = {n: torch.zeros_like(params[n]) for n in names}
    count = 0
    with preserved(model):
        for squares, chunks in chunk_gradients(
            model,
            loss_fn,
            batches,
            names,
            fisher_batch_size,
            square=True,
            chunk_size=chunk_size,
            max_memory=max_memory,
        ):
            for n in names:
                total[n].add_(squares[n])
            count += chunks
    return distributed.mean_over_samples(count, total)[0]
