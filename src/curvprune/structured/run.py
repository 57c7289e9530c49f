"""`structured_run`: prune to a channel sparsity or a MACs target and measure both models.

The one call the CLI needs for ``curvprune prune --structured``; `StructuredResult.to_dict`
gives the keys that go into ``result.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from curvprune.errors import InvalidArgument
from curvprune.structured.measure import Latency, count_params_and_macs, measure_latency
from curvprune.structured.prune import prune_channels, prune_to_macs


@dataclass(frozen=True)
class ModelCost:
    """Parameters, MACs (one forward of the example inputs) and median latency (ms).

    ``latency_ms`` is a `Latency` (a ``{batch size: median ms}`` dict that also carries the
    interquartile range, device and thread count), or ``{}`` when nothing was timed.
    """

    params: int
    macs: int
    latency_ms: dict[int, float]


@dataclass
class StructuredResult:
    """What `structured_run` did.

    Attributes:
        model: the pruned copy.
        dense: cost of the model passed in.
        pruned: cost of `model`.
        channel_sparsity: the requested channel sparsity, or None.
        macs_target: the requested kept fraction of MACs, or None.
    """

    model: nn.Module
    dense: ModelCost
    pruned: ModelCost
    channel_sparsity: float | None
    macs_target: float | None

    def to_dict(self) -> dict:
        """JSON-ready ``params``, ``macs``, ``latency_ms`` (dense and pruned) and ratios."""
        speedup = {
            str(b): self.dense.latency_ms[b] / self.pruned.latency_ms[b]
            for b in self.dense.latency_ms
            if self.pruned.latency_ms.get(b)
        }
        return {
            "channel_sparsity": self.channel_sparsity,
            "macs_target": self.macs_target,
            "params": {"dense": self.dense.params, "pruned": self.pruned.params},
            "macs": {"dense": self.dense.macs, "pruned": self.pruned.macs},
            "params_kept": self.pruned.params / max(1, self.dense.params),
            "macs_kept": self.pruned.macs / max(1, self.dense.macs),
            "latency_ms": {
                "dense": {str(b): t for b, t in self.dense.latency_ms.items()},
                "pruned": {str(b): t for b, t in self.pruned.latency_ms.items()},
            },
            "speedup": speedup,
            **_latency_details(self.dense.latency_ms, self.pruned.latency_ms),
        }


def _latency_details(dense: dict, pruned: dict) -> dict:
    """``latency_iqr_ms`` (dense and pruned) and where the times were taken, if timed."""
    if not isinstance(dense, Latency) or not isinstance(pruned, Latency):
        return {}
    return {
        "latency_iqr_ms": {
            "dense": {str(b): t for b, t in dense.iqr_ms.items()},
            "pruned": {str(b): t for b, t in pruned.iqr_ms.items()},
        },
        "latency_device": dense.device,
        "latency_threads": dense.threads,
    }


def model_cost(
    model: nn.Module,
    example_inputs,
    *,
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 20,
) -> ModelCost:
    """`ModelCost` of `model`: counts on `example_inputs`, latency per batch size (empty: none)."""
    params, macs = count_params_and_macs(model, example_inputs)
    latency = (
        measure_latency(model, example_inputs, batch_sizes=batch_sizes, repeats=repeats)
        if batch_sizes
        else {}
    )
    return ModelCost(params, macs, latency)


def structured_run(
    model: nn.Module,
    criterion: str,
    batches: Iterable | None,
    *,
    example_inputs,
    channel_sparsity: float | None = None,
    macs_target: float | None = None,
    latency_batch_sizes: Sequence[int] = (1, 64),
    latency_repeats: int = 20,
    **prune_options,
) -> StructuredResult:
    """Prune a copy of `model` by `channel_sparsity` or to `macs_target`; measure both.

    Args:
        model: the network (unchanged).
        criterion: a structured criterion name.
        batches: scoring batches (None for data-free criteria).
        example_inputs: one sample (batch of 1) the model accepts: MACs are counted on it and
            latency inputs are shaped like it.
        channel_sparsity: fraction of channels removed (`prune_channels`); or
        macs_target: kept fraction of MACs (`prune_to_macs`). Exactly one must be given.
        latency_batch_sizes: batch sizes timed on the model's device (empty: no timing).
        latency_repeats: timed passes per batch size (median reported).
        **prune_options: the other keyword arguments of `prune_channels` / `prune_to_macs`
            (``loss_fn``, ``ignored_layers``, ``global_pruning``, ``max_layer_sparsity``,
            ``iterative_steps``, ``round_to``) and the criterion's options.

    Returns:
        The pruned model with the dense and pruned costs.
    """
    if (channel_sparsity is None) == (macs_target is None):
        raise InvalidArgument("give exactly one of channel_sparsity and macs_target")
    if channel_sparsity is not None:
        pruned = prune_channels(
            model,
            criterion,
            batches,
            sparsity=channel_sparsity,
            example_inputs=example_inputs,
            **prune_options,
        )
    else:
        pruned = prune_to_macs(
            model,
            criterion,
            batches,
            macs_target=macs_target,
            example_inputs=example_inputs,
            **prune_options,
        )
    cost = {"batch_sizes": latency_batch_sizes, "repeats": latency_repeats}
    return StructuredResult(
        model=pruned,
        dense=model_cost(model, example_inputs, **cost),
        pruned=model_cost(pruned, example_inputs, **cost),
        channel_sparsity=channel_sparsity,
        macs_target=macs_target,
    )


__all__ = ["ModelCost", "StructuredResult", "model_cost", "structured_run"]
