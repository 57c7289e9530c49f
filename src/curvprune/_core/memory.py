"""Memory budgets: parse them, estimate per-sample costs, choose chunk sizes, report peaks."""

from __future__ import annotations

import re
import resource
import sys
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from curvprune._core.inputs import Inputs, call_model, take
from curvprune._core.state import modes_kept
from curvprune.errors import InvalidArgument

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 10**3,
    "kib": 2**10,
    "m": 2**20,
    "mb": 10**6,
    "mib": 2**20,
    "g": 2**30,
    "gb": 10**9,
    "gib": 2**30,
    "t": 2**40,
    "tb": 10**12,
    "tib": 2**40,
}


def parse_memory(value: int | str) -> int:
    """Bytes from an int or a string such as ``"8GiB"``, ``"512MB"``, ``"2g"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise InvalidArgument(
            f"memory size {value!r} is not a positive size such as 8GiB, 512MB or 2000000000"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def available_memory(device: torch.device | str = "cpu") -> int:
    """Free bytes on `device`: the GPU's free memory, or MemAvailable for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30  # no /proc (macOS, Windows): assume a modest machine


def per_sample_bytes(model: nn.Module, example: Inputs) -> int:
    """Rough bytes one sample costs while computing per-sample gradients.

    Activations of one forward pass (every module's output, ×3 for what autograd saves, the
    recorded inputs and output gradients) plus two copies of the largest parameter (one sample's
    gradient of it, and its square).
    """
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with modes_kept(model, eval=True), torch.no_grad():
            call_model(model, take(example, 0, 1))
    finally:
        for h in handles:
            h.remove()
    largest = max((p.numel() * p.element_size() for p in model.parameters()), default=0)
    return 3 * total + 2 * largest


def auto_chunk_size(model: nn.Module, example: Inputs, budget: int) -> int:
    """Samples per forward/backward pass that fit `budget` bytes (at least 1)."""
    return max(1, budget // max(1, per_sample_bytes(model, example)))


def peak_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Peak memory of this process so far: the GPU allocator's peak, or the CPU's max RSS."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


@dataclass(frozen=True)
class MemoryBaseline:
    """What a process held before some work, so that its peak can be reported relative to it.

    Attributes:
        device: the device measured (``"cpu"``: resident set size; CUDA: allocated bytes).
        bytes: memory in use when the baseline was taken.
        peak_reset: True if the peak was reset then (CUDA always; CPU on Linux through
            ``/proc/self/clear_refs``), so a later peak covers only the work after it.
    """

    device: str
    bytes: int
    peak_reset: bool


def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/self/status`` in bytes, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def memory_baseline(device: torch.device | str = "cpu") -> MemoryBaseline:
    """Reset the peak and record the memory in use now; see `peak_memory_since`.

    On CUDA: ``torch.cuda.reset_peak_memory_stats`` and ``memory_allocated``. On the CPU: the
    current resident set size; on Linux the kernel's high-water mark is reset too (writing 5
    to ``/proc/self/clear_refs``), elsewhere the peak stays the process's lifetime maximum.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return MemoryBaseline(str(device), torch.cuda.memory_allocated(device), True)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    rss = _proc_status_bytes("VmRSS")
    return MemoryBaseline(str(device), rss if rss is not None else peak_memory_bytes(), reset)


def peak_memory_since(baseline: MemoryBaseline) -> int:
    """Peak bytes above `baseline` since it was taken (0 if memory never rose above it).

    What the work itself cost, without what the process held before (the ``torch`` import
    alone is several hundred MB of resident memory). Without a peak reset (CPU, not Linux)
    this is the lifetime peak minus the baseline: an upper bound of the work's own peak when
    something before the baseline used more.
    """
    device = torch.device(baseline.device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        hwm = _proc_status_bytes("VmHWM")
        peak = hwm if hwm is not None else peak_memory_bytes()
    return max(0, peak - baseline.bytes)
