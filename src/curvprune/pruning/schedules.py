"""Sparsity schedules for gradual pruning.

The polynomial schedule of Zhu & Gupta (2017), "To prune, or not to prune", raises sparsity
from ``s_i`` to ``s_f`` between epochs ``t_0`` and ``t_1``:

    s(t) = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_1 - t_0)) ** 3

It prunes fast while many redundant weights remain and slowly near the target. WoodFisher's
gradual setting uses the same schedule with any criterion.
"""

from __future__ import annotations

from dataclasses import dataclass

from curvprune.errors import InvalidArgument
from curvprune.pruning.masks import check_sparsity

__all__ = ["PruneStep", "gradual_plan", "polynomial_sparsity"]


def polynomial_sparsity(
    epoch: float,
    *,
    initial: float,
    final: float,
    start: float,
    end: float,
    power: float = 3.0,
) -> float:
    """Target sparsity at ``epoch`` under the Zhu & Gupta polynomial schedule.

    Args:
        epoch: Training time in epochs (fractions allowed).
        initial: Sparsity ``s_i`` at ``start``.
        final: Sparsity ``s_f`` reached at ``end`` and kept afterwards.
        start: First pruning epoch ``t_0``.
        end: Last pruning epoch ``t_1`` (``>= start``).
        power: Exponent of the decay; 3 is the cubic schedule of the paper.

    Returns:
        ``0`` before ``start``, ``final`` from ``end`` on, the polynomial in between.
    """
    if epoch < start:
        return 0.0
    if epoch >= end or end == start:
        return final
    progress = (epoch - start) / (end - start)
    return final + (initial - final) * (1.0 - progress) ** power


@dataclass(frozen=True)
class PruneStep:
    """One pruning event of a gradual run: prune to ``sparsity`` after ``epoch`` epochs."""

    epoch: float
    sparsity: float


def gradual_plan(
    *,
    initial_sparsity: float,
    final_sparsity: float,
    start_epoch: float,
    end_epoch: float,
    frequency: float,
) -> list[PruneStep]:
    """Pruning events at ``start_epoch``, ``start_epoch + frequency``, ... and ``end_epoch``.

    The last event always lands on ``end_epoch`` at ``final_sparsity``, even when the interval
    is not a multiple of ``frequency``, so the run reaches its target exactly.

    Raises:
        InvalidArgument: On sparsities outside [0, 1), ``initial > final``, a negative start,
            ``end < start`` or a non-positive frequency.
    """
    check_sparsity(initial_sparsity, "--initial-sparsity")
    check_sparsity(final_sparsity, "--sparsity")
    if initial_sparsity > final_sparsity:
        raise InvalidArgument(
            f"--initial-sparsity ({initial_sparsity}) must not exceed --sparsity ({final_sparsity})"
        )
    if start_epoch < 0:
        raise InvalidArgument(f"--start-epoch must be >= 0, got {start_epoch}")
    if end_epoch < start_epoch:
        raise InvalidArgument(
            f"--end-epoch ({end_epoch}) must not be before --start-epoch ({start_epoch})"
        )
    if frequency <= 0:
        raise InvalidArgument(f"--frequency must be > 0 epochs, got {frequency}")

    def at(epoch: float) -> PruneStep:
        sparsity = polynomial_sparsity(
            epoch, initial=initial_sparsity, final=final_sparsity, start=start_epoch, end=end_epoch
        )
        return PruneStep(epoch=epoch, sparsity=sparsity)

    steps = []
    k = 0
    # Integer multiples avoid drift from repeatedly adding a float frequency.
    while (epoch := start_epoch + k * frequency) < end_epoch - 1e-9:
        steps.append(at(epoch))
        k += 1
    steps.append(at(end_epoch))
    return steps
