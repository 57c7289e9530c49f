"""Combining ranks under `torch.distributed`: every rank gets the single-process answer.

Estimators accumulate sums over their own batches and a sample count; when a process group is
initialized (and has more than one rank), these helpers add them up across ranks, so each rank
returns what one process would compute over the union of all ranks' batches. Works with any
backend (gloo on CPU, nccl on GPU). Without a process group they do nothing.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import torch
import torch.distributed as dist
from torch import Tensor

from curvprune.errors import InvalidArgument


def world_size() -> int:
    """Ranks in the default process group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _on_backend_device(t: Tensor) -> Tensor:
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        return t.cuda()
    return t


def sum_dicts(*dicts: MutableMapping[str, Tensor]) -> None:
    """In place: every tensor of every dict becomes its sum over ranks (one flat all-reduce)."""
    if world_size() == 1:
        return
    tensors = [t for d in dicts for t in d.values()]
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    flat = _on_backend_device(flat)
    dist.all_reduce(flat)
    i = 0
    for d in dicts:
        for k, t in d.items():
            d[k] = flat[i : i + t.numel()].reshape(t.shape).to(device=t.device, dtype=t.dtype)
            i += t.numel()


def sum_count(count: int) -> int:
    """An integer summed over ranks."""
    if world_size() == 1:
        return count
    t = _on_backend_device(torch.tensor([count], dtype=torch.int64))
    dist.all_reduce(t)
    return int(t.item())


def gather_rows(t: Tensor) -> Tensor:
    """Concatenate every rank's (n_r, ...) tensor along dim 0, in rank order, on every rank."""
    if world_size() == 1:
        return t
    local = _on_backend_device(t.contiguous())
    sizes = [torch.zeros(1, dtype=torch.int64, device=local.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], dtype=torch.int64, device=local.device))
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=local.device)
    padded[: t.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(t.device)


def mean_over_samples(count: int, *sums: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """Each dict of sums divided by the sample count, both combined over ranks first.

    Raises:
        InvalidArgument: no rank saw a sample.
    """
    sums = [dict(d) for d in sums]
    sum_dicts(*sums)
    count = sum_count(count)
    if count == 0:
        raise InvalidArgument("batches is empty: pass at least one (inputs, targets) batch")
    return [{n: t / count for n, t in d.items()} for d in sums]
