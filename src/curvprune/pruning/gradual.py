"""`GradualPruner`: gradual pruning on a sparsity schedule, inside the user's own training loop.

In the style of torchao's sparsifiers: build it once, call `GradualPruner.step` once per unit
of the user's loop (an epoch or an iteration), and on the steps the schedule marks it scores
the model with any criterion and prunes it to the schedule's target through `curvprune.prune`
(so WoodFisher and WoodTaylor apply their weight updates). `state_dict` / `load_state_dict` hold
the schedule's position and the masks; `squash` makes the masks permanent.

Example:
    >>> import torch
    >>> from torch import nn
    >>> import curvprune as cp
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> batches = [(torch.randn(16, 4), torch.randint(0, 2, (16,)))]
    >>> pruner = cp.GradualPruner(model, "magnitude", batches, sparsity=0.5, end=2)
    >>> for epoch in range(4):
    ...     _ = pruner.step()  # then train one epoch
    >>> pruner.target, cp.sparsity_report(model).sparsity
    (0.5, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from curvprune._core.params import Selector, prunable_weights
from curvprune.criteria.registry import check_options, get_criterion
from curvprune.curvature.gradient import LossFn
from curvprune.errors import InvalidArgument
from curvprune.pruning.masks import apply_masks, check_scope, check_sparsity, make_permanent
from curvprune.pruning.oneshot import PruneResult, prune
from curvprune.pruning.schedules import gradual_plan

#: Sparsity schedules of `GradualPruner` → the exponent of Zhu & Gupta's polynomial
#: s(t) = s_f + (s_i − s_f)(1 − (t − t_0)/(t_1 − t_0))^p.
GRADUAL_SCHEDULES = {"cubic": 3.0, "linear": 1.0}

_EPS = 1e-9


def _number(name: str, value: object, *, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        rule = "> 0" if positive else ">= 0"
        raise InvalidArgument(f"{name} must be a number {rule}, got {value!r}")
    return float(value)


class GradualPruner:
    """Prune a model gradually while the user trains it (Zhu & Gupta's schedule by default).

    The clock starts at time 0 on the first `step` call and advances by 1 per call, so call
    `step` at the start of each unit of training (before training it): the call at time t
    follows t units of training. Pruning events are at ``start``, ``start + frequency``, ... and
    ``end`` (`curvprune.pruning.schedules.gradual_plan`); at an event the model is pruned to
    s(t) = s_f + (s_i − s_f)(1 − (t − start)/(end − start))^3 (``schedule="cubic"``; "linear"
    has exponent 1), s_i = `initial_sparsity`, s_f = `sparsity`. An event whose target does not
    exceed the sparsity already reached (s_i = 0 at ``start``) is skipped. Events that fall
    between two calls (fractional times) are caught up at the next call.

    Scoring runs with the model in eval mode (BatchNorm uses its running statistics, as per-sample
    Fisher gradients need) unless `mode` says otherwise, as in `curvprune.prune`; each module's
    mode is restored afterwards.

    Args:
        model: the network, pruned in place (masks with `torch.nn.utils.prune`).
        criterion: any per-weight criterion of `curvprune.CRITERIA`.
        batches: the scoring batches: an iterable of ``(inputs, targets)`` (re-read at every
            event; a one-shot iterator is kept as a list), or a callable ``batches(t)``
            returning the batches for the event at time t (WoodFisher's code draws a fresh
            scoring subset at each pruning step).
        sparsity: the final sparsity s_f, in [0, 1).
        initial_sparsity: s_i, the sparsity of the event at ``start``.
        start: time of the first event (in the caller's units).
        end: time of the last event, at which s_f is reached.
        frequency: time between events.
        schedule: a key of `GRADUAL_SCHEDULES`.
        scope: "global" or "layerwise" (as in `curvprune.prune`).
        iterations: rounds of `curvprune.prune` per event (default: the criterion's).
        loss_fn: batch-mean loss; None for cross-entropy.
        forward: ``forward(model, inputs) -> outputs`` (see `curvprune.score`).
        prunable: which weights (see `curvprune.score`).
        min_density: every tensor keeps at least this fraction.
        mode: "eval" or "train" while scoring (None: the criterion's, see `curvprune.score`).
        prune_fn: replaces the scoring and pruning of an event: ``prune_fn(target)`` must prune
            the model to sparsity `target` (the CLI passes its own, with progress bars, timings
            and BatchNorm recalibration); None for `curvprune.prune` with the options here.
        **criterion_options: the criterion's options.

    Attributes:
        time: the clock (None before the first `step`).
        reached: the sparsity the model was last pruned to.
        last_result: the `PruneResult` of the last event that pruned (None if none yet, or with
            a `prune_fn` that returns something else).

    Raises:
        InvalidArgument: bad sparsities, times, schedule, scope, criterion or options.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: str,
        batches: Iterable | Callable[[float], Iterable],
        *,
        sparsity: float,
        initial_sparsity: float = 0.0,
        start: float = 0,
        end: float,
        frequency: float = 1,
        schedule: str = "cubic",
        scope: str = "global",
        iterations: int | None = None,
        loss_fn: LossFn | None = None,
        forward: Callable | None = None,
        prunable: Selector = None,
        min_density: float | None = None,
        mode: str | None = None,
        prune_fn: Callable[[float], Any] | None = None,
        **criterion_options,
    ) -> None:
        self.model = model
        self.criterion = criterion
        crit = get_criterion(criterion)
        check_options(crit, criterion_options)
        self.mode = crit.mode_for(criterion_options, mode)
        if schedule not in GRADUAL_SCHEDULES:
            raise InvalidArgument(
                f"unknown schedule {schedule!r}; valid: {', '.join(GRADUAL_SCHEDULES)}"
            )
        check_scope(scope)
        self.sparsity = check_sparsity(sparsity)
        self.initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
        self.start = _number("start", start)
        self.end = _number("end", end)
        self.frequency = _number("frequency", frequency, positive=True)
        self.schedule = schedule
        if self.initial_sparsity > self.sparsity:
            raise InvalidArgument(
                f"initial_sparsity {initial_sparsity} must not exceed sparsity {sparsity}"
            )
        if self.end < self.start:
            raise InvalidArgument(f"end {end} must not be before start {start}")
        self.plan = gradual_plan(
            initial_sparsity=self.initial_sparsity,
            final_sparsity=self.sparsity,
            start_epoch=self.start,
            end_epoch=self.end,
            frequency=self.frequency,
        )
        if schedule != "cubic":  # gradual_plan is cubic; recompute the targets
            self.plan = [
                type(p)(p.epoch, self._polynomial(p.epoch, GRADUAL_SCHEDULES[schedule]))
                for p in self.plan
            ]
        if not callable(batches) and iter(batches) is batches:
            batches = list(batches)
        self.batches = batches
        self.scope = scope
        self.iterations = iterations
        self.loss_fn = loss_fn
        self.forward = forward
        self.prunable = prunable
        self.min_density = min_density
        self.prune_fn = prune_fn
        self.criterion_options = criterion_options
        self.names = list(crit.tensors(model, prunable, criterion_options))
        self.time: float | None = None
        self.reached = 0.0
        self.last_result: PruneResult | None = None

    def _polynomial(self, t: float, power: float) -> float:
        if t >= self.end or self.end == self.start:
            return self.sparsity
        progress = (t - self.start) / (self.end - self.start)
        return self.sparsity + (self.initial_sparsity - self.sparsity) * (1 - progress) ** power

    @property
    def target(self) -> float:
        """The schedule's sparsity at the current time: that of the last event due (else 0)."""
        if self.time is None:
            return 0.0
        due = [p.sparsity for p in self.plan if p.epoch <= self.time + _EPS]
        return due[-1] if due else 0.0

    def step(self, time: float | None = None) -> bool:
        """Advance the clock (by 1, or to `time`) and prune if the target rose; True if it did.

        Args:
            time: jump to this time instead (fractional epochs, say); it must not go back.

        Raises:
            InvalidArgument: a `time` before the current one.
        """
        if time is None:
            time = 0.0 if self.time is None else self.time + 1
        time = _number("time", time)
        if self.time is not None and time < self.time:
            raise InvalidArgument(f"time {time:g} is before the current time {self.time:g}")
        self.time = time
        target = self.target
        if target <= self.reached + _EPS:
            return False
        result = self.prune_to(target)
        self.last_result = result if isinstance(result, PruneResult) else None
        self.reached = target
        return True

    def prune_to(self, target: float) -> Any:
        """Score the model and prune it to sparsity `target` (`prune_fn` if one was given)."""
        if self.prune_fn is not None:
            return self.prune_fn(target)
        batches = self.batches(self.time) if callable(self.batches) else self.batches
        return prune(
            self.model,
            self.criterion,
            batches,
            sparsity=target,
            scope=self.scope,
            min_density=self.min_density,
            loss_fn=self.loss_fn,
            forward=self.forward,
            prunable=self.names,
            iterations=self.iterations,
            mode=self.mode,
            **self.criterion_options,
        )

    def masks(self) -> dict[str, Tensor]:
        """The current bool keep-masks by weight name, of the weights that carry one."""
        weights = prunable_weights(self.model, self.names)
        return {n: w.mask() for n, w in weights.items() if w.is_pruned}

    def state_dict(self) -> dict[str, Any]:
        """The schedule position and the masks (bool tensors, on the CPU)."""
        return {
            "time": self.time,
            "reached": self.reached,
            "schedule": {
                "sparsity": self.sparsity,
                "initial_sparsity": self.initial_sparsity,
                "start": self.start,
                "end": self.end,
                "frequency": self.frequency,
                "schedule": self.schedule,
            },
            # only the weights that carry a mask, so that the model's own state dict loads
            "masks": {n: m.detach().cpu().clone() for n, m in self.masks().items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the position and re-apply the masks; then load the model's state dict.

        On a fresh model, the masks are registered here (``weight_orig`` / ``weight_mask``), so
        that ``model.load_state_dict`` of the saved model finds its keys.

        Raises:
            InvalidArgument: a state of another schedule, or masks that do not fit the model.
        """
        mine = self.state_dict()["schedule"]
        theirs = dict(state.get("schedule", {}))
        if theirs != mine:
            raise InvalidArgument(
                f"the state is of another schedule ({theirs}); this pruner has {mine}"
            )
        weights = prunable_weights(self.model, self.names)
        masks = dict(state["masks"])
        unknown = sorted(set(masks) - set(weights))
        if unknown:
            raise InvalidArgument(
                f"the state has masks for {unknown}, which are not among the pruner's weights "
                f"{sorted(weights)}"
            )
        weights = {n: weights[n] for n in masks}
        for n, w in weights.items():
            if masks[n].shape != w.value().shape:
                raise InvalidArgument(
                    f"mask {n!r} has shape {tuple(masks[n].shape)}, the weight "
                    f"{tuple(w.value().shape)}"
                )
        fresh = {n: m.to(weights[n].value().device).bool() for n, m in masks.items()}
        for n, w in weights.items():  # already masked: take the saved mask as it is
            if w.is_pruned:
                buffer = getattr(w.module, w.attr + "_mask")
                buffer.copy_(fresh[n].to(buffer.dtype))
        apply_masks(weights, {n: m for n, m in fresh.items() if not weights[n].is_pruned})
        self.time = state["time"]
        self.reached = float(state["reached"])

    def squash(self) -> list[str]:
        """Make the masks permanent (`curvprune.make_permanent`); returns the tensors folded."""
        return make_permanent(self.model)


__all__ = ["GRADUAL_SCHEDULES", "GradualPruner"]
