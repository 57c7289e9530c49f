"""`prune`: score, select masks, (for WoodFisher) update the weights, apply; repeat."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from curvprune._core.batches import reiterable
from curvprune._core.params import Selector, prunable_weights
from curvprune._core.state import preserved
from curvprune.criteria.registry import (
    check_finite,
    check_options,
    get_criterion,
)
from curvprune.criteria.scores import woodfisher_blocks
from curvprune.curvature.gradient import LossFn, default_loss
from curvprune.curvature.woodfisher import obs_update
from curvprune.errors import InvalidArgument
from curvprune.pruning.masks import (
    apply_masks,
    check_min_density,
    check_scope,
    check_sparsity,
    select_masks,
    sparsity_report,
)


@dataclass
class PruneResult:
    """What `prune` did.

    Attributes:
        masks: bool keep-masks by weight name (True = kept), as applied to the model.
        layer_density: kept fraction per pruned tensor.
        collapsed: tensors left with no weight.
        sparsity: pruned fraction of all prunable weights.
        scores: the last round's scores by weight name.
        rounds: rounds of score → prune that ran.
    """

    masks: dict[str, Tensor]
    layer_density: dict[str, float]
    collapsed: list[str]
    sparsity: float
    scores: dict[str, Tensor]
    rounds: int


def round_sparsities(sparsity: float, iterations: int) -> list[float]:
    """Targets of each round: kept fraction (1 − s)^(t/k), t = 1..k; the last is s exactly."""
    steps = [1 - (1 - sparsity) ** (t / iterations) for t in range(1, iterations)]
    return steps + [sparsity]


def _check_iterations(iterations: object) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise InvalidArgument(f"iterations must be a positive integer, got {iterations!r}")
    return iterations


def prune(
    model: nn.Module,
    criterion: str,
    batches: Iterable,
    *,
    sparsity: float,
    scope: str = "global",
    min_density: float | None = None,
    update_weights: bool | None = None,
    loss_fn: LossFn | None = None,
    prunable: Selector = None,
    iterations: int | None = None,
    **options,
) -> PruneResult:
    """Prune `model` in place to `sparsity` by `criterion`.

    Each of `iterations` rounds scores the (already masked) model and prunes it to the kept
    fraction (1 − sparsity)^(t/k); the last round reaches exactly round(sparsity·n) pruned
    weights. Masks are applied with `torch.nn.utils.prune`, so pruned weights stay zero while
    training and ``torch.nn.utils.prune.remove`` makes them permanent.

    Args:
        model: the network, changed in place.
        criterion: a name from `curvprune.CRITERIA`.
        batches: iterable of ``(inputs, targets)``.
        sparsity: fraction of prunable weights to prune, in [0, 1).
        scope: "global" (one threshold over all prunable weights) or "layerwise".
        min_density: every tensor keeps at least this fraction of its weights.
        update_weights: WoodFisher only: apply the OBS update δθ = −F⁻¹ Σ_q e_q θ_q / [F⁻¹]_qq
            within each block before masking (default True); False masks only.
        loss_fn: batch-mean loss; None for cross-entropy.
        prunable: which weights (see `curvprune.score`).
        iterations: rounds (default 1; 100 for SynFlow). WoodFisher recomputes F⁻¹ and
            applies the OBS update every round.
        **options: the criterion's options.
    """
    crit = get_criterion(criterion)
    check_options(crit, options)
    sparsity = check_sparsity(sparsity)
    check_scope(scope)
    check_min_density(min_density)
    iterations = _check_iterations(crit.default_iterations if iterations is None else iterations)
    if update_weights is not None and criterion != "woodfisher":
        raise InvalidArgument(
            f"update_weights applies to the woodfisher criterion only, not {criterion!r}"
        )
    update = criterion == "woodfisher" and update_weights is not False
    names = list(prunable_weights(model, prunable))
    batches = reiterable(batches)
    loss_fn = default_loss(loss_fn)

    scores: dict[str, Tensor] = {}
    for target in round_sparsities(sparsity, iterations):
        weights = prunable_weights(model, names)
        with preserved(model):
            if criterion == "woodfisher":
                scores, blocks, diag = woodfisher_blocks(
                    model, weights, batches, loss_fn, **options
                )
            else:
                scores = crit.weight_score(model, weights, batches, loss_fn, **options)
        scores = {n: t.detach() for n, t in scores.items()}
        check_finite(scores, criterion)
        existing = {n: w.mask() for n, w in weights.items()}
        masks = select_masks(
            scores, sparsity=target, scope=scope, min_density=min_density, existing=existing
        )
        if update:
            theta = {n: w.value() for n, w in weights.items()}
            delta = obs_update(blocks, theta, masks, diag)
            with torch.no_grad():
                for n, w in weights.items():
                    param = dict(model.named_parameters())[w.param_name]
                    param.add_(delta[n].to(param.device))
        apply_masks(weights, masks)

    report = sparsity_report(model, names)
    return PruneResult(
        masks=masks,
        layer_density=report.layer_density,
        collapsed=report.collapsed,
        sparsity=report.sparsity,
        scores=scores,
        rounds=iterations,
    )
