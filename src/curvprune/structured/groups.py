"""Torch-Pruning glue: channel scores per dependency group, layer floors, tracing.

Torch-Pruning finds the *groups* (every layer slice coupled to one channel) and does the tensor
surgery; curvprune supplies the *importance*. `ChannelImportance` reads one step's per-weight
terms (`curvprune.criteria.channel.ChannelTerms`, computed once per step) and sums them
over each dependency's slice, using the dependency's layer, direction and index mapping.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Iterator

import torch
import torch_pruning as tp
from torch import Tensor, nn

from curvprune._core.state import modes_kept
from curvprune.criteria.channel import ChannelTerms
from curvprune.errors import InvalidArgument

_CONV = nn.modules.conv._ConvNd
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)

#: Layer types whose channel slices `ChannelImportance` knows; any other layer with trainable
#: parameters inside a group is an error (pass it in ``ignored_layers``).
KNOWN_LAYERS = (_CONV, nn.Linear, *_NORMS, nn.LayerNorm, nn.PReLU, nn.Embedding)


def _is_out(dep) -> bool:
    # Torch-Pruning's pruning functions are bound `prune_out_channels` / `prune_in_channels`
    # methods of per-type pruners; for BatchNorm and depthwise convolutions in == out.
    return dep.handler.__name__ == "prune_out_channels"


def _depthwise(conv: nn.Module) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _along(t: Tensor, dim: int) -> Tensor:
    """Sum of `t` over every dimension but `dim`: a vector indexed by `dim`."""
    dim %= t.dim()
    return t.movedim(dim, 0).reshape(t.shape[dim], -1).sum(1)


def _grouped_conv_inputs(t: Tensor, conv: nn.Module) -> Tensor:
    """Per input channel sums of a grouped convolution's weight-shaped term.

    Input channel i = g·(C_in/G) + j reads weight[g·(C_out/G):(g+1)·(C_out/G), j].
    """
    per = t.reshape(t.shape[0], t.shape[1], -1).sum(2)  # (C_out, C_in/G)
    g = conv.groups
    return per.reshape(g, per.shape[0] // g, per.shape[1]).sum(1).reshape(-1)


def channel_vector(module: nn.Module, is_out: bool, terms: dict[str, Tensor], prefix: str):
    """Σ of the module's terms per channel index along the pruned dimension, or None.

    Args:
        module: a layer in a dependency group.
        is_out: the group removes its output channels (else its input channels).
        terms: per-weight terms by parameter name.
        prefix: the module's name plus ``"."`` (``""`` for the root module).

    Returns:
        A float64 vector with one entry per channel of the pruned dimension, or None if the
        module has no trainable parameter with a term.

    Raises:
        InvalidArgument: a parameterized layer of a type without a slicing rule.
    """
    own = {n: terms[prefix + n] for n, _ in module.named_parameters(recurse=False)}
    own = {n: t for n, t in own.items() if t is not None}
    if not own:
        return None
    if isinstance(module, _CONV):
        if module.transposed and module.groups > 1:
            raise InvalidArgument(
                f"grouped transposed convolution {prefix[:-1]!r} is not supported; "
                "pass it in ignored_layers"
            )
        w_out, w_in = (1, 0) if module.transposed else (0, 1)
        if is_out or _depthwise(module):
            parts = [_along(own["weight"], w_out)] if "weight" in own else []
            parts += [own["bias"]] if "bias" in own else []
        elif module.groups > 1:
            parts = [_grouped_conv_inputs(own["weight"], module)] if "weight" in own else []
        else:
            parts = [_along(own["weight"], w_in)] if "weight" in own else []
    elif isinstance(module, nn.Linear):
        if is_out:
            parts = [_along(own["weight"], 0)] if "weight" in own else []
            parts += [own["bias"]] if "bias" in own else []
        else:
            parts = [_along(own["weight"], 1)] if "weight" in own else []
    elif isinstance(module, (*_NORMS, nn.PReLU)):
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return None  # one shared slope: nothing goes with a channel
        parts = [t.reshape(-1) for t in own.values()]
    elif isinstance(module, nn.LayerNorm):
        parts = [_along(t, -1) for t in own.values()]  # Torch-Pruning prunes the last dim
    elif isinstance(module, nn.Embedding):
        parts = [_along(own["weight"], 1)]
    else:
        raise InvalidArgument(
            f"no channel rule for layer {prefix[:-1]!r} ({type(module).__name__}) in a pruning "
            f"group; known layer types: Conv, Linear, BatchNorm, GroupNorm, InstanceNorm, "
            "LayerNorm, PReLU, Embedding. Pass it in ignored_layers"
        )
    if not parts:
        return None
    return sum(p.double() for p in parts)


class ChannelImportance(tp.importance.Importance):
    """Per-channel scores of a Torch-Pruning group from one step's `ChannelTerms`.

    For each dependency (a layer, a direction and an index mapping) the layer's terms are
    summed per channel of the pruned dimension and added at the group's root channels; then the
    criterion's reduction and normalization apply (see `curvprune.criteria.channel`).

    Call `set_terms` before every pruning step: Torch-Pruning replaces parameter tensors when it
    prunes, so names are looked up again.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.terms: ChannelTerms | None = None
        self._module_names: dict[nn.Module, str] = {}
        self._param_names: dict[int, str] = {}

    def set_terms(self, terms: ChannelTerms) -> None:
        """Use `terms` for the groups of the next pruning step."""
        self.terms = terms
        self._module_names = {m: n for n, m in self.model.named_modules()}
        self._param_names = {id(p): n for n, p in self.model.named_parameters()}

    def group_name(self, group) -> str:
        """The group's first layer, in module order, whose output channels it removes.

        Independent of where Torch-Pruning's traversal starts, so it keys results, layer floors
        and random seeds the same way every time (attention groups: their ``qkv``).
        """
        if not self._module_names:
            self._module_names = {m: n for n, m in self.model.named_modules()}
        order = {m: i for i, m in enumerate(self._module_names)}
        outs = [
            item.dep.target.module
            for item in group
            if _is_out(item.dep) and item.dep.target.module in order
        ]
        if not outs:
            return self._module_names.get(group[0].dep.target.module, "?")
        return self._module_names[min(outs, key=order.__getitem__)]

    def _vector(self, dep) -> Tensor | None:
        target = dep.target
        per_weight = self.terms.per_weight
        if target.type == tp.ops.OPTYPE.PARAMETER:  # an nn.Parameter outside known layers
            name = self._param_names.get(id(target.module))
            term = per_weight.get(name)
            return None if term is None else _along(term, target.pruning_dim).double()
        module = target.module
        if not isinstance(module, nn.Module):
            return None
        name = self._module_names.get(module)
        if name is None:
            return None
        prefix = f"{name}." if name else ""
        terms = {
            prefix + n: per_weight.get(prefix + n)
            for n, _ in module.named_parameters(recurse=False)
        }
        return channel_vector(module, _is_out(dep), terms, prefix)

    @torch.no_grad()
    def __call__(self, group) -> Tensor | None:
        """One score per channel of `group` (Torch-Pruning's importance protocol)."""
        if self.terms is None:
            raise RuntimeError("ChannelImportance.set_terms was not called before pruning")
        n = len(group[0].idxs)
        if self.terms.reduction == "random":
            name = self.group_name(group).encode()
            seed = (self.terms.seed * 1_000_003 + zlib.crc32(name)) % 2**63
            gen = torch.Generator().manual_seed(seed)
            return torch.rand(n, generator=gen, dtype=torch.float64)
        total = torch.zeros(n, dtype=torch.float64)
        found = False
        layers = 0  # layers with a non-zero slice, for "layer_abs_mean"
        for item in group:
            vec = self._vector(item.dep)
            if vec is None:
                continue
            pairs = [(i, r) for i, r in zip(item.idxs, item.root_idxs) if r is not None]
            if not pairs:
                continue
            idx, root = (torch.tensor(v, dtype=torch.long) for v in zip(*pairs))
            local = torch.zeros(n, dtype=torch.float64).index_add_(0, root, vec[idx].cpu())
            total += local.abs() if self.terms.reduction.startswith("layer_abs") else local
            layers += bool((local != 0).any())
            found = True
        if not found:
            return None
        if self.terms.reduction == "abs":
            total = total.abs()
        if self.terms.reduction == "layer_abs_mean" and layers:
            total = total / layers
        return _normalize(total, self.terms.normalize, self.terms.eps)


def _normalize(scores: Tensor, how: str, eps: float = 0.0) -> Tensor:
    if how == "none":
        return scores
    denom = {"max": scores.max, "mean": scores.mean, "sum": scores.sum}[how]() + eps
    return scores / denom if denom > 0 else scores


class LayerFloors:
    """Keep at least ``ceil((1 - max_layer_sparsity) · dense width)`` of every group.

    Torch-Pruning's global ranking caps nothing within one step, so the floor is enforced by
    giving the group's best channels (or, for attention, best heads) an infinite score. Dense
    widths are recorded, by group name, the first time a group is scored, so they hold across
    iterative steps and across the copies that a MACs search prunes.
    """

    def __init__(self, max_layer_sparsity: float) -> None:
        self.max_layer_sparsity = max_layer_sparsity
        self.dense: dict[str, int] = {}

    def _keep(self, key: str, width: int) -> int:
        dense = self.dense.setdefault(key, width)
        return min(width, max(1, math.ceil(round((1 - self.max_layer_sparsity) * dense, 9))))

    def protect(self, pruner, group, imp: Tensor, key: str) -> Tensor:
        """`imp` with the channels each layer must keep (its floor) raised to +inf."""
        imp = imp.clone()
        is_attn, qkv_layers = pruner._is_atten_group(group)
        if is_attn and pruner.prune_num_heads:
            heads = max(pruner.num_heads[q] for q in qkv_layers)
            per_head = imp.view(heads, -1)
            keep = self._keep(key + ":heads", heads)
            per_head[per_head.mean(1).topk(keep).indices] = math.inf
            return imp
        ch_groups = pruner._get_channel_groups(group)
        per = imp.view(ch_groups, -1)
        keep = self._keep(key, per.shape[1])
        per[:, per.mean(0).topk(keep).indices] = math.inf
        return imp


class CurvPruner(tp.pruner.BasePruner):
    """`BasePruner` whose importances respect `LayerFloors`."""

    def __init__(self, *args, floors: LayerFloors, **kwargs) -> None:
        self.floors = floors
        super().__init__(*args, **kwargs)

    def estimate_importance(self, group) -> Tensor | None:
        """The group's channel scores, with the layer floors protected."""
        imp = self.importance(group)
        if imp is None:
            return None
        return self.floors.protect(self, group, imp, self.importance.group_name(group))

    def clamp_next_step(self) -> tuple[float, float]:
        """Lower the next step's channel and head ratios to what the floors allow.

        Torch-Pruning removes every channel scored at or below the k-th smallest score; if k
        reached the protected (infinite) scores, whole groups would be selected and then
        skipped. Scoring every group once more (cheap: the criterion's terms are already
        computed) counts the protected channels and heads, and the ratios are capped so that
        ``int(initial · (1 − ratio))`` keeps at least that many.

        Returns:
            The (channel, head) ratios the next step will use.
        """
        step = self.current_step + 1
        protected = total = protected_heads = 0
        local_cap = head_cap = 1.0
        for group in self.DG.get_all_groups(
            ignored_layers=self.ignored_layers, root_module_types=self.root_module_types
        ):
            if not self._check_pruning_ratio(group):
                continue
            is_attn, qkv_layers = self._is_atten_group(group)
            if is_attn:
                group = self._downstream_node_as_root_if_attention(group)
                if group is None:
                    continue
            imp = self.estimate_importance(group)
            if imp is None:
                continue
            if is_attn:
                heads = max(self.num_heads[q] for q in qkv_layers)
                kept = int(torch.isinf(imp.view(heads, -1).mean(1)).sum())
                protected_heads += kept
                head_cap = min(head_cap, (heads - kept) / heads)
                continue
            per = imp.view(self._get_channel_groups(group), -1).mean(0)
            kept, width = int(torch.isinf(per).sum()), per.numel()
            protected, total = protected + kept, total + width
            root = self.DG._module2name[group[0].dep.target.module]
            initial = self._scope_initial_channels.get(root, width)
            local_cap = min(local_cap, 1 - (kept + 0.5) / initial)
        if self.global_pruning:
            initial = self._scope_initial_channels.get("DEFAULT_SCOPE", total)
            cap = 1 - (protected + 0.5) / initial if initial else 0.0
            if self.initial_total_heads:
                head_cap = 1 - (protected_heads + 0.5) / self.initial_total_heads
        else:
            cap = local_cap
        self.per_step_pruning_ratio[step] = max(0.0, min(self.per_step_pruning_ratio[step], cap))
        self.per_step_head_pruning_ratio[step] = max(
            0.0, min(self.per_step_head_pruning_ratio[step], head_cap)
        )
        for ratios in self.pruning_ratio_dict.values():  # attention groups: heads only
            ratios[step] = self.per_step_head_pruning_ratio[step]
        return self.per_step_pruning_ratio[step], self.per_step_head_pruning_ratio[step]


def output_layers(graph) -> list[nn.Module]:
    """Layers whose output channels reach the model's output (pruning them changes its shape).

    Walks back from the graph's sinks through parameter-free operations to the first layer with
    parameters on each path.
    """
    found: list[nn.Module] = []
    stack = [node for node in graph.module2node.values() if not node.outputs]
    seen = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        module = node.module
        if isinstance(module, nn.Module) and any(True for _ in module.parameters(recurse=False)):
            found.append(module)
            continue
        stack.extend(node.inputs)
    return found


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """timm-style attention: an ``nn.Linear`` ``qkv``, int ``num_heads`` and ``head_dim``."""
    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "qkv", None), nn.Linear)
        and isinstance(getattr(m, "num_heads", None), int)
        and isinstance(getattr(m, "head_dim", None), int)
    ]


def update_heads(model: nn.Module) -> None:
    """Set ``num_heads`` from the pruned ``qkv`` width (whole heads removed, head_dim kept)."""
    for attn in attention_modules(model):
        heads, rest = divmod(attn.qkv.out_features, 3 * attn.head_dim)
        if rest:
            raise RuntimeError(
                f"attention qkv width {attn.qkv.out_features} is not 3 x heads x "
                f"{attn.head_dim} after pruning"
            )
        attn.num_heads = heads


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[None]:
    """Trace under autograd and restore train/eval flags afterwards.

    Tracing puts the model in eval mode; the flags come back. Attention must split q/k/v with
    ``unbind`` (as timm and curvprune's ViT do): Torch-Pruning maps heads through it, while
    ``qkv[0]`` indexing looks element-wise to it.
    """
    with modes_kept(model), torch.enable_grad():  # tracing follows autograd, even in no_grad
        yield


__all__ = [
    "KNOWN_LAYERS",
    "ChannelImportance",
    "CurvPruner",
    "LayerFloors",
    "attention_modules",
    "channel_vector",
    "output_layers",
    "traceable",
    "update_heads",
]
