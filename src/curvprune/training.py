"""Training and evaluation: SGD with momentum, cosine or multistep schedules, top-1 accuracy.

Pruning masks stay enforced during training without any extra work here: `curvprune.prune`
applies them with `torch.nn.utils.prune`, whose forward pre-hook recomputes
``weight = weight_orig * weight_mask`` on every call, so pruned weights are zero in every
forward pass and receive zero gradient from the loss. The optimizer keeps the very
``weight_orig`` Parameter objects it was built with, so momentum survives a pruning step in
the middle of training (the ``early`` and ``gradual`` regimes).
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from curvprune._core import distributed
from curvprune._core.state import modes_kept
from curvprune.errors import Diverged, InvalidArgument

__all__ = [
    "LR_SCHEDULES",
    "EvalResult",
    "Trainer",
    "autocast_dtype",
    "evaluate",
    "open_tensorboard",
    "progress_bar",
    "seed_everything",
]

LR_SCHEDULES = ("cosine", "multistep")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels.

    On the CPU this makes a run bit-for-bit repeatable for a fixed seed and thread count.
    ``warn_only`` keeps CUDA runs going where a kernel has no deterministic version.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def progress_bar(iterable: Iterable, *, total: int | None, desc: str, enabled: bool) -> Iterable:
    """Wrap ``iterable`` in a tqdm bar that shows only on an interactive terminal.

    Bars go to stderr, so they are off whenever stderr is not a TTY (pipes, CI, log files) or
    when ``enabled`` is false (``--quiet``).
    """
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def open_tensorboard(logdir: str) -> Any:
    """Return a TensorBoard ``SummaryWriter`` for ``logdir``; the import is lazy.

    Raises:
        InvalidArgument: When the optional ``tensorboard`` package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise InvalidArgument(
            "--tensorboard needs the optional 'tensorboard' package: pip install tensorboard"
        ) from err
    return SummaryWriter(log_dir=logdir)


@dataclass(frozen=True)
class EvalResult:
    """Top-1 ``accuracy`` (fraction in [0, 1]) and mean cross-entropy ``loss`` over ``count``."""

    accuracy: float
    loss: float
    count: int


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "eval",
    autocast: torch.dtype | None = None,
) -> EvalResult:
    """Top-1 accuracy and mean loss of ``model`` in eval mode; the previous mode is restored.

    Under an initialized `torch.distributed` process group each rank passes its own share of
    the data and every rank gets the result over all of them (correct, loss and count are
    summed over ranks).

    ``no_grad`` rather than ``inference_mode``: the pruning hook caches ``weight`` on the
    module, and an inference tensor there would break the next training step.

    Args:
        autocast: Run the forward pass under `torch.autocast` in this dtype (e.g. bf16).
    """
    correct, loss_sum, count = 0, 0.0, 0
    total = len(batches) if hasattr(batches, "__len__") else None
    with modes_kept(model, eval=True):
        for x, y in progress_bar(batches, total=total, desc=desc, enabled=progress):
            x, y = x.to(device), y.to(device)
            with _autocast(device, autocast):
                logits = model(x).float()
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(dim=1) == y).sum().item()
            count += y.numel()
    if distributed.world_size() > 1:
        sums = {"v": torch.tensor([correct, loss_sum, count], dtype=torch.float64)}
        distributed.sum_dicts(sums)
        correct, loss_sum, count = sums["v"].tolist()
    if count == 0:
        raise InvalidArgument("cannot evaluate on an empty data set")
    return EvalResult(accuracy=correct / count, loss=loss_sum / count, count=int(count))


def _autocast(device: torch.device | str, dtype: torch.dtype | None):
    """`torch.autocast` on ``device``'s type in ``dtype``, or a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 for training and evaluation on a GPU that supports it; None (float32) otherwise.

    Curvature is always computed in float32: callers do not autocast while scoring.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class Trainer:
    """SGD over a fixed budget of (possibly fractional) epochs, resumable at any step.

    The learning-rate schedule spans the whole budget, and `train_until` may be called
    several times with growing targets, so a run can stop to prune after 0.3 epochs and go
    on with the same optimizer state and schedule.

    Args:
        model: The network; its parameters are moved to ``device`` by the caller.
        train_batches: Re-iterable training batches with ``len()`` (batches per epoch) and,
            optionally, ``set_epoch(e)`` for a per-epoch shuffle.
        epochs: Budget in epochs; the schedule reaches its end after ``epochs`` epochs.
        lr: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty, added by SGD.
        schedule: ``"cosine"`` (per step, to zero) or ``"multistep"``.
        milestones: Epochs at which ``multistep`` multiplies the rate by ``gamma``; default
            half and three quarters of the budget.
        gamma: Decay factor of ``multistep``.
        device: Where batches go.
        progress: Show a progress bar on a terminal.
        writer: Optional TensorBoard writer for the loss and learning rate.
        tag: Prefix of the TensorBoard scalars (``"pretrain"`` keeps two phases apart).
        autocast: Run forward passes under `torch.autocast` in this dtype (bf16 on a GPU);
            the loss is taken in float32 and no gradient scaling is needed for bf16.

    Attributes:
        on_epoch_end: Called as ``on_epoch_end(trainer)`` after the last step of every whole
            epoch (e.g. to write a resumable checkpoint, see `state_dict`); None by default.

    A non-finite training loss stops training with `Diverged`, naming the epoch and the
    learning rate.
    """

    def __init__(
        self,
        model: nn.Module,
        train_batches: Any,
        *,
        epochs: float,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        schedule: str = "cosine",
        milestones: Sequence[float] | None = None,
        gamma: float = 0.1,
        device: torch.device | str = "cpu",
        progress: bool = False,
        writer: Any = None,
        tag: str = "train",
        autocast: torch.dtype | None = None,
    ) -> None:
        if schedule not in LR_SCHEDULES:
            raise InvalidArgument(
                f"unknown --lr-schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}"
            )
        if epochs < 0:
            raise InvalidArgument(f"epochs must be >= 0, got {epochs}")
        self.model = model
        self.batches = train_batches
        self.steps_per_epoch = len(train_batches)
        if self.steps_per_epoch == 0:
            raise InvalidArgument("the training set yields no batches")
        self.total_steps = round(epochs * self.steps_per_epoch)
        self.lr = lr
        self.schedule = schedule
        self.milestones = (
            sorted(milestones) if milestones is not None else [0.5 * epochs, 0.75 * epochs]
        )
        self.gamma = gamma
        self.device = device
        self.progress = progress
        self.writer = writer
        self.tag = tag
        self.autocast = autocast
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params, lr=self.lr_at(0), momentum=momentum, weight_decay=weight_decay
        )
        self.step = 0
        self._epoch = 0
        self._iter: Iterator | None = None
        self.on_epoch_end: Any = None

    @property
    def epoch(self) -> float:
        """Epochs trained so far (fractional)."""
        return self.step / self.steps_per_epoch

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        if self.schedule == "cosine":
            if self.total_steps == 0:
                return self.lr
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * step / self.total_steps))
        epoch = step / self.steps_per_epoch
        passed = sum(epoch >= m for m in self.milestones)
        return self.lr * self.gamma**passed

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            if self._iter is None:
                if hasattr(self.batches, "set_epoch"):
                    self.batches.set_epoch(self._epoch)
                self._iter = iter(self.batches)
            try:
                return next(self._iter)
            except StopIteration:
                self._iter = None
                self._epoch += 1

    def train_until(self, epoch: float) -> dict[str, float]:
        """Train until ``epoch`` epochs (capped at the budget) have been done in total.

        Returns:
            ``{"loss": mean training loss, "accuracy": training top-1, "steps": steps,
            "samples": samples}`` over the steps of this call on this process (zeros if none
            were taken).
        """
        target = min(self.total_steps, round(epoch * self.steps_per_epoch))
        steps = max(0, target - self.step)
        self.model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for _ in progress_bar(range(steps), total=steps, desc=self.tag, enabled=self.progress):
            x, y = self._next_batch()
            x, y = x.to(self.device), y.to(self.device)
            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with _autocast(self.device, self.autocast):
                logits = self.model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(
                    f"training diverged: the loss is {value} at epoch {self.epoch:.4g} (step "
                    f"{self.step + 1}) with learning rate {lr:g} (peak {self.lr:g}); lower --lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += value * y.numel()
            correct += (logits.argmax(dim=1) == y).sum().item()
            seen += y.numel()
            self.step += 1
            if self.writer is not None:
                self.writer.add_scalar(f"{self.tag}/loss", value, self.step)
                self.writer.add_scalar(f"{self.tag}/lr", lr, self.step)
            if self.on_epoch_end is not None and self.step % self.steps_per_epoch == 0:
                self.on_epoch_end(self)
        if seen == 0:
            return {"loss": 0.0, "accuracy": 0.0, "steps": 0, "samples": 0}
        return {
            "loss": loss_sum / seen,
            "accuracy": correct / seen,
            "steps": steps,
            "samples": seen,
        }

    def train_all(self) -> dict[str, float]:
        """Train to the end of the budget."""
        return self.train_until(self.total_steps / self.steps_per_epoch)

    def state_dict(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The training progress at an epoch boundary, to resume bit-identically.

        Returns:
            ``(info, tensors)``: JSON-ready ``{"tag", "step", "total_steps"}`` and the
            optimizer's per-parameter state as ``{"<param name>.<key>": tensor}``, keyed by
            ``named_parameters()`` names (not by position: pruning re-registers weights as
            ``weight_orig``, which changes their position in ``parameters()``).

        Raises:
            InvalidArgument: Between epoch boundaries, where the data order has no checkpoint.
        """
        if self.step % self.steps_per_epoch:
            raise InvalidArgument(
                f"a Trainer resumes from epoch boundaries only, not step {self.step} of "
                f"{self.steps_per_epoch} per epoch"
            )
        names = {id(p): n for n, p in self.model.named_parameters()}
        tensors = {}
        for param, state in self.optimizer.state.items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{names[id(param)]}.{key}"] = value
        info = {"tag": self.tag, "step": self.step, "total_steps": self.total_steps}
        return info, tensors

    def load_state_dict(self, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state_dict`'s output: step, data epoch and optimizer state.

        Raises:
            InvalidArgument: If the saved budget or parameters differ from this trainer's.
        """
        if info["total_steps"] != self.total_steps:
            raise InvalidArgument(
                f"the checkpoint's {self.tag} budget is {info['total_steps']} steps, this "
                f"run's {self.total_steps}: not the same run"
            )
        by_name = dict(self.model.named_parameters())
        self.optimizer.state.clear()
        for key, value in tensors.items():
            name, _, field = key.rpartition(".")
            if name not in by_name:
                raise InvalidArgument(
                    f"the checkpoint's optimizer state names {name!r}, "
                    "which the model does not have"
                )
            param = by_name[name]
            self.optimizer.state[param][field] = value.to(param.device)
        self.step = int(info["step"])
        # At an epoch boundary the next batch starts epoch step / steps_per_epoch afresh.
        self._epoch = self.step // self.steps_per_epoch
        self._iter = None
