"""`CurvatureImportance`: curvprune's channel criteria as a Torch-Pruning importance.

Any Torch-Pruning pruner (``MetaPruner``, ``GroupNormPruner``, ...) calls its importance once
per dependency group, for every group, at each ``pruner.step()``, before it removes anything.
`CurvatureImportance` computes the criterion's per-weight terms once per step, on the first
group after the model changed, and sums them over each group's channels exactly as
`curvprune.prune_channels` does (`curvprune.structured.groups.ChannelImportance`).

Example:
    >>> import torch, torch_pruning as tp
    >>> from torch import nn
    >>> from curvprune.structured import CurvatureImportance
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    >>> batches = [(torch.randn(4, 3, 6, 6), torch.randint(0, 2, (4,)))]
    >>> imp = CurvatureImportance("taylor", batches)
    >>> pruner = tp.pruner.MetaPruner(
    ...     model, torch.randn(1, 3, 6, 6), importance=imp, pruning_ratio=0.5,
    ...     ignored_layers=[model[3]],
    ... )
    >>> pruner.step()
    >>> model[0].out_channels
    4
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch_pruning as tp
from torch import Tensor, nn

from curvprune._core.batches import reiterable
from curvprune._core.state import preserved, scoring_mode
from curvprune.criteria import registry
from curvprune.criteria.channel import ChannelTerms
from curvprune.curvature.gradient import LossFn, default_loss
from curvprune.errors import InvalidArgument
from curvprune.structured.groups import ChannelImportance


def _fingerprint(model: nn.Module) -> tuple:
    """What changes when a pruner removes channels or an optimizer steps: ids, shapes, versions."""
    return tuple((id(p), tuple(p.shape), p._version) for p in model.parameters())


class CurvatureImportance(tp.importance.Importance):
    """A Torch-Pruning importance from a curvprune channel criterion.

    Computes ``CRITERIA[criterion].channel_score`` (the per-weight terms over every trainable
    parameter: θ⊙((H−G)θ) for ``oba``, ½θ²⊙F for ``fisher``, ...) once per pruning step, on the
    first group whose model differs from the last one scored (parameter ids, shapes or
    in-place versions: a pruner step or an optimizer step), and returns for each group one
    score per channel, higher = keep, as `curvprune.prune_channels` ranks them (its layer
    floors aside: ``max_pruning_ratio`` is the pruner's own).

    Args:
        criterion: a structured criterion: oba, oba_full, fisher, fts, hts, taylor, l1 or
            random (``Criterion.structured`` in `curvprune.CRITERIA`).
        batches: ``(inputs, targets)`` batches for the criterion (ignored by l1 and random);
            a one-shot iterator is read once and kept. Or a callable ``batches()`` returning
            the batches for each step, called once per step.
        loss_fn: batch-mean loss; None for cross-entropy.
        mode: "eval" or "train" while scoring (None: the criterion's; see `curvprune.score`).
        **options: the criterion's channel options (``CRITERIA[name].channel_options``).

    Attributes:
        steps: how many times the terms were computed.

    Raises:
        InvalidArgument: an unknown or unstructured criterion, or an option it does not take.
    """

    def __init__(
        self,
        criterion: str,
        batches: Iterable | Callable[[], Iterable] | None,
        *,
        loss_fn: LossFn | None = None,
        mode: str | None = None,
        **options,
    ) -> None:
        self.criterion = registry.get_criterion(criterion, structured=True)
        registry.check_options(self.criterion, options, structured=True)
        self.mode = self.criterion.mode_for(options, mode)
        self.batches = batches if callable(batches) or batches is None else reiterable(batches)
        self.loss_fn = default_loss(loss_fn)
        self.options = options
        self.steps = 0
        self._model: nn.Module | None = None
        self._seen: tuple | None = None
        self._channels: ChannelImportance | None = None

    def terms(self, model: nn.Module) -> ChannelTerms:
        """The criterion's per-weight terms on `model` as it is now."""
        batches = self.batches() if callable(self.batches) else self.batches
        if batches is None and not self.criterion.data_free:
            raise InvalidArgument(f"criterion {self.criterion.name!r} needs batches")
        # Torch-Pruning scores groups under torch.no_grad(); the criteria differentiate
        with torch.enable_grad(), preserved(model), scoring_mode(model, self.mode):
            terms = self.criterion.channel_score(model, batches, self.loss_fn, **self.options)
        if terms.per_weight is not None:
            registry.check_finite(terms.per_weight, self.criterion.name)
        return terms

    def _refresh(self, model: nn.Module) -> ChannelImportance:
        seen = _fingerprint(model)
        if self._channels is None or model is not self._model or seen != self._seen:
            channels = ChannelImportance(model)
            channels.set_terms(self.terms(model))
            self._model, self._channels = model, channels
            self._seen = _fingerprint(model)  # scoring may bump no version, but be exact
            self.steps += 1
        return self._channels

    def __call__(self, group) -> Tensor | None:
        """One score per channel of `group` (Torch-Pruning's importance protocol)."""
        graph = getattr(group, "_DG", None)
        model = getattr(graph, "model", None)
        if not isinstance(model, nn.Module):
            raise InvalidArgument(
                "CurvatureImportance needs groups from a Torch-Pruning DependencyGraph "
                "(group._DG.model); build them with a pruner or DependencyGraph().build_dependency"
            )
        return self._refresh(model)(group)


__all__ = ["CurvatureImportance"]
