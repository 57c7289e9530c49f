"""The criteria registry and `score`: one place that lists every criterion.

`CRITERIA` maps a name to a `Criterion`; the CLI's ``list``, its error messages, the README's
table, `score` / `prune` (per-weight scores) and `curvprune.structured.prune_channels`
(per-channel scores) all read it. A criterion's options are the keyword-only arguments of its
score functions, each declared once in `curvprune.criteria.options.OPTIONS`.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from curvprune._core.batches import reiterable
from curvprune._core.inputs import accepts_forward
from curvprune._core.params import Selector, prunable_weights, with_biases
from curvprune._core.state import check_mode, preserved, scoring_mode
from curvprune.criteria import channel as ch
from curvprune.criteria import scores as s
from curvprune.criteria.options import OPTIONS, RUN_SUPPLIED, Option
from curvprune.criteria.updates import WOODFISHER_UPDATE, WOODTAYLOR_UPDATE, WeightUpdate
from curvprune.curvature.gradient import LossFn, default_loss
from curvprune.errors import InvalidArgument


@dataclass(frozen=True)
class Criterion:
    """A pruning criterion.

    Attributes:
        name: registry key.
        description: one line for ``curvprune list`` and the docs.
        weight_score: per-weight score function (see `curvprune.criteria.scores`), or None if
            the criterion is only structured.
        data_free: needs no data beyond the input shape.
        default_iterations: rounds of score → prune that `prune` runs by default.
        channel_score: per-channel score function for `prune_channels` (see
            `curvprune.criteria.channel`), or None if the criterion is only unstructured.
        default_schedule: `prune`'s default round schedule.
        weight_update: the update `prune` applies before masking, or None.
        score_batch_size: samples per scoring batch that the method's own code uses, where the
            batch changes the scores (the HTS code's 1 for the Hutchinson criteria: fresh
            probes for every batch); None: any (the CLI then scores in ``--batch-size``).
        variant_defaults: ``(variant, ((setting, value), ...))`` pairs: what a ``variant``
            changes beyond its score function, read by `Criterion.setting` (``schedule``,
            the scoring ``mode``, ``biases``).
        revisions: ``(variant, note)`` pairs for variants whose computation changed after runs
            were recorded: the note enters those runs' ids, so that a resumed sweep re-runs
            them instead of taking the old results for the new computation.

    Each ``str`` option's valid values are declared once, as the ``Literal`` annotation of the
    score function's keyword (`Criterion.choices`); checks, the CLI's choices and
    ``curvprune list`` read them from there.
    """

    name: str
    description: str
    weight_score: Callable | None
    data_free: bool = False
    default_iterations: int = 1
    channel_score: Callable | None = None
    default_schedule: str = "exponential"
    weight_update: WeightUpdate | None = None
    score_batch_size: int | None = None
    variant_defaults: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()
    revisions: tuple[tuple[str, str], ...] = ()

    def setting(self, name: str, options: Mapping, default: object = None) -> object:
        """A setting for these options.

        The given value if not None, else the ``variant``'s (`variant_defaults`), else the
        score function's default, else `default`.
        """
        if options.get(name) is not None:
            return options[name]
        fn = self.weight_score or self.channel_score
        variant = options.get("variant") or _default(fn, "variant")
        for v, pairs in self.variant_defaults:
            if v == variant and name in dict(pairs):
                return dict(pairs)[name]
        found = _default(fn, name)
        return default if found is None else found

    def schedule_for(self, options: Mapping) -> str:
        """`prune`'s default schedule for these options (the ``variant`` may change it)."""
        return self.setting("schedule", options, self.default_schedule)

    def mode_for(self, options: Mapping, mode: str | None = None) -> str:
        """The scoring mode: `mode` if given, else the variant's, else "eval" (`SCORING_MODES`)."""
        return check_mode(self.setting("mode", {**options, "mode": mode}, "eval"))

    def tensors(self, model: nn.Module, prunable: Selector, options: Mapping) -> dict:
        """The tensors to score and prune.

        `prunable`'s weights and, with the ``biases`` setting on, the biases of their layers
        (`curvprune._core.params.with_biases`).
        """
        weights = prunable_weights(model, prunable)
        return with_biases(model, weights) if self.setting("biases", options) else weights

    def choices(self, option: str, *, structured: bool = False) -> tuple[str, ...] | None:
        """The valid values of a ``str`` option for this criterion, or None (any, or none taken).

        They are the ``Literal`` annotation of the score function's keyword.
        """
        fn = self.channel_score if structured or self.weight_score is None else self.weight_score
        return None if fn is None else _literal_values(fn, option)

    @property
    def variants(self) -> tuple[str, ...]:
        """The values its ``variant`` option takes (empty: no such option)."""
        found: list[str] = []
        for fn in (self.weight_score, self.channel_score):
            for v in (_literal_values(fn, "variant") or ()) if fn is not None else ():
                found += [v] if v not in found else []
        return tuple(found)

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options of the per-weight scores (of the channel scores if structured only)."""
        if self.weight_score is None:
            return self.channel_options
        return _keyword_only(self.weight_score)

    @property
    def channel_options(self) -> tuple[str, ...]:
        """Keyword options of the channel scores (empty if not structured)."""
        return () if self.channel_score is None else _keyword_only(self.channel_score)

    def defaults(self, *, structured: bool = False) -> dict[str, object]:
        """Each option's default for this criterion (from its score function's signature)."""
        fn = self.channel_score if structured or self.weight_score is None else self.weight_score
        if fn is None:
            return {}
        params = inspect.signature(fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}

    @property
    def unstructured(self) -> bool:
        """Has per-weight scores (`score`, `prune`)."""
        return self.weight_score is not None

    @property
    def structured(self) -> bool:
        """Has channel scores (`prune_channels`)."""
        return self.channel_score is not None


def _default(fn: Callable | None, option: str):
    param = None if fn is None else inspect.signature(fn).parameters.get(option)
    return None if param is None else param.default


@functools.cache
def _literal_values(fn: Callable, option: str) -> tuple[str, ...] | None:
    """The values of the ``Literal[...]`` annotation of `fn`'s keyword `option` (None elsewise)."""
    hint = typing.get_type_hints(fn).get(option)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    values = [v for m in members if typing.get_origin(m) is typing.Literal for v in m.__args__]
    return tuple(values) or None


def _keyword_only(fn: Callable) -> tuple[str, ...]:
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)


#: What ``variant="oba_code"`` changes in `oba` and `oba_full` beyond the scores: the OBA
#: code scores in train mode, and its unstructured pruners score and prune the biases too.
OBA_CODE_SETTINGS = (("oba_code", (("mode", "train"), ("biases", True))),)

CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in [
        Criterion(
            "random",
            "uniform random scores (baseline)",
            s.random_scores,
            data_free=True,
            channel_score=ch.random_channel,
        ),
        Criterion("magnitude", "|θ| (baseline)", s.magnitude_scores, data_free=True),
        Criterion("snip", "|θ⊙g|, SNIP connection sensitivity", s.snip_scores),
        Criterion(
            "grasp",
            "θ⊙(Hg) at logits/200, GraSP (variant=pai_code: −θ⊙(Hg) with g over every "
            "parameter, the FTS/HTS code)",
            s.grasp_scores,
            revisions=(("pai_code", "g and Hg over every parameter"),),
        ),
        Criterion(
            "synflow",
            "|θ|⊙∂R/∂|θ|, data-free SynFlow (100 rounds by default)",
            s.synflow_scores,
            data_free=True,
            default_iterations=100,
            variant_defaults=(("pai_code", (("schedule", "exponential_pruned"),)),),
        ),
        Criterion("gradnorm", "|g|, gradient norm (FTS/HTS baseline)", s.gradnorm_scores),
        Criterion(
            "fisher_diag",
            "F, the empirical Fisher diagonal (FTS/HTS baseline)",
            s.fisher_diag_scores,
        ),
        Criterion(
            "fbss",
            "((F+λ)/2)(θ − g/(F+λ))², Fisher Brain Surgeon Sensitivity (FTS paper)",
            s.fbss_scores,
        ),
        Criterion(
            "fisher",
            "½θ²⊙F, OBD with the empirical Fisher diagonal",
            s.fisher_scores,
            channel_score=ch.fisher_channel,
        ),
        Criterion(
            "fts",
            "|θ⊙g + ½θ²⊙F|, Fisher-Taylor sensitivity (variant=fts_v1: F times the Fisher batch)",
            s.fts_scores,
            channel_score=ch.fts_channel,
        ),
        Criterion(
            "hp",
            "½θ²⊙D, OBD with the Hutchinson Hessian diagonal (logits/200)",
            s.hp_scores,
            score_batch_size=1,
        ),
        Criterion(
            "hts",
            "|θ⊙g + ½θ²⊙D|, Hutchinson-Taylor sensitivity (logits/200)",
            s.hts_scores,
            channel_score=ch.hts_channel,
            score_batch_size=1,
        ),
        Criterion(
            "oba",
            "|θ⊙((H−G)θ)|/max + |θ|, Optimal Brain Apoptosis (inter-layer curvature, 49 rounds; "
            "variant=oba_code: biases too, max + 1e-6, train mode)",
            s.oba_scores,
            default_iterations=49,
            channel_score=ch.oba_channel,
            variant_defaults=OBA_CODE_SETTINGS,
        ),
        Criterion(
            "oba_full",
            "|θ⊙(Hθ)|/max + |θ|, the OBA repository's fastOBA order-2 variant (full Hessian; "
            "variant=oba_code: θ all parameters, biases too, train mode)",
            s.oba_full_scores,
            default_iterations=49,
            channel_score=ch.oba_full_channel,
            variant_defaults=OBA_CODE_SETTINGS,
        ),
        Criterion(
            "woodfisher",
            "θ²/(2[F⁻¹]qq), WoodFisher block inverse Fisher (OBS update in prune)",
            s.woodfisher_scores,
            default_schedule="linear",
            weight_update=WOODFISHER_UPDATE,
        ),
        Criterion(
            "woodtaylor",
            "½(θ−h)²/[F⁻¹]qq − ½gᵀF⁻¹g − min per tensor, h = F⁻¹g, WoodTaylor (update F⁻¹s − h)",
            s.woodtaylor_scores,
            default_schedule="linear",
            weight_update=WOODTAYLOR_UPDATE,
        ),
        # structured only: channel scores for prune_channels
        Criterion(
            "taylor",
            "|Σ θ⊙g| over each channel's weights, first-order Taylor (variant=oba_code: the OBA "
            "code's, per layer ÷ group max)",
            None,
            channel_score=ch.taylor_channel,
        ),
        Criterion(
            "l1",
            "Σ|θ| over each channel's weights (variant=oba_code: ÷ group max)",
            None,
            data_free=True,
            channel_score=ch.l1_channel,
        ),
    ]
}


def get_criterion(name: str, *, structured: bool = False) -> Criterion:
    """The registered criterion, or an error listing the known ones.

    Args:
        name: registry key.
        structured: the caller needs channel scores (`prune_channels`) rather than per-weight
            scores (`score`, `prune`); a criterion without them is an error that says which
            function to use instead.
    """
    if not isinstance(name, str) or name not in CRITERIA:
        raise InvalidArgument(f"unknown criterion {name!r}; known criteria: {', '.join(CRITERIA)}")
    crit = CRITERIA[name]
    if structured and not crit.structured:
        hint = "; for channels use 'l1', the L1 norm of each channel's weights" * (
            name == "magnitude"
        )
        channel = ", ".join(n for n, c in CRITERIA.items() if c.structured)
        raise InvalidArgument(
            f"criterion {name!r} is unstructured only{hint}; structured criteria: {channel}"
        )
    if not structured and not crit.unstructured:
        raise InvalidArgument(f"criterion {name!r} is structured only; use prune_channels")
    return crit


def check_options(
    criterion: Criterion, options: Mapping, *, structured: bool = False, as_flag: bool = False
) -> None:
    """Reject options the criterion does not take (naming the ones it does) and bad values.

    A ``str`` option must be one of the criterion's own valid values (`Criterion.choices`).
    With ``as_flag`` the options are named as their CLI flags (``--normalize``).
    """
    accepted = criterion.channel_options if structured else criterion.options
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no options"
        raise InvalidArgument(
            f"criterion {criterion.name!r} does not take {', '.join(unknown)}; it takes: {takes}"
        )
    for name, value in options.items():
        if name in OPTIONS:
            OPTIONS[name].check(value, as_flag=as_flag)
        valid = criterion.choices(name, structured=structured)
        if value is not None and valid is not None and value not in valid:
            label = OPTIONS[name].flag if as_flag and name in OPTIONS else name
            raise InvalidArgument(
                f"{label} must be one of {', '.join(valid)} for criterion {criterion.name!r}, "
                f"got {value!r}"
            )


def option_choices(option: str) -> tuple[str, ...] | None:
    """Every criterion's valid values of a ``str`` option, in registry order (CLI choices)."""
    found: list[str] = []
    for crit in CRITERIA.values():
        for structured in (False, True):
            for v in crit.choices(option, structured=structured) or ():
                found += [v] if v not in found else []
    return tuple(found) or None


def criteria_taking(option: str) -> list[str]:
    """Names of the criteria whose per-weight or channel scores take `option`."""
    return [n for n, c in CRITERIA.items() if option in c.options or option in c.channel_options]


def check_finite(scores: dict[str, Tensor], criterion: str) -> None:
    for name, t in scores.items():
        bad = (~torch.isfinite(t)).sum().item()
        if bad:
            raise InvalidArgument(
                f"criterion {criterion!r} gave {bad} non-finite scores (NaN or inf) for "
                f"tensor {name!r}; check the model's weights, the data and the loss"
            )


@accepts_forward
def score(
    model: nn.Module,
    criterion: str,
    batches: Iterable,
    *,
    loss_fn: LossFn | None = None,
    prunable: Selector = None,
    mode: str | None = None,
    **options,
) -> dict[str, Tensor]:
    """Scores for the prunable weights: higher = keep.

    Args:
        model: the network; its parameters, modes and buffers are left unchanged. It is
            scored in eval mode (BatchNorm's running statistics, no dropout) unless `mode`
            says otherwise.
        criterion: a name from `CRITERIA`.
        batches: iterable of ``(inputs, targets)``; the objective is the mean per-sample loss.
            Inputs may be a dict of tensors (``model(**inputs)``), e.g. a tokenizer's output.
        loss_fn: batch-mean loss ``loss_fn(outputs, targets)``, outputs as the model (or
            `forward`) returns them; None for cross-entropy.
        forward: optional ``forward(model, inputs) -> outputs`` used for every call of the
            model, e.g. ``lambda model, x: model(**x).logits`` for a transformers model.
        prunable: None (the weight of every Linear and Conv1d/2d/3d), weight names, or a
            predicate ``f(name, module)``.
        mode: "eval" or "train": the train/eval flags while scoring (`SCORING_MODES`); None
            for the criterion's: "eval", or "train" for oba/oba_full's ``variant="oba_code"``
            (the OBA code scores in train mode). Every module's flag is restored afterwards.
        **options: the criterion's options (see ``CRITERIA[name].options``).

    Returns:
        ``{weight name: scores}`` shaped like each weight (and, for a criterion whose
        ``biases`` setting is on, their layers' biases). For weights already pruned with
        `torch.nn.utils.prune`, the name is the weight's own (``"fc.weight"``, not
        ``"fc.weight_orig"``).
    """
    crit = get_criterion(criterion)
    check_options(crit, options)
    mode = crit.mode_for(options, mode)
    weights = crit.tensors(model, prunable, options)
    batches = reiterable(batches)
    with preserved(model), scoring_mode(model, mode):
        result = crit.weight_score(model, weights, batches, default_loss(loss_fn), **options)
    result = {n: t.detach() for n, t in result.items()}
    check_finite(result, criterion)
    return result


__all__ = [
    "CRITERIA",
    "OPTIONS",
    "RUN_SUPPLIED",
    "Criterion",
    "Option",
    "WeightUpdate",
    "check_options",
    "criteria_taking",
    "get_criterion",
    "option_choices",
    "score",
]
