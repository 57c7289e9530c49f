"""BatchNorm statistics warm-up (re-estimation) before scoring or after pruning."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from curvprune._core import distributed
from curvprune._core.batches import iter_batches
from curvprune._core.inputs import call_model
from curvprune.errors import InvalidArgument


def bn_warmup(model: nn.Module, batches: Iterable) -> nn.Module:
    """Re-estimate every BatchNorm layer's running mean and variance from `batches`.

    Statistics are reset and recomputed as the plain average over batches of each batch's
    statistics (momentum None, as `torch.optim.swa_utils.update_bn` does), from train-mode
    forward passes of the BatchNorm layers with every other module in eval mode and no
    gradients. Parameters are untouched (bit-identical); each module's train/eval flag is
    restored. Under `torch.distributed`, every rank ends with the average over all ranks'
    batches. Returns the model. A model without BatchNorm is returned unchanged.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    norms = [m for m in norms if m.track_running_stats]
    if not norms:
        return model
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in norms]
    saved = [(b, b.clone()) for m in norms for b in m.buffers()]
    seen = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for x, _ in iter_batches(batches, model):
                call_model(model, x)
                seen += 1
        total = distributed.sum_count(seen)
        if distributed.world_size() > 1 and total:
            # each rank holds the average over its own batches: weight by batch counts
            stats = {
                f"{i}.{k}": getattr(m, k) * seen
                for i, m in enumerate(norms)
                for k in ("running_mean", "running_var")
            }
            distributed.sum_dicts(stats)
            with torch.no_grad():
                for i, m in enumerate(norms):
                    m.running_mean.copy_(stats[f"{i}.running_mean"] / total)
                    m.running_var.copy_(stats[f"{i}.running_var"] / total)
        seen = total
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for m, training in modes:
            m.training = training
    if seen == 0:
        with torch.no_grad():
            for b, old in saved:
                b.copy_(old)
        raise InvalidArgument("bn_warmup needs at least one batch; batches is empty")
    return model
