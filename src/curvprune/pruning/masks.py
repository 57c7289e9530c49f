"""Mask selection (global or layer-wise thresholds) and masks applied with torch.nn.utils.prune.

Selection prunes exactly round(sparsity·n) weights, n counting every prunable weight
(``scope="global"``: one threshold across tensors) or each tensor's own
(``scope="layerwise"``). Weights already pruned stay pruned and count towards the total; ties
are broken by position (earlier tensors, then earlier entries, go first), so the same scores
always give the same masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from curvprune._core.params import PrunableWeight, default_prunable_types, prunable_weights
from curvprune.errors import InvalidArgument

SCOPES = ("global", "layerwise")


def check_sparsity(sparsity: object, what: str = "sparsity") -> float:
    """`sparsity` as a float in [0, 1), or an error naming it."""
    ok = isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool)
    if not ok or not (0.0 <= sparsity < 1.0):  # NaN fails both comparisons
        raise InvalidArgument(f"{what} must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def check_scope(scope: object) -> str:
    """`scope` if it is one of `SCOPES`; else an error listing them."""
    if scope not in SCOPES:
        raise InvalidArgument(f"unknown scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
    return scope


def check_min_density(min_density: object) -> float:
    """`min_density` as a float in [0, 1] (None: 0); else an error."""
    if min_density is None:
        return 0.0
    ok = isinstance(min_density, (int, float)) and not isinstance(min_density, bool)
    if not ok or not (0.0 <= min_density <= 1.0):
        raise InvalidArgument(f"min_density must be a number in [0, 1], got {min_density!r}")
    return float(min_density)


def _prune_lowest(flat: Tensor, k: int) -> Tensor:
    """Bool keep-vector with the k lowest entries (stable: earlier first on ties) set False."""
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    return keep


def _prepared(
    scores: Mapping[str, Tensor], existing: Mapping[str, Tensor | None], min_density: float
) -> tuple[dict[str, Tensor], int]:
    """Scores as float64 with pruned = −inf and each tensor's protected top = +inf."""
    out, protected = {}, 0
    for name, s in scores.items():
        flat = s.detach().reshape(-1).to(torch.float64).cpu().clone()
        mask = existing.get(name)
        if mask is not None:
            flat[~mask.reshape(-1).cpu()] = -math.inf
        if min_density > 0:
            alive = int(torch.isfinite(flat).sum())
            need = min(alive, math.ceil(min_density * flat.numel() - 1e-9))
            if need:
                top = torch.argsort(flat, stable=True, descending=True)[:need]
                flat[top] = math.inf
                protected += need
        out[name] = flat
    return out, protected


def select_masks(
    scores: Mapping[str, Tensor],
    *,
    sparsity: float,
    scope: str = "global",
    min_density: float | None = None,
    existing: Mapping[str, Tensor | None] | None = None,
) -> dict[str, Tensor]:
    """Bool keep-masks (True = keep) that prune exactly round(sparsity·n) weights.

    Args:
        scores: per-tensor scores, higher = keep.
        sparsity: fraction to prune, in [0, 1).
        scope: "global" (one threshold) or "layerwise" (each tensor to `sparsity`).
        min_density: every tensor keeps at least ceil(min_density·numel) weights.
        existing: current masks; their pruned weights stay pruned.

    Example:
        >>> import torch
        >>> scores = {"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([0.5, 4.0])}
        >>> masks = select_masks(scores, sparsity=0.4)  # round(0.4 * 5) = 2 weights go
        >>> masks["a"].tolist(), masks["b"].tolist()
        ([True, False, True], [False, True])
        >>> select_masks(scores, sparsity=0.5, scope="layerwise")["a"].tolist()
        [True, False, False]
    """
    return keep_masks(
        scores, check_sparsity(sparsity), check_scope(scope), check_min_density(min_density),
        existing or {},
    )  # fmt: skip


def keep_masks(
    scores: Mapping[str, Tensor],
    sparsity: float,
    scope: str,
    min_density: float,
    existing: Mapping[str, Tensor | None],
) -> dict[str, Tensor]:
    """`select_masks` for arguments already checked (`prune` checks them once, up front)."""
    flat, _ = _prepared(scores, existing, min_density)
    shapes = {n: s.shape for n, s in scores.items()}

    def pick(names: list[str], k: int) -> dict[str, Tensor]:
        vec = torch.cat([flat[n] for n in names])
        already = int(torch.isneginf(vec).sum())
        prunable = int((~torch.isposinf(vec)).sum())
        label = "the model" if len(names) > 1 else f"tensor {names[0]!r}"
        if k < already:
            raise InvalidArgument(
                f"sparsity {sparsity} prunes {k} weights of {label}, but {already} are pruned "
                "already; masks only grow (use torch.nn.utils.prune.remove to start over)"
            )
        if k > prunable:
            raise InvalidArgument(
                f"sparsity {sparsity} needs {k} of {vec.numel()} weights of {label} pruned, but "
                f"min_density={min_density} leaves only {prunable} prunable"
            )
        keep = _prune_lowest(vec, k)
        out, i = {}, 0
        for n in names:
            size = flat[n].numel()
            out[n] = keep[i : i + size].reshape(shapes[n]).to(scores[n].device)
            i += size
        return out

    names = list(scores)
    if scope == "global":
        total = sum(flat[n].numel() for n in names)
        return pick(names, int(round(sparsity * total)))
    masks = {}
    for n in names:
        masks.update(pick([n], int(round(sparsity * flat[n].numel()))))
    return masks


def apply_masks(weights: Mapping[str, PrunableWeight], masks: Mapping[str, Tensor]) -> None:
    """Apply keep-masks with `torch.nn.utils.prune.custom_from_mask` (combined with old masks)."""
    for name, mask in masks.items():
        w = weights[name]
        torch_prune.custom_from_mask(w.module, w.attr, mask)


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity over prunable weights.

    Attributes:
        sparsity: pruned fraction of all prunable weights.
        layer_density: kept fraction per tensor.
        collapsed: tensors with no weight left.
    """

    sparsity: float
    layer_density: dict[str, float]
    collapsed: list[str]

    def __iter__(self):  # unpack as (sparsity, layer_density, collapsed)
        return iter((self.sparsity, self.layer_density, self.collapsed))


def sparsity_report(model: nn.Module, prunable=None) -> SparsityReport:
    """Sparsity of a model pruned with torch.nn.utils.prune.

    Counts the weights that `prunable` selects (default: the weight of every Linear and
    Conv1d/2d/3d) plus every tensor that carries a pruning mask.
    """
    if prunable is None:

        def prunable(name: str, module: nn.Module) -> bool:
            attr = name.rpartition(".")[2]
            default = attr == "weight" and isinstance(module, default_prunable_types())
            return default or hasattr(module, attr + "_mask")

    weights = prunable_weights(model, prunable)
    density, kept, total = {}, 0, 0
    for name, w in weights.items():
        mask = w.mask()
        n = w.value().numel()
        k = n if mask is None else int(mask.sum())
        density[name] = k / n
        kept += k
        total += n
    collapsed = [n for n, d in density.items() if d == 0]
    return SparsityReport(1 - kept / total, density, collapsed)


def make_permanent(model: nn.Module) -> list[str]:
    """Fold every `torch.nn.utils.prune` mask into its weight (``prune.remove``), in place.

    The pruned weights stay zero but become ordinary parameters, as structured pruning and
    export need. Returns the names of the tensors that were masked.
    """
    done = []
    for mod_name, module in model.named_modules():
        hooks = [
            h
            for h in module._forward_pre_hooks.values()
            if isinstance(h, torch_prune.BasePruningMethod)
        ]
        for hook in hooks:
            torch_prune.remove(module, hook._tensor_name)
            done.append(f"{mod_name}.{hook._tensor_name}" if mod_name else hook._tensor_name)
    return done
