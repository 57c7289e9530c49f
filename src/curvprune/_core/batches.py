"""Iterating the user's `batches`: validation, device/dtype placement, re-chunking.

`batches` is any iterable of ``(inputs, targets)`` pairs: a DataLoader, a list, a generator. The
objective L is the mean of per-sample losses over every sample of every batch, so a batch of B
samples whose `loss_fn` returns the batch mean weighs B / N in L.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from curvprune.errors import InvalidArgument, InvalidType

Batch = tuple[Tensor, Tensor]


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU/float32 if it has none)."""
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def iter_batches(batches: Iterable, model: nn.Module) -> Iterator[Batch]:
    """Yield ``(inputs, targets)`` on the model's device; floating inputs take the model's dtype.

    Raises:
        InvalidType: an item is not a pair of tensors.
        InvalidArgument: a batch is empty or inputs and targets disagree in length.
    """
    if isinstance(batches, tuple) and len(batches) == 2 and isinstance(batches[0], Tensor):
        raise InvalidType(
            "batches must be an iterable of (inputs, targets) pairs, e.g. [(x, y)] or a "
            "DataLoader; got a single (inputs, targets) tuple: wrap it in a list"
        )
    device, dtype = model_device_dtype(model)
    for i, item in enumerate(batches):
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise InvalidType(
                f"batch {i} is a {type(item).__name__}; each batch must be an "
                "(inputs, targets) pair of tensors"
            )
        x, y = item[0], item[1]
        if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
            raise InvalidType(f"batch {i}: inputs and targets must be tensors")
        if x.shape[0] == 0:
            raise InvalidArgument(f"batch {i} is empty")
        if x.shape[0] != y.shape[0]:
            raise InvalidArgument(f"batch {i}: {x.shape[0]} inputs but {y.shape[0]} targets")
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
        y = y.to(device=device, dtype=dtype) if y.is_floating_point() else y.to(device)
        yield x, y


def rechunk(stream: Iterable[Batch], chunk: int) -> Iterator[tuple[Batch, int]]:
    """Regroup a stream of batches so each yielded batch holds whole chunks of `chunk` samples.

    Chunks are consecutive samples of the stream, crossing the boundaries of the original
    batches; only the very last chunk of the stream may be shorter. Yields ``(batch, n_full)``
    where the first ``n_full * chunk`` samples form full chunks and any rest is the final, short
    chunk.
    """
    pending: list[Batch] = []
    held = 0
    for x, y in stream:
        pending.append((x, y))
        held += x.shape[0]
        if held >= chunk:
            xs = torch.cat([p[0] for p in pending])
            ys = torch.cat([p[1] for p in pending])
            usable = (held // chunk) * chunk
            yield (xs[:usable], ys[:usable]), usable // chunk
            pending = [(xs[usable:], ys[usable:])] if usable < held else []
            held -= usable
    if held:
        xs = torch.cat([p[0] for p in pending])
        ys = torch.cat([p[1] for p in pending])
        yield (xs, ys), 0


def first_batch(batches: Iterable, model: nn.Module) -> Batch:
    """The first batch, validated; error if `batches` is empty."""
    for batch in iter_batches(batches, model):
        return batch
    raise InvalidArgument("batches is empty: pass at least one (inputs, targets) batch")


def reiterable(batches: Iterable) -> Iterable:
    """A list if `batches` is a one-shot iterator (criteria may pass over the data twice)."""
    return list(batches) if iter(batches) is batches else batches
