"""Epoch-end checkpoints of a run, and resuming from them bit-identically.

At the end of every ``save_every``-th epoch a run writes ``run-checkpoint.safetensors`` into its
output folder, atomically (temporary file, then rename), so a kill at any moment leaves the
previous checkpoint or the new one. The one file holds:

* tensors: the model's state dict with its pruning masks (``model.*``), the optimizer's
  per-parameter state keyed by parameter name (``optimizer.*``), and the random number
  generators' states (``rng.torch``, ``rng.cuda.<i>``, ``rng.numpy``, ``rng.python``);
* in the safetensors metadata, one JSON document (``state``): the run id, which training
  phase was running (the `Trainer` tag) and its step, the regime's progress (whether it has
  pruned, the sparsity a gradual schedule reached, accuracies measured so far), the timings,
  and the generators' non-tensor fields.

Nothing is pickled. Data order and augmentation are functions of ``(seed, epoch)`` (see
`curvprune.data.loaders`), so the trainer's step fixes the data loaders' position; the
generators' states cover everything else random (dropout, DataLoader worker seeds).

Resuming replays the regime's code: steps that the progress marks as done are skipped, the
model, generators and trainer are restored, and training goes on from the saved step. On the
CPU with a fixed seed and thread count the result is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curvprune.checkpoint import load_state, read_checkpoint, save_tensors
from curvprune.errors import CheckpointError

__all__ = ["CHECKPOINT_NAME", "Checkpointer", "get_rng_state", "set_rng_state"]

#: File name of a run's checkpoint inside its output folder.
CHECKPOINT_NAME = "run-checkpoint.safetensors"
_FORMAT = "curvprune-run-checkpoint"
_VERSION = 1

logger = logging.getLogger("curvprune")


def get_rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The states of Python's, NumPy's and torch's global generators (CPU and CUDA).

    Returns:
        ``(info, tensors)``: JSON-ready scalars and the state vectors as int tensors.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "rng.python": torch.tensor(internal, dtype=torch.int64),
        "rng.numpy": torch.from_numpy(keys.astype(np.int64)),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    info = {
        "python": [version, gauss],
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
    }
    return info, tensors


def set_rng_state(info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Restore what `get_rng_state` returned."""
    version, gauss = info["python"]
    internal = tuple(int(v) for v in tensors["rng.python"].tolist())
    random.setstate((version, internal, gauss))
    kind, pos, has_gauss, cached = info["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


class Checkpointer:
    """Epoch-end checkpoints of one run in ``out_dir``, and the state to resume from.

    Args:
        out_dir: The run's output folder; None turns checkpoints off.
        run_id: Identity of the run; a checkpoint of another run is refused.
        save_every: Write a checkpoint every this many whole epochs; 0 never.
        resume: Continue from ``out_dir``'s checkpoint, if there is one.
        keep: Keep the checkpoint when the run finishes (default: remove it).
        enabled: False on processes that write no files (ranks other than 0); they still
            resume from the checkpoint when one exists.

    Raises:
        CheckpointError: With ``resume``, a checkpoint that is corrupt or of another run.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike | None,
        *,
        run_id: str,
        save_every: int = 1,
        resume: bool = False,
        keep: bool = False,
        enabled: bool = True,
    ) -> None:
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 0:
            raise CheckpointError(f"--save-every must be an integer >= 0, got {save_every!r}")
        self.path = None if out_dir is None else Path(out_dir) / CHECKPOINT_NAME
        self.run_id = run_id
        self.save_every = save_every if self.path is not None else 0
        self.keep = keep
        self.enabled = enabled
        self.info: dict[str, Any] | None = None
        self.tensors: dict[str, torch.Tensor] = {}
        if self.path is None or not self.path.is_file():
            if resume and self.path is not None:
                logger.info("no checkpoint in %s: starting from the beginning", self.path.parent)
            return
        if not resume:
            logger.warning(
                "%s exists: starting over and replacing it (pass --resume to continue)",
                self.path,
            )
            return
        self._load()

    def _load(self) -> None:
        tensors, metadata = read_checkpoint(self.path)
        try:
            info = json.loads(metadata["state"])
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{self.path} is not a run checkpoint ({err})") from None
        if metadata.get("format") != _FORMAT or info.get("version") != _VERSION:
            raise CheckpointError(f"{self.path} is not a version {_VERSION} run checkpoint")
        if info["run_id"] != self.run_id:
            raise CheckpointError(
                f"{self.path} belongs to run {info['run_id']}, not to this run ({self.run_id}): "
                "the options differ; choose another --out or delete the checkpoint"
            )
        self.info, self.tensors = info, tensors

    @property
    def resuming(self) -> bool:
        """True if there is a checkpoint to continue from."""
        return self.info is not None

    def describe(self) -> str:
        """Where the saved run stands, e.g. ``train step 30 (epoch 2)``."""
        t = self.info["trainer"] if self.info else None
        return f"{t['tag']} epoch {t['epoch']:g} (step {t['step']})" if t else "nothing saved"

    def restore_run(self, run: Any) -> None:
        """Load the model (with masks), the regime's progress, timings and RNG states."""
        if not self.resuming:
            return
        info, tensors = self.info, self.tensors
        if info["world_size"] != run.world:
            raise CheckpointError(
                f"{self.path} was saved by {info['world_size']} process(es), this run has "
                f"{run.world}"
            )
        if info["progress"].get("structured_pruned"):
            raise CheckpointError(f"{self.path}: structured runs resume only before pruning")
        model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        load_state(run.model, model, self.path)
        run.model.to(run.device)
        run.progress.update(info["progress"])
        for key, value in info["timings"].items():
            run.timings[key] = run.timings.get(key, 0.0) + value
        best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
        run.best_state = best or None
        set_rng_state(info["rng"], tensors)
        logger.info("resuming run %s from %s", self.run_id, self.describe())

    def attach(self, run: Any, trainer: Any) -> None:
        """Restore ``trainer`` if the checkpoint was taken in its phase; save at epoch ends."""
        saved = self.info["trainer"] if self.resuming else None
        if saved is not None and saved["tag"] == trainer.tag:
            optimizer = {
                k.removeprefix("optimizer."): v
                for k, v in self.tensors.items()
                if k.startswith("optimizer.")
            }
            trainer.load_state_dict(saved, optimizer)
        if self.save_every:
            trainer.on_epoch_end = lambda t: self._epoch_end(run, t)

    def _epoch_end(self, run: Any, trainer: Any) -> None:
        epoch = trainer.step // trainer.steps_per_epoch
        if epoch % self.save_every or run.progress.get("structured_pruned"):
            return  # a structured-pruned model has other shapes: not resumable (yet)
        if self.enabled:
            self.save(run, trainer)

    def save(self, run: Any, trainer: Any) -> None:
        """Write the checkpoint now (at an epoch boundary of ``trainer``)."""
        trainer_info, optimizer = trainer.state_dict()
        trainer_info["epoch"] = trainer.epoch
        rng_info, rng = get_rng_state()
        info = {
            "version": _VERSION,
            "run_id": self.run_id,
            "world_size": run.world,
            "trainer": trainer_info,
            "progress": run.progress,
            "timings": run.timings,
            "rng": rng_info,
        }
        tensors = {f"model.{k}": v for k, v in run.model.state_dict().items()}
        tensors.update({f"optimizer.{k}": v for k, v in optimizer.items()})
        tensors.update(rng)
        if getattr(run, "best_state", None):  # the best validation epoch's weights
            tensors.update({f"best.{k}": v for k, v in run.best_state.items()})
        metadata = {"format": _FORMAT, "state": json.dumps(info, allow_nan=False)}
        save_tensors(tensors, self.path, metadata=metadata)
        logger.debug("checkpoint: %s at %s epoch %g", self.path, trainer.tag, trainer.epoch)

    def finish(self) -> None:
        """The run is over (finished or diverged): remove the checkpoint unless kept."""
        if self.path is not None and self.enabled and not self.keep:
            self.path.unlink(missing_ok=True)
