"""The gradient of the objective L (mean per-sample loss over all batches)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from curvprune._core import distributed
from curvprune._core.batches import iter_batches
from curvprune._core.inputs import call_model, num_samples
from curvprune._core.params import trainable_parameters
from curvprune._core.state import preserved
from curvprune.errors import InvalidArgument

LossFn = Callable[[Tensor, Tensor], Tensor]


#: Reductions of `torch.nn` losses that average over the batch.
MEAN_REDUCTIONS = ("mean", "batchmean")


class CheckedLoss:
    """A loss callable whose batch reduction is checked, once, on its first batch of ≥ 2 samples.

    A loss that sums over the batch (say ``reduction="sum"``) silently scales every gradient by
    the batch size B and every curvature by B as well; `batch_loss` calls `verify` so such a
    loss is refused instead. Calling the object only forwards to the wrapped function, so it is
    safe inside `torch.func` transforms.
    """

    def __init__(self, fn: LossFn):
        self.fn = fn
        self.checked = False

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The wrapped loss of `outputs` against `targets`."""
        return self.fn(outputs, targets)

    def verify(self, outputs: Tensor, targets: Tensor, loss: Tensor) -> None:
        """Raise unless the batch's loss equals the mean of its two halves' losses (rtol 1e-4).

        Runs on the first batch with at least 2 samples (the first 2⌊B/2⌋ samples, split
        evenly) and never again for this object. A loss that cannot be evaluated on half a
        batch is not checked.
        """
        if self.checked or not isinstance(outputs, Tensor) or outputs.shape[0] < 2:
            return  # output objects (say a transformers ModelOutput) cannot be halved
        self.checked = True
        half = outputs.shape[0] // 2
        out = outputs.detach()
        try:
            with torch.no_grad():
                whole = (
                    loss if 2 * half == len(out) else self.fn(out[: 2 * half], targets[: 2 * half])
                )
                first = self.fn(out[:half], targets[:half])
                second = self.fn(out[half : 2 * half], targets[half : 2 * half])
                whole = float(whole.detach())
                halves = (float(first) + float(second)) / 2
        except (RuntimeError, ValueError, IndexError, TypeError):
            return  # the loss does not take a part of the batch: nothing to compare
        if not math.isclose(whole, halves, rel_tol=1e-4, abs_tol=1e-12):
            ratio = whole / halves if halves else math.inf
            raise InvalidArgument(
                f"loss_fn must average over the batch: on {2 * half} samples it gave "
                f"{whole:.6g}, but the mean of its two halves' losses is {halves:.6g} (ratio "
                f"{ratio:.4g}; a sum over the batch gives 2); use a batch-mean reduction"
            )


def default_loss(loss_fn: LossFn | None) -> LossFn:
    """`loss_fn` checked to average over the batch, or cross-entropy averaged over the batch.

    A `torch.nn` loss must have ``reduction`` "mean" (or "batchmean"); any other callable is
    wrapped in a `CheckedLoss`, which `batch_loss` checks on the first batch of ≥ 2 samples.

    Raises:
        InvalidArgument: a `torch.nn` loss whose reduction is not the mean.
    """
    if loss_fn is None:
        return nn.CrossEntropyLoss()
    if isinstance(loss_fn, CheckedLoss):
        return loss_fn
    reduction = getattr(loss_fn, "reduction", None)
    if isinstance(loss_fn, nn.Module) and isinstance(reduction, str):
        if reduction not in MEAN_REDUCTIONS:
            raise InvalidArgument(
                f"loss_fn has reduction={reduction!r}; curvprune needs the batch mean "
                f"(a sum scales every gradient and curvature by the batch size): use "
                f"{type(loss_fn).__name__}(reduction='mean')"
            )
        return loss_fn
    return CheckedLoss(loss_fn)


def output_loss(loss_fn: LossFn, outputs: Tensor, targets: Tensor) -> Tensor:
    """``loss_fn(outputs, targets)``, checked to be a scalar batch mean."""
    loss = loss_fn(outputs, targets)
    if loss.dim() != 0:
        raise InvalidArgument(
            f"loss_fn must return the batch mean (a scalar), got shape {tuple(loss.shape)}; "
            "use reduction='mean'"
        )
    if isinstance(loss_fn, CheckedLoss):
        loss_fn.verify(outputs, targets, loss)
    return loss


def batch_loss(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> Tensor:
    """The batch-mean loss, checked to be a scalar (and, once, to be a mean: `CheckedLoss`)."""
    return output_loss(loss_fn, call_model(model, x), y)


def loss_gradient(model: nn.Module, loss_fn: LossFn | None, batches: Iterable) -> dict[str, Tensor]:
    """∇L for every trainable parameter, L the mean per-sample loss over all batches.

    A batch of B samples out of N in all contributes (B / N)·∇(batch-mean loss).
    """
    loss_fn = default_loss(loss_fn)
    params = trainable_parameters(model)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    with preserved(model):
        for x, y in iter_batches(batches, model):
            loss = batch_loss(model, loss_fn, x, y)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            b = num_samples(x)
            for (n, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    total[n].add_(g, alpha=b)
            count += b
    return distributed.mean_over_samples(count, total)[0]
