"""Channel criteria: per-weight terms that are summed over each channel's weights.

A channel's weights are every parameter entry that goes when the channel goes: the output rows
of the convolution or linear layer that makes it (weight and bias), the BatchNorm/LayerNorm
γ and β that scale it, the input columns of every layer that reads it, and any coupled channel
of a residual branch or concatenation (one Torch-Pruning dependency group). θ, g, F, D and H are
taken over *every* trainable parameter, because removing a channel perturbs all of those
entries at once: H θ is the Hessian times the full parameter vector.

Each function returns a `ChannelTerms`; `curvprune.structured.groups.ChannelImportance` turns
it into one score per channel of each group (higher = keep). These functions import nothing
from Torch-Pruning, so the criteria registry can list them cheaply; their formulas are the
per-weight terms of `curvprune.criteria.terms`, shared with the per-weight scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from curvprune._core.params import trainable_parameters
from curvprune.criteria.scores import (
    DEFAULT_TEMPERATURE,
    OBA_CODE_EPS,
    ObaVariant,
    with_temperature,
)
from curvprune.criteria.terms import first_order, hessian_term, obd, taylor_sensitivity
from curvprune.curvature.fisher import empirical_fisher_diag
from curvprune.curvature.gauss_newton import oba_curvature_product
from curvprune.curvature.gradient import loss_gradient
from curvprune.curvature.hessian import _hutchinson, hessian_vector_product

#: How a channel's per-weight terms become its score. "layer_abs": Σ over the group's layers of
#: |Σ over the layer's slice| (OBA); "layer_abs_mean": the same ÷ the number of layers whose
#: slice terms are not all zero (the OBA code's group mean); "abs": |Σ over the whole group|;
#: "sum": Σ over the group (terms already ≥ 0); "random": uniform in [0, 1), no terms.
REDUCTIONS = ("layer_abs", "layer_abs_mean", "abs", "sum", "random")

#: Per-group normalizations: divide a group's scores by their max, mean or sum.
Normalizer = Literal["none", "max", "mean", "sum"]

#: ``variant`` of `taylor` and `l1`: "original" their own definitions, "oba_code" as the OBA
#: repository ran them as baselines (Torch-Pruning importances with ``normalizer="max"``).
ChannelVariant = Literal["original", "oba_code"]

_NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class ChannelTerms:
    """One pruning step's per-weight terms and the rule that sums them per channel.

    Attributes:
        per_weight: ``{parameter name: term}`` shaped like each trainable parameter (None for
            ``random``).
        reduction: one of `REDUCTIONS`.
        normalize: one of `Normalizer`, applied to each group's scores.
        seed: seed of ``random`` scores.
        eps: added to the normalizer's denominator (the OBA code's 1e-6).
    """

    per_weight: dict[str, Tensor] | None
    reduction: str
    normalize: str = "none"
    seed: int = 0
    eps: float = 0.0


def _theta(model) -> dict[str, Tensor]:
    return {n: p.detach() for n, p in trainable_parameters(model).items()}


def oba_channel(
    model,
    batches,
    loss_fn,
    *,
    normalize: Normalizer = "max",
    variant: ObaVariant = "original",
    norm_layers: bool | None = None,
) -> ChannelTerms:
    """OBA: θ ⊙ ((H − G)θ) per weight; score = Σ_layers |Σ_slice θ ⊙ ((H − G)θ)|, / group max.

    H − G is the network's own curvature, the output gradient held fixed
    (`curvprune.curvature.oba_curvature_product`): the OBA code's inter-layer terms, exactly
    for piecewise-linear networks (see `curvprune.criteria.scores.oba_scores` for where the
    official code differs: attention softmax, GELU and LayerNorm). θ is every trainable
    parameter, so (H − G)θ holds the cross terms between the removed channel and all other
    weights. As in the OBA reference code, the absolute value is taken per coupled layer
    (after summing that layer's slice), the layers are summed, and each group is divided by its
    largest score (``normalize="max"``).

    ``norm_layers`` (default True): BatchNorm/LayerNorm/GroupNorm γ and β are part of θ and
    their slices count as layers of the group. The OBA code (``variant="oba_code"``, whose
    default is False) perturbs only Linear/Conv weights and biases and gives norm layers zero
    importance; it also averages over the group's layers with a non-zero slice instead of
    summing, adds 1e-6 to the max, and scores in train mode (the registry's default `mode`).
    """
    if norm_layers is None:
        norm_layers = variant != "oba_code"
    theta = _theta(model)
    if not norm_layers:
        theta = _without_norm_layers(model, theta)
    product = oba_curvature_product(model, loss_fn, batches, theta)
    terms = {n: hessian_term(t, product[n]) for n, t in theta.items()}
    if variant == "oba_code":
        return ChannelTerms(terms, "layer_abs_mean", normalize, eps=OBA_CODE_EPS)
    return ChannelTerms(terms, "layer_abs", normalize)


def _without_norm_layers(model, theta: dict[str, Tensor]) -> dict[str, Tensor]:
    """`theta` with the parameters of every normalization layer set to zero."""
    norm = {
        f"{name}.{p}" if name else p
        for name, m in model.named_modules()
        if isinstance(m, _NORM_LAYERS)
        for p, _ in m.named_parameters(recurse=False)
    }
    return {n: torch.zeros_like(t) if n in norm else t for n, t in theta.items()}


def oba_full_channel(model, batches, loss_fn, *, normalize: Normalizer = "max") -> ChannelTerms:
    """`oba_channel` with the full Hessian: θ ⊙ (Hθ) (the OBA repository's fastOBA, order 2)."""
    theta = _theta(model)
    product = hessian_vector_product(model, loss_fn, batches, theta)
    return ChannelTerms(
        {n: hessian_term(t, product[n]) for n, t in theta.items()}, "layer_abs", normalize
    )


def taylor_channel(
    model,
    batches,
    loss_fn,
    *,
    normalize: Normalizer | None = None,
    variant: ChannelVariant = "original",
) -> ChannelTerms:
    """First-order Taylor: |Σ θ ⊙ g| over all of a channel's weights (Molchanov et al. 2019).

    ``variant="oba_code"``: the OBA paper's Taylor baseline, Torch-Pruning's
    ``TaylorImportance(multivariable=True, normalizer="max")``: Σ over the group's layers of
    |Σ over the layer's slice of θ ⊙ g| with biases and β left out, ÷ the group's max.
    ``normalize`` defaults to the variant's ("none", or "max" for "oba_code").
    """
    normalize = _variant_normalize(variant) if normalize is None else normalize
    theta = _theta(model)
    g = loss_gradient(model, loss_fn, batches)
    terms = {n: first_order(t, g[n]) for n, t in theta.items()}
    if variant == "oba_code":
        return ChannelTerms(_without_biases(terms), "layer_abs", normalize)
    return ChannelTerms(terms, "abs", normalize)


def l1_channel(
    model,
    batches,
    loss_fn,
    *,
    normalize: Normalizer | None = None,
    variant: ChannelVariant = "original",
) -> ChannelTerms:
    """Σ |θ| over all of a channel's weights (the group L1 norm); data-free.

    ``variant="oba_code"``: the OBA paper's Weight baseline, Torch-Pruning's
    ``MagnitudeImportance(p=1, normalizer="max")``: the same sum without biases and β, ÷ the
    group's max (Torch-Pruning averages over the group's layers where this sums; the max
    normalization cancels the difference). ``normalize`` defaults to the variant's ("none",
    or "max" for "oba_code").
    """
    normalize = _variant_normalize(variant) if normalize is None else normalize
    terms = {n: t.abs() for n, t in _theta(model).items()}
    return ChannelTerms(
        _without_biases(terms) if variant == "oba_code" else terms, "sum", normalize
    )


def _without_biases(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """`terms` with each bias's (BatchNorm/LayerNorm β too) set to 0.

    Torch-Pruning's importances leave biases out by default (``bias=False``).
    """
    return {n: torch.zeros_like(t) if n.endswith("bias") else t for n, t in terms.items()}


def _variant_normalize(variant: str) -> str:
    return "max" if variant == "oba_code" else "none"


def fisher_channel(
    model,
    batches,
    loss_fn,
    *,
    fisher_batch_size: int = 1,
    chunk_size: int | None = None,
    max_memory: int | str | None = None,
    normalize: Normalizer = "none",
) -> ChannelTerms:
    """Σ ½ θ² ⊙ F over a channel's weights (OBD with the empirical Fisher diagonal)."""
    theta = _theta(model)
    f = empirical_fisher_diag(
        model,
        loss_fn,
        batches,
        fisher_batch_size=fisher_batch_size,
        chunk_size=chunk_size,
        max_memory=max_memory,
    )
    return ChannelTerms({n: obd(t, f[n]) for n, t in theta.items()}, "sum", normalize)


def fts_channel(
    model,
    batches,
    loss_fn,
    *,
    fisher_batch_size: int = 1,
    chunk_size: int | None = None,
    max_memory: int | str | None = None,
    normalize: Normalizer = "none",
) -> ChannelTerms:
    """Σ |θ ⊙ g + ½ θ² ⊙ F| over a channel's weights (FTS per-weight scores, summed)."""
    theta = _theta(model)
    g = loss_gradient(model, loss_fn, batches)
    f = empirical_fisher_diag(
        model,
        loss_fn,
        batches,
        fisher_batch_size=fisher_batch_size,
        chunk_size=chunk_size,
        max_memory=max_memory,
    )
    terms = {n: taylor_sensitivity(t, g[n], f[n]) for n, t in theta.items()}
    return ChannelTerms(terms, "sum", normalize)


def hts_channel(
    model,
    batches,
    loss_fn,
    *,
    num_probes: int = 10,
    seed: int = 0,
    temperature: float = DEFAULT_TEMPERATURE,
    normalize: Normalizer = "none",
) -> ChannelTerms:
    """Σ |θ ⊙ g + ½ θ² ⊙ D| over a channel's weights, D the Hutchinson Hessian diagonal.

    g and D are of the loss of logits / T, T = 200 by default as in the HTS code.
    """
    theta = _theta(model)
    loss_fn = with_temperature(loss_fn, temperature)
    d, g = _hutchinson(
        model, loss_fn, batches, num_probes=num_probes, seed=seed, with_gradient=True
    )
    terms = {n: taylor_sensitivity(t, g[n], d[n]) for n, t in theta.items()}
    return ChannelTerms(terms, "sum", normalize)


def random_channel(model, batches, loss_fn, *, seed: int = 0) -> ChannelTerms:
    """Uniform random channel scores in [0, 1), reproducible from `seed` and the layer names."""
    return ChannelTerms(None, "random", "none", int(seed))


__all__ = [
    "REDUCTIONS",
    "ChannelVariant",
    "ChannelTerms",
    "Normalizer",
    "fisher_channel",
    "fts_channel",
    "hts_channel",
    "l1_channel",
    "oba_channel",
    "oba_full_channel",
    "random_channel",
    "taylor_channel",
]
