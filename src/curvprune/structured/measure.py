"""What a structured prune buys: parameters, multiply-accumulates and measured CPU latency."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from curvprune._core.batches import model_device_dtype
from curvprune.errors import InvalidArgument, InvalidType


def as_inputs(model: nn.Module, example_inputs: object) -> tuple[Tensor, ...]:
    """`example_inputs` as a tuple of tensors on the model's device (floats in its dtype).

    Raises:
        InvalidArgument: None.
        InvalidType: anything but a tensor or a tuple/list of tensors.
    """
    if example_inputs is None:
        raise InvalidArgument(
            "example_inputs is required: a batch the model accepts, used to trace its layers "
            "and count MACs, e.g. torch.zeros(1, 3, 32, 32)"
        )
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not items or not all(isinstance(t, Tensor) for t in items):
        raise InvalidType(
            "example_inputs must be a tensor or a tuple of tensors (the model's positional "
            f"inputs), got {type(example_inputs).__name__}"
        )
    device, dtype = model_device_dtype(model)
    return tuple(t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in items)


def _attention_macs(module: nn.Module, inputs: tuple, output) -> int:
    # q·kᵀ and softmax·v: 2 · B · heads · N² · head_dim (the projections are nn.Linear)
    x = inputs[0]
    if x.dim() != 3:
        return 0
    b, n, _ = x.shape
    return 2 * b * module.num_heads * n * n * module.head_dim


def _layer_macs(module: nn.Module, inputs: tuple, output) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        if module.transposed:
            return inputs[0].numel() * (module.out_channels // module.groups) * kernel
        return output.numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return _attention_macs(module, inputs, output)


def _counted(module: nn.Module) -> bool:
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return True
    return (
        isinstance(getattr(module, "qkv", None), nn.Linear)
        and isinstance(getattr(module, "num_heads", None), int)
        and isinstance(getattr(module, "head_dim", None), int)
    )


@torch.no_grad()
def count_params_and_macs(model: nn.Module, example_inputs) -> tuple[int, int]:
    """Parameters and multiply-accumulates of one forward pass on `example_inputs`.

    MACs count convolutions (output elements × C_in/groups × kernel), linear layers (output
    elements × in_features) and, in timm-style attention modules (``qkv``, ``num_heads``,
    ``head_dim``), the two attention products (2 · B · heads · N² · head_dim). Normalization,
    activations and pooling are not counted. MACs scale with the batch: pass one sample for
    per-image MACs.

    Args:
        model: the network; its train/eval flags are restored.
        example_inputs: a tensor or a tuple of the model's positional inputs.

    Returns:
        ``(parameters, macs)``: every parameter's element count, and the MACs.
    """
    inputs = as_inputs(model, example_inputs)
    total = 0

    def hook(module, args, output):
        nonlocal total
        total += _layer_macs(module, args, output)

    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(hook) for m in model.modules() if _counted(m)]
    try:
        model.eval()
        model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    params = sum(p.numel() for p in model.parameters())
    return params, int(total)


def measure_latency(
    model: nn.Module,
    example_inputs,
    *,
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> dict[int, float]:
    """Median wall-clock milliseconds of one forward pass on the CPU, per batch size.

    Runs a copy of the model in eval mode under ``torch.inference_mode`` with the current
    ``torch.get_num_threads()``, on random inputs shaped like one sample of `example_inputs`.

    Args:
        model: the network (left unchanged; measured on a CPU copy if it lives elsewhere).
        example_inputs: a tensor or tuple of tensors; only the shapes of one sample are used.
        batch_sizes: batch sizes to time.
        repeats: timed passes per batch size; the median is reported.
        warmup: untimed passes first.
        seed: seed of the random inputs.

    Returns:
        ``{batch size: median milliseconds}``.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise InvalidArgument(f"repeats must be a positive integer, got {repeats!r}")
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise InvalidArgument(f"batch sizes must be positive integers, got {b!r}")
    samples = as_inputs(model, example_inputs)
    device, _ = model_device_dtype(model)
    cpu = model if device.type == "cpu" else copy.deepcopy(model).cpu()
    modes = [(m, m.training) for m in cpu.modules()]
    gen = torch.Generator().manual_seed(seed)
    result = {}
    try:
        cpu.eval()
        with torch.inference_mode():
            for b in batch_sizes:
                inputs = tuple(
                    torch.randn((b, *t.shape[1:]), generator=gen, dtype=t.dtype)
                    if t.is_floating_point()
                    else t[:1].cpu().expand(b, *t.shape[1:]).clone()
                    for t in samples
                )
                for _ in range(warmup):
                    cpu(*inputs)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    cpu(*inputs)
                    times.append((time.perf_counter() - start) * 1000)
                result[b] = statistics.median(times)
    finally:
        for m, training in modes:
            m.training = training
    return result


__all__ = ["as_inputs", "count_params_and_macs", "measure_latency"]
