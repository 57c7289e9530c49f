"""Criterion options, declared once: name, type, help.

Every keyword-only argument of a score function (per weight or per channel) is an `Option`
here. The CLI's flags and their help, the YAML keys of a sweep and the fields of
`curvprune.experiments.config.RunConfig` are all derived from `OPTIONS`; which criteria take
an option, each criterion's default and, for a ``str`` option, each criterion's valid values
(the ``Literal`` annotation) come from the score functions' signatures (see
`curvprune.criteria.registry.Criterion.defaults` and `Criterion.choices`). ``seed`` is not
listed: a run passes its own seed to the criteria that draw random numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from curvprune._core.memory import parse_memory
from curvprune.errors import InvalidArgument


@dataclass(frozen=True)
class Option:
    """One criterion option.

    Attributes:
        name: keyword argument name; the CLI flag is ``--`` plus the name with dashes.
        type: ``int``, ``float``, ``str`` or ``bool``.
        help: one line for ``--help`` (the criteria that take it are appended there).
        positive: the value must be > 0.
        memory_only: bounds memory without changing the scores (kept out of run ids and labels).
        size: a memory size such as ``8GiB`` (validated with `parse_memory`).
    """

    name: str
    type: type
    help: str
    positive: bool = False
    memory_only: bool = False
    size: bool = False

    @property
    def flag(self) -> str:
        """The CLI flag, e.g. ``--num-probes``."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, *, as_flag: bool = False) -> Any:
        """Return `value` if valid for this option; else raise naming it and the rule.

        Args:
            value: the value given; None (the criterion's default) is always valid.
            as_flag: name the option as its CLI flag (``--num-probes``), not as the keyword.

        Raises:
            InvalidArgument: a value of the wrong type or not positive (a ``str`` option's
                valid values are the criterion's: `curvprune.criteria.check_options`).

        Example:
            >>> OPTIONS["num_probes"].check(0, as_flag=True)
            Traceback (most recent call last):
            ...
            curvprune.errors.InvalidArgument: --num-probes must be > 0, got 0
        """
        if value is None:
            return value
        name = self.flag if as_flag else self.name
        numeric = self.type in (int, float)
        if (
            isinstance(value, bool)
            and self.type is not bool
            or (numeric and not isinstance(value, (int, float)))
        ):
            raise InvalidArgument(f"{name} expects {self.type.__name__}, got {value!r}")
        if self.type is int and isinstance(value, float) and not value.is_integer():
            raise InvalidArgument(f"{name} expects an integer, got {value!r}")
        if numeric and self.positive and not (math.isfinite(value) and value > 0):
            raise InvalidArgument(f"{name} must be > 0, got {value}")
        if self.type is str and not isinstance(value, str):
            raise InvalidArgument(f"{name} expects str, got {value!r}")
        if self.size:
            try:
                parse_memory(value)
            except InvalidArgument:
                raise InvalidArgument(
                    f"{name} {value!r} is not a size such as 8GiB, 512MB or 2000000000 (bytes)"
                ) from None
        return value


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in [
        Option(
            "num_probes",
            int,
            "Hutchinson probes per scoring batch; even 1000 rank weights little better than "
            "chance at T=200 on a small MLP (docs/hutchinson.md)",
            positive=True,
        ),
        Option(
            "temperature",
            float,
            "softmax temperature T: the loss sees logits / T (1 = plain loss)",
            positive=True,
        ),
        Option("dampening", float, "λ added to the Fisher's diagonal", positive=True),
        Option("block_size", int, "WoodFisher block size (weights per block)", positive=True),
        Option(
            "num_grads",
            int,
            "gradients in the WoodFisher Fisher (default: one per scoring sample)",
            positive=True,
        ),
        Option("fisher_batch_size", int, "examples per Fisher gradient", positive=True),
        Option(
            "woodtaylor_abs",
            bool,
            "WoodTaylor: rank by the statistic's absolute value (official --woodtaylor-abs)",
        ),
        Option(
            "normalize_update",
            float,
            "WoodTaylor: scale a tensor's update with a norm above its weights' norm to this "
            "multiple of it (official --normalize-update, --normalize-update-mult)",
            positive=True,
        ),
        Option(
            "normalize",
            str,
            "divide the scores by their max (oba: none or max, per tensor), mean or sum (per "
            "group for channels)",
        ),
        Option("add_magnitude", bool, "add |θ| to the (normalized) scores"),
        Option(
            "variant",
            str,
            "original: the method's own code; pai_code (grasp, synflow): as the FTS/HTS "
            "repositories ran it; oba_code (oba, oba_full, taylor, l1): as the OBA "
            "repository's code; fts_v1 (fts): the FTS repository's B·F",
        ),
        Option(
            "reinit",
            bool,
            "GraSP: score a copy whose nn.Linear weights are redrawn Xavier-normal (GraSP's "
            "default; curvprune's is off)",
        ),
        Option(
            "biases",
            bool,
            "OBA: the prunable layers' biases join θ and the one threshold (on with "
            "--variant oba_code, as the OBA code)",
        ),
        Option(
            "norm_layers",
            bool,
            "channel OBA: BatchNorm/LayerNorm γ, β in θ and as group layers (off with "
            "--variant oba_code: the OBA code gives them zero importance)",
        ),
        Option(
            "chunk_size",
            int,
            "samples per per-sample-gradient pass (default: a whole batch, or what fits "
            "--max-memory)",
            positive=True,
            memory_only=True,
        ),
        Option(
            "max_memory",
            str,
            "memory budget such as 8GiB: chooses --chunk-size; WoodFisher refuses, with its "
            "estimate, what would not fit",
            memory_only=True,
            size=True,
        ),
    ]
}

#: Keyword arguments of score functions that are not `OPTIONS`: a run supplies them itself.
RUN_SUPPLIED = ("seed",)


def get_option(name: str) -> Option:
    """The declared option, or an error listing the declared ones."""
    if name not in OPTIONS:
        raise InvalidArgument(f"unknown criterion option {name!r}; known: {', '.join(OPTIONS)}")
    return OPTIONS[name]


__all__ = ["OPTIONS", "RUN_SUPPLIED", "Option", "get_option"]
