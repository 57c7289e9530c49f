"""Best-epoch selection on a validation split: the PaI papers' "best validation checkpoint".

With ``--val-split F`` a run holds out a fixed stratified share of the training set; after every
epoch of the training that follows pruning it measures the validation accuracy, keeps the
weights of the best epoch (the first of equals), and at the end tests those weights instead of
the last epoch's. The choice survives ``--resume``: the best weights travel in the run
checkpoint (`curvprune.experiments.resume`) and the best accuracy and epoch in its progress.
"""

from __future__ import annotations

from typing import Any

import torch

from curvprune.training import evaluate

__all__ = ["BestEpoch"]


class BestEpoch:
    """Tracks the validation accuracy of a run's epochs and keeps the best weights.

    Args:
        run: the `curvprune.experiments.runner.Run`; it holds the validation batches
            (``run.val``), the regime's ``progress`` and ``best_state``.
    """

    def __init__(self, run: Any) -> None:
        self.run = run

    @property
    def enabled(self) -> bool:
        """True when the run has a validation split."""
        return self.run.val is not None

    def watch(self, trainer: Any) -> None:
        """Measure after every whole epoch of `trainer` (before any checkpoint is written)."""
        if not self.enabled:
            return
        after = trainer.on_epoch_end

        def epoch_end(t: Any) -> None:
            self._measure(t)
            if after is not None:
                after(t)

        trainer.on_epoch_end = epoch_end

    def _measure(self, trainer: Any) -> None:
        run = self.run
        result = evaluate(run.model, run.val, device=run.device, autocast=run.autocast)
        run.log(f"  validation accuracy after epoch {trainer.epoch:g}: {result.accuracy:.4f}")
        if result.accuracy > run.progress.get("best_val_accuracy", -1.0):
            run.progress["best_val_accuracy"] = result.accuracy
            run.progress["best_epoch"] = trainer.epoch
            run.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()
            }

    def restore_best(self) -> bool:
        """Load the best epoch's weights into the model; False if no epoch was measured."""
        best = self.run.best_state
        if not self.enabled or best is None:
            return False
        with torch.no_grad():
            for key, value in self.run.model.state_dict().items():
                value.copy_(best[key])
        return True
