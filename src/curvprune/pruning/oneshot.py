"""`prune`: score, select masks, (for criteria with a weight update) update, apply; repeat."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from curvprune._core.batches import reiterable
from curvprune._core.checks import positive_int
from curvprune._core.inputs import accepts_forward
from curvprune._core.params import Selector, prunable_weights
from curvprune._core.state import preserved, scoring_mode
from curvprune.criteria.registry import (
    CRITERIA,
    check_finite,
    check_options,
    get_criterion,
)
from curvprune.curvature.gradient import LossFn, default_loss
from curvprune.errors import InvalidArgument
from curvprune.pruning.masks import (
    apply_masks,
    check_min_density,
    check_scope,
    check_sparsity,
    keep_masks,
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
        round_sparsities: the pruned fraction of each round's masks (the targets reached).
        schedule: the round schedule that ran (see `SCHEDULES`).
    """

    masks: dict[str, Tensor]
    layer_density: dict[str, float]
    collapsed: list[str]
    sparsity: float
    scores: dict[str, Tensor]
    rounds: int
    round_sparsities: list[float] = field(default_factory=list)
    schedule: str = "exponential"


#: Round schedules of `prune`, with k rounds to sparsity s, after round t = 1..k:
#: "linear": s·t/k pruned (WoodFisher's recomputation schedule);
#: "exponential": (1 − s)^(t/k) kept (SynFlow, OBA);
#: "exponential_pruned": s^(t/k) pruned, the HTS repository's SynFlow loop, which applies the
#: exponential to the pruned fraction: the first of 100 rounds to s = 0.9 prunes 99.9%.
SCHEDULES = ("linear", "exponential", "exponential_pruned")


def check_schedule(schedule: object) -> str:
    """`schedule` if it is one of `SCHEDULES`; else an error listing them."""
    if schedule not in SCHEDULES:
        raise InvalidArgument(
            f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}"
        )
    return schedule


def round_sparsities(
    sparsity: float, iterations: int, schedule: str = "exponential"
) -> list[float]:
    """Target sparsity of each round t = 1..k under `schedule` (see `SCHEDULES`).

    The last target is `sparsity` exactly. Only "exponential_pruned" decreases (from s^(1/k)
    down to s).
    """
    check_schedule(schedule)
    k = iterations
    if schedule == "linear":
        steps = [sparsity * t / k for t in range(1, k)]
    elif schedule == "exponential":
        steps = [1 - (1 - sparsity) ** (t / k) for t in range(1, k)]
    else:
        steps = [sparsity ** (t / k) for t in range(1, k)]
    return steps + [sparsity]


@accepts_forward
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
    schedule: str | None = None,
    mode: str | None = None,
    **options,
) -> PruneResult:
    """Prune `model` in place to `sparsity` by `criterion`.

    Each of `iterations` rounds scores the (already masked) model and prunes it to the round's
    target (`round_sparsities`; by default the kept fraction (1 − sparsity)^(t/k)); the last
    round reaches exactly round(sparsity·n) pruned weights. Masks are applied with
    `torch.nn.utils.prune`, so pruned weights stay zero while training and
    ``torch.nn.utils.prune.remove`` makes them permanent.

    Under the "exponential_pruned" schedule the targets decrease, as in the HTS repository's
    loop: each round selects its mask afresh from the scores of the masked model (pruned weights
    score what the criterion gives a zero weight), the model's weights only ever lose entries
    during the rounds, and the final mask, the last round's selection, is then applied to the
    original weights, so weights pruned in earlier rounds can come back.

    Args:
        model: the network, changed in place.
        criterion: a name from `curvprune.CRITERIA`.
        batches: iterable of ``(inputs, targets)``.
        sparsity: fraction of prunable weights to prune, in [0, 1).
        scope: "global" (one threshold over all prunable weights) or "layerwise".
        min_density: every tensor keeps at least this fraction of its weights.
        update_weights: criteria with a weight update only (woodfisher: the OBS update
            δθ = −F⁻¹ Σ_q e_q θ_q / [F⁻¹]_qq; woodtaylor: δθ = F⁻¹s − h), applied within each
            block before masking (default True); False masks only.
        loss_fn: batch-mean loss; None for cross-entropy.
        forward: ``forward(model, inputs) -> outputs`` for every call of the model (see
            `curvprune.score`).
        prunable: which weights (see `curvprune.score`).
        iterations: rounds (default: the criterion's, 1 for most, 100 for SynFlow, 49 for
            OBA). WoodFisher and WoodTaylor recompute F⁻¹ and update the weights every round.
        schedule: one of `SCHEDULES` (default: the criterion's, "exponential" for most,
            "linear" for woodfisher and woodtaylor, "exponential_pruned" for synflow with
            ``variant="pai_code"``).
        mode: "eval" or "train", the flags the model is scored with (see `curvprune.score`;
            default: the criterion's, "eval" but for oba/oba_full's ``variant="oba_code"``);
            restored after each round.
        **options: the criterion's options.
    """
    crit = get_criterion(criterion)
    check_options(crit, options)
    mode = crit.mode_for(options, mode)
    sparsity = check_sparsity(sparsity)
    scope = check_scope(scope)
    min_density = check_min_density(min_density)
    iterations = positive_int(
        "iterations", crit.default_iterations if iterations is None else iterations
    )
    schedule = crit.schedule_for(options) if schedule is None else check_schedule(schedule)
    targets = round_sparsities(sparsity, iterations, schedule)
    regrows = any(b < a for a, b in zip(targets, targets[1:]))
    if update_weights is not None and crit.weight_update is None:
        with_update = ", ".join(n for n, c in CRITERIA.items() if c.weight_update is not None)
        raise InvalidArgument(
            f"update_weights applies to criteria with a weight update ({with_update}), "
            f"not {criterion!r}"
        )
    update = crit.weight_update is not None and update_weights is not False
    if update and regrows:
        raise InvalidArgument(
            f"schedule {schedule!r} brings pruned weights back, which a weight update cannot "
            "follow; use another schedule or update_weights=False"
        )
    names = list(crit.tensors(model, prunable, options))
    batches = reiterable(batches)
    loss_fn = default_loss(loss_fn)
    initial = {n: w.mask() for n, w in prunable_weights(model, names).items()}

    scores: dict[str, Tensor] = {}
    reached: list[float] = []
    for target in targets:
        weights = prunable_weights(model, names)
        with preserved(model), scoring_mode(model, mode):
            if update:
                scores, state = crit.weight_update.score(
                    model, weights, batches, loss_fn, **options
                )
            else:
                scores = crit.weight_score(model, weights, batches, loss_fn, **options)
        scores = {n: t.detach() for n, t in scores.items()}
        check_finite(scores, criterion)
        existing = initial if regrows else {n: w.mask() for n, w in weights.items()}
        masks = keep_masks(scores, target, scope, min_density, existing)
        if update:
            theta = {n: w.value() for n, w in weights.items()}
            delta = crit.weight_update.update(state, theta, masks)
            with torch.no_grad():
                for n, w in weights.items():
                    param = dict(model.named_parameters())[w.param_name]
                    param.add_(delta[n].to(param.device))
        apply_masks(weights, masks)
        pruned = sum(int((~m).sum()) for m in masks.values())
        reached.append(pruned / sum(m.numel() for m in masks.values()))
    if regrows:  # the final selection, on the original weights
        with torch.no_grad():
            for n, w in prunable_weights(model, names).items():
                buffer = getattr(w.module, w.attr + "_mask")
                buffer.copy_(masks[n].to(device=buffer.device, dtype=buffer.dtype))

    report = sparsity_report(model, names)
    return PruneResult(
        masks=masks,
        layer_density=report.layer_density,
        collapsed=report.collapsed,
        sparsity=report.sparsity,
        scores=scores,
        rounds=iterations,
        round_sparsities=reached,
        schedule=schedule,
    )
