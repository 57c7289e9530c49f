"""curvprune scores for `torch.nn.utils.prune`: ``importance_scores`` for its pruning methods.

`torch.nn.utils.prune.global_unstructured` (and ``l1_unstructured``) take an
``importance_scores`` dict keyed by ``(module, tensor name)`` and rank entries by their absolute
value (``L1Unstructured``: ``torch.topk`` of ``|score|``, smallest first). `importance_scores`
turns curvprune's per-weight scores (``{weight name: tensor}``, higher = keep) into such a
dict, shifted so that no score is negative and ``|score|`` keeps their order.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torch.nn.utils import prune as torch_prune
    >>> import curvprune as cp
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> batches = [(torch.randn(16, 4), torch.randint(0, 2, (16,)))]
    >>> imp = cp.importance_scores(model, cp.score(model, "snip", batches))
    >>> torch_prune.global_unstructured(
    ...     list(imp), pruning_method=torch_prune.L1Unstructured, importance_scores=imp, amount=0.5
    ... )
    >>> cp.sparsity_report(model).sparsity
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from curvprune._core.params import prunable_weights
from curvprune.errors import InvalidType


def importance_scores(
    model: nn.Module, scores: Mapping[str, Tensor]
) -> dict[tuple[nn.Module, str], Tensor]:
    """``{(module, "weight"): scores}`` for `torch.nn.utils.prune`'s ``importance_scores``.

    With ``amount=s`` on an unpruned model, ``global_unstructured(list(imp),
    pruning_method=L1Unstructured, importance_scores=imp, amount=s)`` prunes the same
    ``round(s·n)`` weights as ``curvprune.select_masks(scores, sparsity=s)`` (and so as
    `curvprune.prune` with one round), up to ties: curvprune breaks ties by position (earlier
    tensors and entries go first), ``torch.topk`` in no documented order. Two differences to
    keep in mind: on a model that already has masks, torch's ``amount`` is a fraction of the
    weights still unpruned, curvprune's sparsity a fraction of all of them; and torch ranks
    ``|score|``, so the scores are returned shifted by ``−min(0, min score)`` (float64), which
    keeps their order.

    Args:
        model: the network the scores are for.
        scores: per-weight scores by weight name (from `curvprune.score` or
            ``PruneResult.scores``), each shaped like its weight; higher = keep.

    Returns:
        A dict from ``(module, attribute)`` to a float64 tensor of non-negative scores, in the
        order of `scores`; its keys are the ``parameters`` argument of ``global_unstructured``.

    Raises:
        InvalidType: `scores` is not a dict of tensors.
        InvalidArgument: a name that is not a trainable weight of `model` (see
            `curvprune.prunable_weights`).
    """
    if not isinstance(scores, Mapping) or not all(isinstance(t, Tensor) for t in scores.values()):
        raise InvalidType("scores must be a dict from weight name to tensor, as score() returns")
    weights = prunable_weights(model, list(scores))
    low = min((float(t.min()) for t in scores.values() if t.numel()), default=0.0)
    shift = -low if low < 0 else 0.0
    return {
        (weights[n].module, weights[n].attr): scores[n].detach().to(torch.float64) + shift
        for n in scores
    }


__all__ = ["importance_scores"]
