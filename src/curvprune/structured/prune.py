"""`prune_channels` and `prune_to_macs`: physically smaller models from channel scores.

Both validate everything first, then work on a deep copy, so the caller's model is never
changed, even when Torch-Pruning fails halfway; the pruned copy is returned.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from curvprune._core.batches import reiterable
from curvprune._core.checks import positive_int
from curvprune._core.state import modes_kept, preserved, scoring_mode
from curvprune.criteria import registry
from curvprune.criteria.channel import ChannelTerms
from curvprune.curvature.gradient import LossFn, default_loss
from curvprune.errors import InvalidArgument, InvalidType
from curvprune.pruning.masks import check_sparsity
from curvprune.structured.groups import (
    KNOWN_LAYERS,
    ChannelImportance,
    CurvPruner,
    LayerFloors,
    attention_modules,
    output_layers,
    traceable,
    update_heads,
)
from curvprune.structured.measure import as_inputs, count_params_and_macs


@dataclass
class _Plan:
    """Validated arguments shared by every step."""

    criterion: registry.Criterion
    options: dict
    batches: Iterable | None
    loss_fn: LossFn
    example_inputs: tuple[Tensor, ...]
    ignored: list[str]
    global_pruning: bool
    max_layer_sparsity: float
    round_to: int | None
    output_shapes: list[tuple[int, ...]]
    mode: str = "eval"


def _fraction(name: str, value: object, *, low_open: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not ((0 < value <= 1) if low_open else (0 <= value <= 1)):
        raise InvalidArgument(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def _module_names(model: nn.Module, layers: object) -> list[str]:
    if layers is None:
        return []
    if isinstance(layers, (str, nn.Module)) or not isinstance(layers, Iterable):
        raise InvalidType("ignored_layers must be a list of modules or module names")
    by_module = {m: n for n, m in model.named_modules()}
    names = dict(model.named_modules())
    out = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Module):
            if layer not in by_module:
                raise InvalidArgument(
                    f"ignored_layers[{i}] ({type(layer).__name__}) is not part of the model"
                )
            out.append(by_module[layer])
        elif isinstance(layer, str):
            if layer not in names:
                close = [n for n in names if n and n.endswith(layer.rsplit(".", 1)[-1])][:5]
                hint = f"; similar: {', '.join(close)}" if close else ""
                raise InvalidArgument(f"ignored_layers names unknown module {layer!r}{hint}")
            out.append(layer)
        else:
            raise InvalidType(
                f"ignored_layers[{i}] must be a module or a module name, got {type(layer).__name__}"
            )
    return out


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InvalidType(f"model must be a torch.nn.Module, got {type(model).__name__}")
    masked = [n for n, _ in model.named_buffers() if n.endswith("_mask")]
    if masked:
        raise InvalidArgument(
            f"the model carries torch.nn.utils.prune masks ({masked[0]}); structured pruning "
            "needs plain weights: call curvprune.pruning.masks.make_permanent(model) first"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise InvalidArgument("the model has no trainable parameters to prune")
    return model


def _flat_shapes(output) -> list[tuple[int, ...]]:
    if isinstance(output, Tensor):
        return [tuple(output.shape)]
    if isinstance(output, (tuple, list)):
        return [s for o in output for s in _flat_shapes(o)]
    if isinstance(output, dict):
        return [s for o in output.values() for s in _flat_shapes(o)]
    return []


def _run(model: nn.Module, inputs: tuple[Tensor, ...], what: str, hint: str = ""):
    """``model(*inputs)`` under no_grad; an error names the innermost layer that failed."""
    names = {m: n for n, m in model.named_modules()}
    stack: list[nn.Module] = []
    executed: set[nn.Module] = set()

    def enter(module, args):
        stack.append(module)
        executed.add(module)

    def leave(module, args, output):
        stack.pop()

    handles = [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        with modes_kept(model, eval=True), torch.no_grad():
            out = model(*inputs)
    except Exception as err:
        where = (
            f" at layer {names.get(stack[-1], '?') or '(the model itself)'!r} "
            f"({type(stack[-1]).__name__})"
            if stack
            else ""
        )
        raise InvalidArgument(f"{what} fails{where}: {err}{hint}") from err
    finally:
        for h in handles:
            h.remove()
    return out, executed


def _plan(
    model,
    criterion,
    batches,
    *,
    example_inputs,
    loss_fn,
    ignored_layers,
    global_pruning,
    max_layer_sparsity,
    round_to,
    options,
    mode=None,
) -> _Plan:
    crit = registry.get_criterion(criterion, structured=True)
    registry.check_options(crit, options, structured=True)
    mode = crit.mode_for(options, mode)
    _check_model(model)
    if not isinstance(global_pruning, bool):
        raise InvalidType(f"global_pruning must be True or False, got {global_pruning!r}")
    max_layer_sparsity = _fraction("max_layer_sparsity", max_layer_sparsity, low_open=True)
    if round_to is not None:
        round_to = positive_int("round_to", round_to)
    inputs = as_inputs(model, example_inputs)
    output, _ = _run(model, inputs, "model(*example_inputs)")
    if batches is None and not crit.data_free:
        raise InvalidArgument(
            f"criterion {crit.name!r} needs data: pass batches of (inputs, targets)"
        )
    return _Plan(
        criterion=crit,
        options=dict(options),
        batches=None if batches is None else reiterable(batches),
        loss_fn=default_loss(loss_fn),
        example_inputs=inputs,
        ignored=_module_names(model, ignored_layers),
        global_pruning=global_pruning,
        max_layer_sparsity=max_layer_sparsity,
        round_to=round_to,
        output_shapes=_flat_shapes(output),
        mode=mode,
    )


def _copy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as err:
        raise InvalidArgument(
            f"cannot deep-copy the model ({err}); prune_channels works on a copy so that the "
            "model passed in is never changed"
        ) from err


class _Session:
    """One model being pruned: its importance, its layer floors and its ignored layers."""

    def __init__(self, model: nn.Module, plan: _Plan, floors: LayerFloors, untouchable=None):
        self.model = model
        self.plan = plan
        self.floors = floors
        self.importance = ChannelImportance(model)
        #: names of layers never pruned: the user's, and those feeding the output
        self.untouchable = untouchable

    def terms(self) -> ChannelTerms:
        """The criterion on the current model (once per pruning step)."""
        crit, plan = self.plan.criterion, self.plan
        with preserved(self.model), scoring_mode(self.model, plan.mode):
            terms = crit.channel_score(self.model, plan.batches, plan.loss_fn, **plan.options)
        if terms.per_weight is not None:
            registry.check_finite(terms.per_weight, crit.name)
        return terms

    def trace(self) -> None:
        """Build the dependency graph once: fail on untraceable layers, find output layers."""
        with traceable(self.model), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            try:
                graph = tp_graph(self.model, self.plan.example_inputs)
            except Exception as err:
                raise InvalidArgument(f"Torch-Pruning cannot trace the model: {err}") from err
        names = {m: n for n, m in self.model.named_modules()}
        _, executed = _run(self.model, self.plan.example_inputs, "model(*example_inputs)")
        ignored = set(self.plan.ignored)
        lost = [
            names[m]
            for m in self.model.modules()
            if m in executed
            and isinstance(m, KNOWN_LAYERS)
            and any(p.requires_grad for p in m.parameters(recurse=False))
            and m not in graph.module2node
            and not any(names[m] == i or names[m].startswith(i + ".") for i in ignored)
        ]
        if lost:
            raise InvalidArgument(
                f"Torch-Pruning cannot trace layer {lost[0]!r}"
                + (f" (and {len(lost) - 1} more)" if len(lost) > 1 else "")
                + ": its output does not reach the model's output through autograd (a .detach(), "
                "torch.no_grad() or non-PyTorch operation in forward?); fix the forward or pass "
                "these layers in ignored_layers"
            )
        self.untouchable = sorted(set(self.plan.ignored) | {names[m] for m in output_layers(graph)})

    def pruner(self, ratio: float, steps: int) -> CurvPruner:
        modules = dict(self.model.named_modules())
        attn = attention_modules(self.model)
        num_heads = {a.qkv: a.num_heads for a in attn}
        plan = self.plan
        with traceable(self.model), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            return CurvPruner(
                self.model,
                plan.example_inputs,
                self.importance,
                floors=self.floors,
                global_pruning=plan.global_pruning,
                pruning_ratio=ratio,
                # own scope for attention groups: their dims go as whole heads, so they must
                # not take part in ranking the other channels
                pruning_ratio_dict={tuple(num_heads): ratio} if num_heads else None,
                max_pruning_ratio=plan.max_layer_sparsity,
                iterative_steps=steps,
                ignored_layers=[modules[n] for n in self.untouchable],
                round_to=plan.round_to,
                # fresh dicts: Torch-Pruning's defaults are shared mutable dicts that it fills
                # with this model's layers (and would keep alive across calls)
                in_channel_groups={},
                out_channel_groups={},
                num_heads=num_heads,
                prune_num_heads=bool(num_heads),
                prune_head_dims=not num_heads,
                head_pruning_ratio=ratio if num_heads else 0.0,
            )

    def step(self, pruner: CurvPruner, terms: ChannelTerms, *, warn: bool = True) -> None:
        trainable = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self.importance.set_terms(terms)
        wanted = pruner.per_step_pruning_ratio[pruner.current_step + 1]
        ratio, _ = pruner.clamp_next_step()
        if warn and ratio < wanted - 1e-9:
            warnings.warn(
                f"channel sparsity {wanted:.4g} lowered to {ratio:.4g} so that every layer keeps "
                f"the share that max_layer_sparsity={self.plan.max_layer_sparsity} demands",
                stacklevel=3,
            )
        pruner.step()
        update_heads(self.model)
        # Torch-Pruning rebuilds sliced parameters as new nn.Parameters (trainable)
        for n, p in self.model.named_parameters():
            p.requires_grad_(trainable.get(n, True))

    def trial(self, ratio: float, terms: ChannelTerms) -> tuple[_Session, int]:
        """Prune a copy by `ratio` of its current channels with `terms`; (copy, its MACs)."""
        other = _Session(_copy(self.model), self.plan, self.floors, self.untouchable)
        other.step(other.pruner(ratio, 1), terms, warn=False)
        return other, count_params_and_macs(other.model, self.plan.example_inputs)[1]

    def verify(self) -> None:
        out, _ = _run(
            self.model,
            self.plan.example_inputs,
            "after pruning, the model",
            hint=". Torch-Pruning could not trace the channel dependencies of this layer's input "
            "(a hard-coded shape?); pass the layers that produce its input in ignored_layers",
        )
        if _flat_shapes(out) != self.plan.output_shapes:
            raise InvalidArgument(
                f"pruning changed the output shape from {self.plan.output_shapes} to "
                f"{_flat_shapes(out)}; pass the output layer in ignored_layers"
            )


def tp_graph(model: nn.Module, inputs: tuple[Tensor, ...]):
    """Torch-Pruning's dependency graph of `model` (traced on `inputs`)."""
    import torch_pruning as tp

    return tp.DependencyGraph().build_dependency(model, example_inputs=inputs)


def prune_channels(
    model: nn.Module,
    criterion: str,
    batches: Iterable | None,
    *,
    sparsity: float,
    example_inputs,
    loss_fn: LossFn | None = None,
    ignored_layers: Sequence[nn.Module | str] | None = None,
    global_pruning: bool = True,
    max_layer_sparsity: float = 0.95,
    iterative_steps: int = 1,
    round_to: int | None = None,
    mode: str | None = None,
    **options,
) -> nn.Module:
    """Remove the least important channels and return a physically smaller copy of `model`.

    Torch-Pruning traces the model into dependency groups (a layer's output channels with the
    BatchNorm that follows, every layer that reads them, residual branches and concatenations
    that must lose the same channels) and removes the chosen channels from every tensor of the
    group. In timm-style attention (``qkv``, ``num_heads``, ``head_dim``) whole heads go, at
    the same fraction; ``num_heads`` is updated. Layers whose outputs reach the model's output
    (the classifier) keep all their outputs, so inputs and outputs keep their shapes.

    Each of `iterative_steps` steps computes the criterion once on the current model, scores
    every group from those terms and removes channels up to the step's share of `sparsity`
    (linear schedule), ranked globally across groups or within each group.

    Args:
        model: the network; never changed (a deep copy is pruned and returned).
        criterion: a structured criterion from `curvprune.CRITERIA` (``Criterion.structured``):
            oba, taylor, l1, fisher, fts, hts or random.
        batches: iterable of ``(inputs, targets)`` for the criterion (None for data-free ones).
        sparsity: fraction of channels removed, in [0, 1) (of the prunable groups' channels;
            of the heads for attention).
        example_inputs: a tensor (or tuple of tensors) the model accepts, for tracing.
        loss_fn: batch-mean loss; None for cross-entropy.
        ignored_layers: modules or module names whose output channels are never pruned.
        global_pruning: rank channels across all groups (True) or prune each group by
            `sparsity` (False).
        max_layer_sparsity: no group loses more than this fraction of its dense channels
            (heads, for attention); at least one always stays.
        iterative_steps: score → prune rounds.
        round_to: keep channel counts multiples of this (Torch-Pruning's ``round_to``).
        mode: "eval" or "train", the flags the copy is scored with (None: the criterion's,
            "eval" but for ``oba`` with ``variant="oba_code"``; see `curvprune.score`).
        **options: the criterion's options (``CRITERIA[name].channel_options``).

    Returns:
        The pruned copy, in the same train/eval mode as `model`.

    Raises:
        InvalidArgument: bad values, a criterion without channel scores, a missing
            `example_inputs`, or a layer that Torch-Pruning cannot trace (named).
    """
    sparsity = check_sparsity(sparsity)
    iterative_steps = positive_int("iterative_steps", iterative_steps)
    plan = _plan(
        model,
        criterion,
        batches,
        example_inputs=example_inputs,
        loss_fn=loss_fn,
        ignored_layers=ignored_layers,
        global_pruning=global_pruning,
        max_layer_sparsity=max_layer_sparsity,
        round_to=round_to,
        options=options,
        mode=mode,
    )
    if sparsity > plan.max_layer_sparsity:
        raise InvalidArgument(
            f"sparsity {sparsity} exceeds max_layer_sparsity {plan.max_layer_sparsity}"
        )
    session = _Session(_copy(model), plan, LayerFloors(plan.max_layer_sparsity))
    session.trace()
    if sparsity > 0:
        pruner = session.pruner(sparsity, iterative_steps)
        for _ in range(iterative_steps):
            session.step(pruner, session.terms())
    session.verify()
    return session.model


def prune_to_macs(
    model: nn.Module,
    criterion: str,
    batches: Iterable | None,
    *,
    macs_target: float,
    example_inputs,
    loss_fn: LossFn | None = None,
    ignored_layers: Sequence[nn.Module | str] | None = None,
    global_pruning: bool = True,
    max_layer_sparsity: float = 0.95,
    iterative_steps: int = 1,
    round_to: int | None = None,
    tolerance: float = 0.01,
    mode: str | None = None,
    **options,
) -> nn.Module:
    """Prune channels until at most `macs_target` of the dense MACs are left.

    Round t of `iterative_steps` computes the criterion once, then bisects the channel sparsity
    (of the current model) for the least pruning whose MACs are at most
    ``macs_target^(t/k)`` of the dense model's, pruning trial copies with that round's scores.
    A round stops searching once it lands within `tolerance` (relative) below its target.

    Args:
        macs_target: kept fraction of MACs, in (0, 1] (MACs as in `count_params_and_macs`).
        tolerance: relative slack below each round's target.
        Other arguments: as in `prune_channels`.

    Returns:
        The pruned copy of `model`.

    Raises:
        InvalidArgument: as `prune_channels`, or the target cannot be reached within
            `max_layer_sparsity`.
    """
    macs_target = _fraction("macs_target", macs_target, low_open=True)
    iterative_steps = positive_int("iterative_steps", iterative_steps)
    tolerance = _fraction("tolerance", tolerance, low_open=True)
    plan = _plan(
        model,
        criterion,
        batches,
        example_inputs=example_inputs,
        loss_fn=loss_fn,
        ignored_layers=ignored_layers,
        global_pruning=global_pruning,
        max_layer_sparsity=max_layer_sparsity,
        round_to=round_to,
        options=options,
        mode=mode,
    )
    floors = LayerFloors(plan.max_layer_sparsity)
    session = _Session(_copy(model), plan, floors)
    session.trace()
    _, dense = count_params_and_macs(session.model, plan.example_inputs)
    for t in range(1, iterative_steps + 1):
        target = dense * macs_target ** (t / iterative_steps)
        if count_params_and_macs(session.model, plan.example_inputs)[1] <= target:
            continue
        terms = session.terms()
        lo, hi = 0.0, plan.max_layer_sparsity
        best, macs = session.trial(hi, terms)
        if macs > target:
            raise InvalidArgument(
                f"cannot reach macs_target {macs_target}: pruning as far as max_layer_sparsity="
                f"{plan.max_layer_sparsity} allows keeps {macs / dense:.3f} of the MACs"
            )
        while hi - lo > 1e-4 and macs < target * (1 - tolerance):
            mid = (lo + hi) / 2
            s, m = session.trial(mid, terms)
            if m <= target:
                hi, best, macs = mid, s, m
            else:
                lo = mid
        session = best
    session.verify()
    return session.model


def channel_scores(
    model: nn.Module,
    criterion: str,
    batches: Iterable | None,
    *,
    example_inputs,
    loss_fn: LossFn | None = None,
    ignored_layers: Sequence[nn.Module | str] | None = None,
    mode: str | None = None,
    **options,
) -> dict[str, Tensor]:
    """Each prunable group's channel scores (higher = keep), keyed by the group's name.

    The scores `prune_channels` ranks, before layer floors. A group is named after its first
    layer (in ``named_modules()`` order) whose output channels it removes, and holds one score
    per channel of that layer; for attention, the group is named after ``qkv`` and holds one
    score per input channel of the output projection (heads × head_dim).

    Args: as in `prune_channels`. The model is not changed.
    """
    plan = _plan(
        model,
        criterion,
        batches,
        example_inputs=example_inputs,
        loss_fn=loss_fn,
        ignored_layers=ignored_layers,
        global_pruning=True,
        max_layer_sparsity=1.0,
        round_to=None,
        options=options,
        mode=mode,
    )
    session = _Session(_copy(model), plan, LayerFloors(1.0))
    session.trace()
    pruner = session.pruner(0.0, 1)
    session.importance.set_terms(session.terms())
    out = {}
    with traceable(session.model):
        for group in pruner.DG.get_all_groups(
            ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
        ):
            if pruner._is_atten_group(group)[0]:
                group = pruner._downstream_node_as_root_if_attention(group)
                if group is None:
                    continue
            imp = session.importance(group)
            if imp is not None:
                out[session.importance.group_name(group)] = imp
    return out


__all__ = ["channel_scores", "prune_channels", "prune_to_macs"]
