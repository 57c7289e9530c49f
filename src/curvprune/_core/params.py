"""Parameters by name: trainable parameters, prunable weights, and dict validation.

Everything per parameter is a ``dict[str, Tensor]`` keyed by ``model.named_parameters()``
names. A weight pruned with `torch.nn.utils.prune` is stored as the parameter
``<module>.weight_orig`` times the buffer ``<module>.weight_mask``; curvature estimators key it
by its parameter name (``...weight_orig``, gradients masked), while scores and masks key it by
the weight's own name (``...weight``), which stays the same before and after pruning.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from curvprune.errors import InvalidArgument, InvalidType

DEFAULT_PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def default_prunable_types() -> tuple[type, ...]:
    """`DEFAULT_PRUNABLE_TYPES`, plus transformers' ``Conv1D`` once transformers is loaded.

    Hugging Face GPT-2 computes its attention and MLP projections with
    ``transformers.pytorch_utils.Conv1D``, a linear layer whose weight is stored (in, out).
    It is looked up in ``sys.modules``, never imported: a model that has one has loaded it.
    """
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return DEFAULT_PRUNABLE_TYPES + ((conv1d,) if isinstance(conv1d, type) else ())


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``named_parameters()`` restricted to those with ``requires_grad``."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@dataclass(frozen=True)
class PrunableWeight:
    """A weight that can be pruned.

    Attributes:
        name: the weight's own name, e.g. ``"features.0.weight"`` (key of scores and masks).
        module: the module that owns it.
        attr: attribute name on the module, e.g. ``"weight"``.
        param_name: the trainable parameter behind it: `name`, or ``name + "_orig"`` when the
            module is pruned with `torch.nn.utils.prune`.
    """

    name: str
    module: nn.Module
    attr: str
    param_name: str

    @property
    def is_pruned(self) -> bool:
        return hasattr(self.module, self.attr + "_mask")

    def mask(self) -> Tensor | None:
        """The current bool mask, or None if not pruned yet."""
        m = getattr(self.module, self.attr + "_mask", None)
        return None if m is None else m.bool()

    def value(self) -> Tensor:
        """The effective weight θ (masked, if pruned), detached."""
        if self.is_pruned:
            return (
                getattr(self.module, self.attr + "_orig")
                * getattr(self.module, self.attr + "_mask")
            ).detach()
        return getattr(self.module, self.attr).detach()


def _all_weights(model: nn.Module) -> dict[str, PrunableWeight]:
    """Every parameter of every module as a candidate, keyed by its weight name.

    A parameter shared by several modules (tied embeddings, say a language model's output
    layer) is a candidate once, under its first name, as ``named_parameters()`` lists it.
    """
    out = {}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            attr = p_name[: -len("_orig")] if p_name.endswith("_orig") else p_name
            if p_name.endswith("_orig") and not hasattr(module, attr + "_mask"):
                attr = p_name
            prefix = f"{mod_name}." if mod_name else ""
            out[prefix + attr] = PrunableWeight(prefix + attr, module, attr, prefix + p_name)
    return out


Selector = Iterable[str] | Callable[[str, nn.Module], bool] | None


class Excluding:
    """A `prunable` selector: the default weights except those matching shell-style patterns.

    ``Excluding(["fc*", "conv1.weight"])`` keeps every Linear/Conv weight dense whose name
    matches a pattern (`fnmatch`, case-sensitive), as the PaI papers keep the classifier and
    WoodFisher's ResNet runs keep the first convolution. A pattern that matches no default
    prunable weight is an error, so that a typo cannot silently prune everything.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> list(prunable_weights(model, Excluding(["2.*"])))
        ['0.weight']
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        if isinstance(patterns, str):
            patterns = [patterns]
        self.patterns = tuple(patterns)
        if not self.patterns or not all(isinstance(p, str) and p for p in self.patterns):
            raise InvalidArgument(f"exclude needs non-empty patterns, got {self.patterns!r}")

    def __call__(self, name: str, module: nn.Module) -> bool:
        """Whether the weight `name` of `module` is pruned."""
        return _is_default(name, module) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.patterns
        )

    def check(self, candidates: Mapping[str, PrunableWeight]) -> None:
        """Raise if a pattern matches none of the default prunable weights."""
        names = [n for n, w in candidates.items() if _is_default(n, w.module)]
        for p in self.patterns:
            if not any(fnmatch.fnmatchcase(n, p) for n in names):
                raise InvalidArgument(
                    f"exclude pattern {p!r} matches no prunable weight; prunable: "
                    f"{', '.join(names)}"
                )

    def __repr__(self) -> str:
        return f"Excluding({list(self.patterns)!r})"


def _is_default(name: str, module: nn.Module) -> bool:
    return name.rsplit(".", 1)[-1] == "weight" and isinstance(module, default_prunable_types())


def prunable_weights(model: nn.Module, prunable: Selector = None) -> dict[str, PrunableWeight]:
    """The weights to prune, keyed by weight name, in ``named_parameters()`` order.

    Args:
        model: the network.
        prunable: None for the ``weight`` of every Linear and Conv1d/2d/3d (and transformers'
            Conv1D, see `default_prunable_types`); an iterable of
            weight names; or a predicate ``f(name, module) -> bool`` over every trainable
            parameter's weight name and owning module.

    Raises:
        InvalidArgument: unknown names, or nothing to prune.
    """
    candidates = _all_weights(model)
    if prunable is None:
        chosen = {n: w for n, w in candidates.items() if _is_default(n, w.module)}
    elif callable(prunable):
        if isinstance(prunable, Excluding):
            prunable.check(candidates)
        chosen = {n: w for n, w in candidates.items() if prunable(n, w.module)}
    elif isinstance(prunable, str):
        raise InvalidType(f"prunable must be a list of weight names, not the string {prunable!r}")
    else:
        names = list(prunable)
        unknown = [n for n in names if n not in candidates]
        if unknown:
            raise InvalidArgument(
                f"prunable names {unknown} are not trainable weights of the model; "
                f"valid names: {sorted(candidates)}"
            )
        chosen = {n: candidates[n] for n in candidates if n in set(names)}
    if not chosen:
        raise InvalidArgument(
            "the model has no prunable weights (by default: the weight of every Linear and "
            "Conv1d/2d/3d module); pass prunable=[names] or a predicate to choose others"
        )
    return chosen


def with_biases(model: nn.Module, weights: Mapping[str, PrunableWeight]) -> dict:
    """`weights` and, after each weight, its module's trainable ``bias``.

    OBA's code prunes the biases of every layer it scores, under its weights' threshold.
    """
    candidates = _all_weights(model)
    out = {}
    for name, w in weights.items():
        out[name] = w
        bias = name[: -len(w.attr)] + "bias"
        if w.attr == "weight" and bias in candidates and candidates[bias].module is w.module:
            out[bias] = candidates[bias]
    return out


def check_param_dict(
    value: object, model: nn.Module, what: str, *, allow_missing: bool = True
) -> dict[str, Tensor]:
    """Validate a per-parameter dict against the model's trainable parameters.

    Raises:
        InvalidType: `value` is not a mapping (say, a list from ``model.parameters()``).
        InvalidArgument: unknown keys, missing keys (unless allowed) or wrong shapes.
    """
    if not isinstance(value, Mapping):
        raise InvalidType(
            f"{what} must be a dict from parameter name to tensor, keyed like "
            f"model.named_parameters(), e.g. {{name: torch.randn_like(p) for name, p in "
            f"model.named_parameters()}}; got {type(value).__name__}"
        )
    params = trainable_parameters(model)
    unknown = sorted(set(value) - set(params))
    if unknown:
        raise InvalidArgument(
            f"{what} has keys {unknown} that are not trainable parameters; valid: {sorted(params)}"
        )
    if not allow_missing:
        missing = sorted(set(params) - set(value))
        if missing:
            raise InvalidArgument(f"{what} is missing parameters {missing}")
    out = {}
    for name, t in value.items():
        if not isinstance(t, Tensor):
            raise InvalidType(f"{what}[{name!r}] must be a tensor, got {type(t).__name__}")
        if t.shape != params[name].shape:
            raise InvalidArgument(
                f"{what}[{name!r}] has shape {tuple(t.shape)}, the parameter has "
                f"{tuple(params[name].shape)}"
            )
        out[name] = t.to(device=params[name].device, dtype=params[name].dtype)
    return out
