"""Iterating the user's `batches`: validation, device/dtype placement, re-chunking.

`batches` is any iterable of ``(inputs, targets)`` pairs: a DataLoader, a list, a generator.
Inputs are a tensor, or a dict of tensors that share their first (sample) dimension, such as
a Hugging Face tokenizer's ``{"input_ids": ..., "attention_mask": ...}``; the model is called
as ``model(inputs)`` or ``model(**inputs)`` (see `curvprune._core.inputs`). The objective L is
the mean of per-sample losses over every sample of every batch, so a batch of B samples whose
`loss_fn` returns the batch mean weighs B / N in L.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from curvprune._core.inputs import Inputs, cat, num_samples, take
from curvprune.errors import InvalidArgument, InvalidType

Batch = tuple[Inputs, Tensor]


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
        if isinstance(x, Mapping):
            x = _check_dict(x, i)
        elif not (isinstance(x, Tensor) and isinstance(y, Tensor)):
            raise InvalidType(f"batch {i}: inputs and targets must be tensors")
        if not isinstance(y, Tensor):
            raise InvalidType(f"batch {i}: targets must be a tensor")
        n = num_samples(x)
        if n == 0:
            raise InvalidArgument(f"batch {i} is empty")
        if n != y.shape[0]:
            raise InvalidArgument(f"batch {i}: {n} inputs but {y.shape[0]} targets")
        yield _placed(x, device, dtype), _placed(y, device, dtype)


def _placed(x: Inputs, device: torch.device, dtype: torch.dtype) -> Inputs:
    """On `device`; floating tensors take `dtype` (dicts: each of their tensors)."""
    if isinstance(x, dict):
        return {k: _placed(v, device, dtype) for k, v in x.items()}
    return x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)


def _check_dict(x: Mapping, i: int) -> dict[str, Tensor]:
    if not x or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in x.items()):
        raise InvalidType(
            f"batch {i}: dict inputs must map argument names to tensors, e.g. a tokenizer's "
            "{'input_ids': ..., 'attention_mask': ...}"
        )
    sizes = {k: v.shape[0] if v.dim() else None for k, v in x.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise InvalidArgument(
            f"batch {i}: the tensors of dict inputs must share their first (sample) "
            f"dimension, got {sizes}"
        )
    return dict(x)


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
        held += num_samples(x)
        if held >= chunk:
            xs = cat([p[0] for p in pending])
            ys = torch.cat([p[1] for p in pending])
            usable = (held // chunk) * chunk
            yield (take(xs, 0, usable), ys[:usable]), usable // chunk
            pending = [(take(xs, usable, held), ys[usable:])] if usable < held else []
            held -= usable
    if held:
        xs = cat([p[0] for p in pending])
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
