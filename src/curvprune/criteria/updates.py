"""Weight updates that some criteria apply before masking (Optimal Brain Surgeon style).

A criterion with a `WeightUpdate` is scored by its `score` function, which also returns the
state the update needs (the inverse Fisher blocks, ...); `curvprune.prune` then adds
``update(state, theta, keep)`` to the weights before applying the masks. Generic code names no
criterion: it only asks whether a criterion carries an update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from curvprune.criteria import scores as s
from curvprune.curvature.woodfisher import obs_update, woodtaylor_update


@dataclass(frozen=True)
class WeightUpdate:
    """A criterion's weight update.

    Attributes:
        score: ``(model, weights, batches, loss_fn, **options) -> (scores, state)``, the same
            scores as the criterion's `weight_score` plus what `update` needs.
        update: ``(state, theta, keep) -> {weight name: δθ}`` for the current weights θ and
            the bool keep-masks just selected (False = pruned).
    """

    score: Callable
    update: Callable


def _woodfisher_score(model, weights, batches, loss_fn, **options):
    scores, blocks, diag = s.woodfisher_blocks(model, weights, batches, loss_fn, **options)
    return scores, (blocks, diag)


def _woodfisher_update(state, theta, keep):
    blocks, diag = state
    return obs_update(blocks, theta, keep, diag)


def _woodtaylor_score(model, weights, batches, loss_fn, *, normalize_update=None, **options):
    scores, blocks, diag, h = s.woodtaylor_blocks(model, weights, batches, loss_fn, **options)
    return scores, (blocks, diag, h, normalize_update)


def _woodtaylor_update(state, theta, keep):
    blocks, diag, h, normalize_update = state
    delta = woodtaylor_update(blocks, theta, keep, diag, h)
    return delta if normalize_update is None else bounded(delta, theta, normalize_update)


def bounded(delta, theta, mult: float):
    """Each tensor's δθ, scaled to norm mult·‖θ‖ where its norm exceeds ‖θ‖.

    WoodFisher's ``--normalize-update`` (``pruners/woodtaylorblock.py``): the same test and
    the same scale, including its 1e-9.
    """
    out = {}
    for n, d in delta.items():
        norm, limit = d.norm(), theta[n].norm()
        out[n] = d / (norm / (limit * mult) + 1e-9) if norm > limit else d
    return out


#: WoodFisher's OBS update δθ = −F⁻¹ Σ_q e_q θ_q / [F⁻¹]_qq.
WOODFISHER_UPDATE = WeightUpdate(_woodfisher_score, _woodfisher_update)
#: WoodTaylor's update δθ = F⁻¹s − h.
WOODTAYLOR_UPDATE = WeightUpdate(_woodtaylor_score, _woodtaylor_update)
