"""What a prune buys: parameters, multiply-accumulates (dense and effective) and latency."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from curvprune._core.batches import model_device_dtype
from curvprune._core.checks import positive_int
from curvprune._core.state import modes_kept
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


def _mha_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> dict[str, int]:
    """MACs of one `nn.MultiheadAttention` call, keyed by the weight each product uses.

    Its projections are not module calls (``F.multi_head_attention_forward`` reads the
    weights), so no Linear hook sees them. With query length L, key length S, batch B,
    embedding E and key/value widths kdim, vdim: the in-projections cost B·(L·E + S·kdim +
    S·vdim)·E, each attention product (QKᵀ and AV) B·L·S'·E with S' = S plus one for
    ``bias_k`` and one for ``add_zero_attn``, and the out-projection B·L·E·E.
    """
    names = ("query", "key", "value")
    query, key, value = (
        args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(names)
    )
    if query is None or key is None or value is None:
        return {}
    batched = query.dim() == 3
    seq_dim = 1 if batched and module.batch_first else 0
    batch = query.shape[1 - seq_dim] if batched else 1
    length, source = query.shape[seq_dim], key.shape[seq_dim]
    e = module.embed_dim
    source_attended = source + (module.bias_k is not None) + bool(module.add_zero_attn)
    if module._qkv_same_embed_dim:
        projections = {"in_proj_weight": batch * (length + 2 * source) * e * e}
    else:
        projections = {
            "q_proj_weight": batch * length * e * e,
            "k_proj_weight": batch * source * module.kdim * e,
            "v_proj_weight": batch * source * module.vdim * e,
        }
    return {
        **projections,
        _ATTENTION: 2 * batch * length * source_attended * e,
        "out_proj.weight": batch * length * e * e,
    }


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
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention)):
        return True
    return (
        isinstance(getattr(module, "qkv", None), nn.Linear)
        and isinstance(getattr(module, "num_heads", None), int)
        and isinstance(getattr(module, "head_dim", None), int)
    )


#: Key suffix of weight-free products (QKᵀ and AV) in `macs_by_weight`.
_ATTENTION = "<attention>"


@torch.no_grad()
def macs_by_weight(model: nn.Module, example_inputs) -> dict[str, int]:
    """Multiply-accumulates of one forward pass, keyed by the weight each product uses.

    Keys are weight names as in ``named_parameters()`` (``"fc1.weight"``,
    ``"blocks.0.attn.in_proj_weight"``), so they match masks and ``layer_density``; the
    attention products of an attention module, which multiply activations by activations,
    are keyed ``"<module name>.<attention>"``. A module called twice adds up. The values sum
    to the MACs of `count_params_and_macs`.

    Args:
        model: the network; its train/eval flags are restored.
        example_inputs: a tensor or a tuple of the model's positional inputs.
    """
    inputs = as_inputs(model, example_inputs)
    totals: dict[str, int] = {}

    def add(key: str, macs: int) -> None:
        totals[key] = totals.get(key, 0) + int(macs)

    def hook_for(name: str, module: nn.Module):
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.MultiheadAttention):

            def mha_hook(mod, args, kwargs, output):
                for key, macs in _mha_macs(mod, args, kwargs).items():
                    add(prefix + key, macs)

            return module.register_forward_hook(mha_hook, with_kwargs=True)

        def hook(mod, args, output):
            is_layer = isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear))
            add(prefix + ("weight" if is_layer else _ATTENTION), _layer_macs(mod, args, output))

        return module.register_forward_hook(hook)

    # An MHA's out_proj is an nn.Linear that MHA never calls: it is counted by the MHA hook.
    inside_mha = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    handles = [
        hook_for(n, m) for n, m in model.named_modules() if _counted(m) and id(m) not in inside_mha
    ]
    try:
        with modes_kept(model, eval=True):
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return totals


def effective_macs(
    model: nn.Module, example_inputs, layer_density: Mapping[str, float] | None = None
) -> tuple[int, int]:
    """Dense and effective MACs of a masked (unstructured) model: Σ MACs × density.

    The effective count is Σ_w MACs(w) · density(w) over the products of `macs_by_weight`,
    where density(w) is the kept fraction of weight w (1 for weights without a mask and for
    the attention products): what a sparse kernel that skips zero weights would compute.

    Args:
        model: the network, masked with ``torch.nn.utils.prune`` or not.
        example_inputs: one sample (batch of 1) for per-sample MACs.
        layer_density: kept fraction per weight name, e.g. a result's ``layer_density``;
            default: read from the model's masks.

    Returns:
        ``(dense MACs, effective MACs)``.
    """
    macs = macs_by_weight(model, example_inputs)
    if layer_density is None:
        from curvprune._core.params import prunable_weights

        weights = prunable_weights(model, lambda name, module: True)
        layer_density = {}
        for name, w in weights.items():
            mask = w.mask()
            if mask is not None:
                layer_density[name] = float(mask.sum()) / mask.numel()
    effective = sum(m * float(layer_density.get(k, 1.0)) for k, m in macs.items())
    return sum(macs.values()), int(round(effective))


@torch.no_grad()
def count_params_and_macs(model: nn.Module, example_inputs) -> tuple[int, int]:
    """Parameters and multiply-accumulates of one forward pass on `example_inputs`.

    MACs count convolutions (output elements × C_in/groups × kernel), linear layers (output
    elements × in_features), `nn.MultiheadAttention` (its in- and out-projections and both
    attention products, see `_mha_macs`) and, in timm-style attention modules (``qkv``,
    ``num_heads``, ``head_dim``), the two attention products (2 · B · heads · N² · head_dim).
    Normalization, activations, softmax and pooling are not counted. MACs scale with the
    batch: pass one sample for per-image MACs.

    Args:
        model: the network; its train/eval flags are restored.
        example_inputs: a tensor or a tuple of the model's positional inputs.

    Returns:
        ``(parameters, macs)``: every parameter's element count, and the MACs.
    """
    total = sum(macs_by_weight(model, example_inputs).values())
    params = sum(p.numel() for p in model.parameters())
    return params, int(total)


class Latency(dict):
    """``{batch size: median milliseconds}``, plus how the times were taken.

    A plain mapping of batch size to median time, as `measure_latency` always returned, with
    attributes for the spread and the conditions.

    Attributes:
        iqr_ms: ``{batch size: interquartile range (ms)}`` of the timed passes.
        device: where the model ran, e.g. ``"cpu"`` or ``"cuda:0"``.
        threads: ``torch.get_num_threads()`` during the measurement.
        repeats: timed passes per batch size.
        warmup: untimed passes before them.
    """

    def __init__(self, median_ms, *, iqr_ms, device: str, threads: int, repeats, warmup) -> None:
        super().__init__(median_ms)
        self.iqr_ms = dict(iqr_ms)
        self.device = device
        self.threads = threads
        self.repeats = repeats
        self.warmup = warmup

    def to_dict(self) -> dict:
        """JSON-ready dict.

        Keys: ``median_ms`` and ``iqr_ms`` (string batch keys), ``device``, ``threads``,
        ``repeats``, ``warmup``.
        """
        return {
            "median_ms": {str(b): t for b, t in self.items()},
            "iqr_ms": {str(b): t for b, t in self.iqr_ms.items()},
            "device": self.device,
            "threads": self.threads,
            "repeats": self.repeats,
            "warmup": self.warmup,
        }


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linearly interpolated quantile of sorted values (numpy's default method)."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def measure_latency(
    model: nn.Module,
    example_inputs,
    *,
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> Latency:
    """Median wall-clock milliseconds of one forward pass on the model's device, per batch size.

    Times the model in eval mode under ``torch.no_grad`` (not ``inference_mode``: a pruning
    hook would cache an inference tensor as the module's weight) with
    `torch.utils.benchmark.Timer` (which synchronizes CUDA around each pass) and the current
    ``torch.get_num_threads()``, on random inputs shaped like one sample of `example_inputs`:
    ``warmup`` untimed passes, then ``repeats`` timed passes of one forward each.

    Args:
        model: the network, timed where it lives; its train/eval flags are restored.
        example_inputs: a tensor or tuple of tensors; only the shapes of one sample are used.
        batch_sizes: batch sizes to time.
        repeats: timed passes per batch size; the median and interquartile range are reported.
        warmup: untimed passes first.
        seed: seed of the random inputs.

    Returns:
        A `Latency`: ``{batch size: median milliseconds}`` with ``iqr_ms``, ``device`` and
        ``threads`` attributes (``to_dict()`` for JSON).
    """
    benchmark = _torch_benchmark()
    positive_int("repeats", repeats)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise InvalidArgument(f"warmup must be a non-negative integer, got {warmup!r}")
    for b in batch_sizes:
        positive_int("batch sizes", b)
    samples = as_inputs(model, example_inputs)
    device, dtype = model_device_dtype(model)
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(seed)
    median, iqr = {}, {}
    with modes_kept(model, eval=True), torch.no_grad():
        for b in batch_sizes:
            inputs = tuple(
                torch.randn((b, *t.shape[1:]), generator=gen).to(device, dtype)
                if t.is_floating_point()
                else t[:1].expand(b, *t.shape[1:]).clone()
                for t in samples
            )
            # Timer defaults to one thread: keep the caller's count, as a run would use.
            timer = benchmark.Timer(
                stmt="model(*inputs)",
                globals={"model": model, "inputs": inputs},
                num_threads=threads,
            )
            if warmup:
                timer.timeit(warmup)
            times = sorted(1000 * timer.timeit(1).raw_times[0] for _ in range(repeats))
            median[b] = statistics.median(times)
            iqr[b] = _quantile(times, 0.75) - _quantile(times, 0.25)
    return Latency(
        median, iqr_ms=iqr, device=str(device), threads=threads, repeats=repeats, warmup=warmup
    )


__all__ = [
    "Latency",
    "as_inputs",
    "count_params_and_macs",
    "effective_macs",
    "macs_by_weight",
    "measure_latency",
]


def _torch_benchmark():
    """`torch.utils.benchmark`, imported without its ``cpp_extension`` import's warning.

    A CUDA build of torch on a machine without the CUDA runtime logs "No CUDA runtime is found"
    there, which says nothing about the measurement.
    """
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        log.setLevel(level)
    return benchmark
