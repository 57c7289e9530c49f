"""Multi-process runs under ``torchrun``: the process group, the device, and rank-0 duties.

``torchrun --nproc-per-node K -m curvprune prune ...`` starts K processes and describes each in
its environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
`process_group` joins the default group from those variables (gloo on the CPU, nccl on CUDA,
each rank on ``cuda:LOCAL_RANK``) and leaves it at exit. Everything else here is a no-op with a
single process, so a run calls these helpers unconditionally.

What keeps ranks in step: every rank builds the same model from the same seed, the core
estimators combine their sums over ranks (`curvprune._core.distributed`), so scores and masks are
identical everywhere; `DistributedDataParallel` averages gradients; `sync_buffers` copies rank
0's BatchNorm statistics after training, so evaluation, scoring and the saved model agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from curvprune._core.distributed import gather_rows, rank, world_size
from curvprune.errors import CurvpruneError, InvalidArgument

__all__ = [
    "backend",
    "broadcast_object",
    "check_same_on_all_ranks",
    "ddp",
    "env_rank",
    "is_main",
    "mask_digest",
    "max_over_ranks",
    "process_group",
    "resolve_device",
    "run_device",
    "shard_eval",
    "sync_buffers",
    "torchrun_env",
]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` (optionally ``cuda:N``) or ``mps`` into a `torch.device`.

    Raises:
        InvalidArgument: For an unknown name, or ``cuda`` on a machine without a usable GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InvalidArgument(
                f"--device {name}: no CUDA device is available here; use --device cpu or auto"
            )
        return torch.device(name)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise InvalidArgument(
                "--device mps: no Apple-silicon GPU (MPS) is available here; use --device cpu"
            )
        return torch.device("mps")
    raise InvalidArgument(f"unknown --device {name!r}; valid: auto, cpu, cuda, cuda:N, mps")


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's variables, or None when not set.

    Raises:
        InvalidArgument: The variables are set but are not integers in range.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        r, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", r))
    except ValueError:
        values = ", ".join(f"{k}={os.environ.get(k)!r}" for k in _ENV)
        raise InvalidArgument(f"torchrun variables must be integers, got {values}") from None
    if world < 1 or not 0 <= r < world or local < 0:
        raise InvalidArgument(f"RANK={r} must be in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return r, world, local


def env_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun or when unreadable)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """True on the rank that writes files and logs (rank 0, or the only process)."""
    return rank() == 0


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[None]:
    """Join the process group that torchrun's variables describe; leave it on exit.

    Without torchrun's variables, or when the caller already initialized a group (which is then
    left alone), this does nothing.

    Args:
        device: The run's ``--device``: CUDA selects the nccl backend and ``cuda:LOCAL_RANK``,
            anything else gloo.

    Raises:
        InvalidArgument: ``--device cuda:N`` with several ranks (each rank takes its own GPU),
            or RANK / WORLD_SIZE without MASTER_ADDR / MASTER_PORT.
    """
    env = torchrun_env()
    if env is None or dist.is_initialized():
        yield
        return
    r, world, local = env
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise InvalidArgument(
            f"RANK and WORLD_SIZE are set but {' and '.join(missing)} is not; start "
            "multi-process runs with torchrun (see docs/distributed.md)"
        )
    target = resolve_device(device)
    options: dict[str, Any] = {}
    if target.type == "cuda":
        if target.index is not None and world > 1:
            raise InvalidArgument(
                f"--device {device} with {world} ranks: use --device cuda, each rank then "
                "takes cuda:LOCAL_RANK"
            )
        if local >= torch.cuda.device_count():
            raise InvalidArgument(
                f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s); "
                "start at most that many processes per node"
            )
        torch.cuda.set_device(local)
        options["device_id"] = torch.device("cuda", local)
    backend = "nccl" if target.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=r, world_size=world, **options)
    try:
        yield
    except (CurvpruneError, OSError) as err:
        # Raised inside the group, so possibly on this rank alone: the CLI prints it on every
        # rank, tagged; errors raised before (the same on every rank) only rank 0 prints.
        err.rank = r
        raise
    finally:
        dist.destroy_process_group()


def backend() -> str | None:
    """The process group's backend (``"gloo"``, ``"nccl"``), or None without one."""
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def run_device(name: str) -> torch.device:
    """`resolve_device`, with plain ``cuda`` meaning this rank's GPU under a process group."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        local = os.environ.get("LOCAL_RANK")
        index = int(local) if world_size() > 1 and local else torch.cuda.current_device()
        device = torch.device("cuda", index)
    return device


def ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in `DistributedDataParallel` with several ranks, else itself.

    Only the training loop sees the wrapper; pruning, scoring and evaluation use ``model``.
    """
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


@torch.no_grad()
def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers to every rank.

    DDP broadcasts BatchNorm statistics before each forward pass, so after the last training
    step every rank holds statistics updated by its own batch; this makes them rank 0's.
    """
    if world_size() == 1:
        return
    for buffer in model.buffers():
        on_backend = buffer.cuda() if dist.get_backend() == "nccl" else buffer
        dist.broadcast(on_backend, src=0)
        if on_backend is not buffer:
            buffer.copy_(on_backend)


def max_over_ranks(value: int) -> int:
    """The largest of every rank's ``value``."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` (any picklable value) on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mask_digest(model: nn.Module) -> int:
    """A 63-bit checksum of what pruning decided.

    It covers the `torch.nn.utils.prune` masks (names and values) and every parameter's shape
    (which structured pruning changes).
    """
    h = hashlib.sha1()
    for name, mask in model.named_buffers():
        if name.endswith("_mask"):
            h.update(name.encode())
            h.update(mask.detach().cpu().contiguous().numpy().tobytes())
    for name, p in model.named_parameters():
        h.update(f"{name}{tuple(p.shape)}".encode())
    return int.from_bytes(h.digest()[:8], "little") >> 1


def check_same_on_all_ranks(model: nn.Module) -> None:
    """Fail loudly if the ranks' masks or shapes differ (a bug, not a user error)."""
    if world_size() == 1:
        return
    digests = gather_rows(torch.tensor([mask_digest(model)], dtype=torch.int64)).tolist()
    if len(set(digests)) > 1:
        raise RuntimeError(f"pruning masks differ between ranks: digests {digests}")


def shard_eval(loader: Any) -> Any:
    """Rank r's share of an evaluation loader: samples r, r + K, ... (all of them, once).

    Unlike the training shards (equal length, up to K - 1 samples left out per epoch), these
    cover the test set exactly, so accuracies summed over ranks equal one process's.
    """
    if world_size() == 1:
        return loader
    if not hasattr(loader, "eval_shard"):
        raise TypeError(f"cannot shard a {type(loader).__name__} across ranks")
    return loader.eval_shard(rank(), world_size())
