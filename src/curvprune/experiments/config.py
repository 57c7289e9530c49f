"""A run's configuration: every option of one run, validated once, here at the edge.

`RunConfig` has one field per CLI flag (same name with underscores). Its criterion options are
not written out here: they are generated from `curvprune.criteria.options.OPTIONS`, so the CLI,
the YAML keys and this class cannot drift apart. `curvprune.experiments.regimes` runs a config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from curvprune._core.state import SCORING_MODES
from curvprune.checkpoint import check_checkpoint_file
from curvprune.criteria.options import OPTIONS
from curvprune.criteria.registry import check_options
from curvprune.errors import InvalidArgument
from curvprune.experiments.launch import resolve_device
from curvprune.pruning.masks import check_scope, check_sparsity
from curvprune.pruning.oneshot import check_schedule
from curvprune.pruning.schedules import gradual_plan
from curvprune.training import LR_SCHEDULES

__all__ = ["CRITERION_OPTIONS", "REGIMES", "RunConfig", "coerce"]

REGIMES: dict[str, str] = {
    "init": "score and prune at initialization (optionally after --bn-warmup), then train",
    "early": "train --prune-after epochs (fractions allowed), prune, then train on",
    "trained": "start from --checkpoint or --pretrain-epochs, prune one-shot, then fine-tune",
    "gradual": "prune on the cubic schedule --initial-sparsity -> --sparsity every --frequency "
    "epochs from --start-epoch to --end-epoch, then train on",
}

#: Keyword options handed to a criterion when it lists them in ``Criterion.options``.
CRITERION_OPTIONS = tuple(OPTIONS)
#: Criterion options that bound memory but leave the scores unchanged: not in labels or ids.
_MEMORY_OPTIONS = tuple(n for n, o in OPTIONS.items() if o.memory_only)

#: Options that only some regimes read. A single run rejects them elsewhere; a sweep resets
#: them to their defaults so that runs differing only in an unused option share one run id.
_REGIME_FIELDS: dict[str, tuple[str, ...]] = {
    "bn_warmup": ("init",),
    "prune_after": ("early",),
    "checkpoint": ("trained", "gradual"),
    "pretrain_epochs": ("trained", "gradual"),
    "initial_sparsity": ("gradual",),
    "start_epoch": ("gradual",),
    "end_epoch": ("gradual",),
    "frequency": ("gradual",),
}

#: Regimes that structured runs support: pruning once, before training.
STRUCTURED_REGIMES = ("init", "trained")
#: The targets of a structured run; exactly one is set.
_STRUCTURED_TARGETS = ("channel_sparsity", "macs_target")
#: No layer of a structured run loses more than this fraction of its channels.
MAX_LAYER_SPARSITY = 0.95

#: Fields that say where or how a run executes, not what it computes.
_NOT_IN_RUN_ID = ("data_dir", "device", "download", "threads", "workers", *_MEMORY_OPTIONS)
#: Options added after runs were recorded, left out of the run id at their "off" value, so that
#: adding them changed no existing id (and finished runs are still found on resume).
_OFF_VALUES_NOT_IN_RUN_ID = {"pretrained": False, "val_split": 0.0}
#: Seeds that every generator takes: torch.manual_seed accepts [0, 2**64 - 1].
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class _RunOptions:
    """Every option of one run; field names are the CLI flags with underscores.

    Fractional epochs are allowed everywhere (``prune_after=0.25`` prunes after a quarter
    epoch). Criterion options left at ``None`` use the criterion's own defaults. With
    ``structured=True`` whole channels go instead of single weights, by ``channel_sparsity``
    (fraction of channels removed) or down to ``macs_target`` (kept fraction of MACs), and
    ``sparsity`` is unused.
    """

    model: str = "mlp"
    pretrained: bool = False
    dataset: str = "digits"
    data_dir: str | None = None
    criterion: str = "magnitude"
    sparsity: float = 0.9
    scope: str = "global"
    structured: bool = False
    channel_sparsity: float | None = None
    macs_target: float | None = None
    at: str = "init"
    bn_warmup: bool = False
    prune_after: float = 1.0
    checkpoint: str | None = None
    pretrain_epochs: float = 0.0
    recalibrate_bn: bool = False
    initial_sparsity: float = 0.0
    start_epoch: float = 0.0
    end_epoch: float = 4.0
    frequency: float = 1.0
    epochs: float = 10.0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    milestones: tuple[float, ...] | None = None
    gamma: float = 0.1
    seed: int = 0
    score_samples: int = 1024
    train_limit: int | None = None
    val_split: float = 0.0
    augment: bool = True
    download: bool = False
    device: str = "auto"
    threads: int | None = None
    iterations: int | None = None
    schedule: str | None = None
    exclude: tuple[str, ...] | None = None
    score_per_class: int | None = None
    score_batch_size: int | None = None
    score_mode: str | None = None
    workers: int = 0

    @classmethod
    def keys(cls) -> list[str]:
        """All option names, in declaration order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from a mapping (YAML, JSON); keys may use dashes; values are coerced.

        Raises:
            InvalidArgument: For an unknown key (listing the valid ones) or a value of the
                wrong type.
        """
        known = set(cls.keys())
        kwargs = {}
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise InvalidArgument(
                    f"unknown option {raw_key!r}; valid: {', '.join(sorted(known))}"
                )
            kwargs[key] = coerce(key, value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every option (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key in TUPLE_OPTIONS:
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def criterion_options(self) -> dict[str, Any]:
        """Criterion keyword options that are set and that this criterion accepts.

        ``seed`` is added for criteria that draw random numbers (random, Hutchinson probes).
        """
        accepted = self.accepted_options()
        opts = {k: getattr(self, k) for k in CRITERION_OPTIONS if getattr(self, k) is not None}
        opts = {k: v for k, v in opts.items() if k in accepted}
        if "seed" in accepted:
            opts["seed"] = self.seed
        return opts

    def accepted_options(self) -> tuple[str, ...]:
        """Options of the criterion's per-weight scores, or of its channel scores if structured."""
        crit = _criterion(self.criterion, structured=self.structured)
        return crit.channel_options if self.structured else crit.options

    def target(self) -> str:
        """What the run prunes to, short: ``s0.9``, ``ch0.5`` (channels) or ``macs0.25``."""
        if not self.structured:
            return f"s{self.sparsity:g}"
        if self.channel_sparsity is not None:
            return f"ch{self.channel_sparsity:g}"
        return f"macs{self.macs_target:g}" if self.macs_target is not None else "structured"

    def target_text(self) -> str:
        """`target` in words: ``sparsity 0.9``, ``channel sparsity 0.5``, ``MACs target 0.25``."""
        if not self.structured:
            return f"sparsity {self.sparsity:g}"
        if self.channel_sparsity is not None:
            return f"channel sparsity {self.channel_sparsity:g}"
        return f"MACs target {self.macs_target:g}"

    def label(self) -> str:
        """Criterion name plus its explicitly set options, e.g. ``hp[temperature=200]``."""
        hidden = ("seed", *_MEMORY_OPTIONS)
        opts = {k: v for k, v in self.criterion_options().items() if k not in hidden}
        for key in ("iterations", "schedule"):
            if getattr(self, key) is not None:
                opts[key] = getattr(self, key)
        if self.exclude:
            opts["exclude"] = "|".join(self.exclude)
        if not opts:
            return self.criterion
        text = ",".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in opts.items()
        )
        return f"{self.criterion}[{text}]"

    def normalized(self) -> RunConfig:
        """Reset options the regime or criterion ignores to their defaults (used by sweeps)."""
        defaults = RunConfig()
        changes = {
            k: getattr(defaults, k)
            for k, regimes in _REGIME_FIELDS.items()
            if self.at not in regimes
        }
        if self.structured:
            changes["sparsity"] = defaults.sparsity
        else:
            changes.update({k: None for k in _STRUCTURED_TARGETS})
        if self.criterion in _criteria(self.structured):
            accepted = self.accepted_options()
            changes.update({k: None for k in CRITERION_OPTIONS if k not in accepted})
            # a value valid only for other criteria (variant pai_code for taylor, normalize mean
            # for oba): this criterion's default
            crit = _criterion(self.criterion, structured=self.structured)
            for key in CRITERION_OPTIONS:
                valid = crit.choices(key, structured=self.structured)
                if valid is not None and getattr(self, key) not in (None, *valid):
                    changes[key] = None
        if self.score_per_class is not None:
            changes["score_samples"] = defaults.score_samples
        return dataclasses.replace(self, **changes)

    def result_fields(self) -> dict[str, Any]:
        """The options every result dict starts with (finished or diverged runs alike)."""
        return {
            "run_id": self.run_id(),
            "label": self.label(),
            "model": self.model,
            "dataset": self.dataset,
            "criterion": self.criterion,
            "at": self.at,
            "scope": self.scope,
            "bn_warmup": self.bn_warmup,
            "prune_after": self.prune_after if self.at == "early" else None,
            "sparsity": None if self.structured else self.sparsity,
            "structured": self.structured,
            "seed": self.seed,
            "epochs": self.epochs,
        }

    def scoring_batch_size(self) -> int:
        """Samples per scoring batch.

        ``--score-batch-size``, else the criterion's own (``Criterion.score_batch_size``: 1
        for hp and hts, as the HTS code), else ``--batch-size``.
        """
        if self.score_batch_size is not None:
            return self.score_batch_size
        from curvprune import CRITERIA

        crit = CRITERIA.get(self.criterion)
        return getattr(crit, "score_batch_size", None) or self.batch_size

    def scoring_mode(self, *, default: bool = False) -> str:
        """The train/eval flags scores are computed with.

        ``--score-mode``, else the criterion's (``Criterion.mode_for``: eval, train for oba's
        ``variant=oba_code``); ``default=True``: the criterion's, ignoring ``--score-mode``.
        """
        from curvprune import CRITERIA

        crit = CRITERIA.get(self.criterion)
        mode = None if default else self.score_mode
        return "eval" if crit is None else crit.mode_for(self.criterion_options(), mode)

    def run_id(self) -> str:
        """Stable id of what this run computes: readable prefix plus a hash of the options.

        Unset (None) options are left out, so that declaring a new option changes no id. The
        scoring batch size enters as the size actually used, and only where it differs from
        ``--batch-size``: runs recorded before ``--score-batch-size`` existed scored in batches
        of ``--batch-size`` and keep their ids. A variant whose computation changed
        (``Criterion.revisions``) adds its note, so that its old runs are not taken for new.
        """
        from curvprune import CRITERIA

        normalized = self.normalized()
        identity = {
            k: v
            for k, v in normalized.to_dict().items()
            if k not in _NOT_IN_RUN_ID
            and v is not None
            and not (k in _OFF_VALUES_NOT_IN_RUN_ID and v == _OFF_VALUES_NOT_IN_RUN_ID[k])
        }
        identity.pop("score_batch_size", None)
        scoring = normalized.scoring_batch_size()
        if scoring != self.batch_size:
            identity["score_batch_size"] = scoring
        if identity.get("score_mode") == normalized.scoring_mode(default=True):
            del identity["score_mode"]  # the criterion's own mode, said explicitly
        crit = CRITERIA.get(self.criterion)
        revision = dict(getattr(crit, "revisions", ())).get(normalized.variant)
        if revision is not None:
            identity["revision"] = revision
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.criterion}-{self.at}-{self.target()}-seed{self.seed}-{digest}"

    def validate(self, *, strict: bool = True, pruning: bool = True) -> RunConfig:
        """Check every value; return ``self`` for chaining.

        Args:
            strict: Also reject options that the chosen regime or criterion would ignore.
            pruning: False for plain training (criterion and regime are then not checked).

        Raises:
            InvalidArgument: Naming the bad value and, for names, the valid choices.
        """
        from curvprune.data import DATASETS
        from curvprune.models import MODELS

        if not self.model.startswith(("torchvision:", "timm:")):  # build_model checks those
            _check_name("--model", self.model, MODELS)
        _check(
            not self.pretrained or self.model.startswith(("torchvision:", "timm:")),
            f"--pretrained loads torchvision:NAME or timm:NAME weights, not --model {self.model}",
        )
        _check_name("--dataset", self.dataset, DATASETS)
        _check_name("--lr-schedule", self.lr_schedule, LR_SCHEDULES)
        resolve_device(self.device)
        for flag, value in (
            ("--epochs", self.epochs),
            ("--pretrain-epochs", self.pretrain_epochs),
            ("--prune-after", self.prune_after),
            ("--weight-decay", self.weight_decay),
        ):
            _check(math.isfinite(value) and value >= 0, f"{flag} must be >= 0, got {value}")
        for flag, value in (
            ("--batch-size", self.batch_size),
            ("--score-samples", self.score_samples),
            ("--score-batch-size", 1 if self.score_batch_size is None else self.score_batch_size),
        ):
            _check(value > 0, f"{flag} must be a positive integer, got {value}")
        _check(
            0 <= self.val_split < 1,
            f"--val-split must be a fraction in [0, 1), got {self.val_split}",
        )
        _check(
            self.train_limit is None or self.train_limit > 0,
            f"--train-limit must be positive, got {self.train_limit}",
        )
        _check(math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        _check(0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}")
        _check(0 <= self.seed <= MAX_SEED, f"--seed must be in [0, 2**64 - 1], got {self.seed}")
        _check(self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        _check(
            self.threads is None or self.threads > 0, f"--threads must be > 0, got {self.threads}"
        )
        _check(
            self.milestones is None or all(m >= 0 for m in self.milestones),
            f"--milestones must be epochs >= 0, got {self.milestones}",
        )
        if not pruning:
            return self
        if self.structured:
            self._check_structured()
        else:
            check_sparsity(self.sparsity, "--sparsity")
        _criterion(self.criterion, structured=self.structured)
        _check_name("--at", self.at, REGIMES)
        check_scope(self.scope)
        if self.schedule is not None:
            check_schedule(self.schedule)
        _check(
            self.score_mode in (None, *SCORING_MODES),
            f"--score-mode must be one of {', '.join(SCORING_MODES)}, got {self.score_mode!r}",
        )
        _check(
            self.score_per_class is None or self.score_per_class > 0,
            f"--score-per-class must be a positive integer, got {self.score_per_class}",
        )
        if self.exclude is not None:
            _check(
                all(p.strip() for p in self.exclude) and len(self.exclude) > 0,
                f"--exclude needs shell-style patterns such as 'fc*,*.bias', got {self.exclude}",
            )
            _check(
                not self.structured,
                "--exclude applies to unstructured runs; structured runs prune channel groups",
            )
        for key in CRITERION_OPTIONS:
            OPTIONS[key].check(getattr(self, key), as_flag=True)
        # the criterion's own valid values (--normalize mean is not one of oba's), before data
        crit = _criterion(self.criterion, structured=self.structured)
        accepted = self.accepted_options()
        check_options(
            crit,
            {k: getattr(self, k) for k in CRITERION_OPTIONS if k in accepted},
            structured=self.structured,
            as_flag=True,
        )
        _check(
            self.iterations is None or self.iterations > 0,
            f"--iterations must be > 0, got {self.iterations}",
        )
        if strict:
            self._check_applicable()
        if self.at in ("trained", "gradual") and self.checkpoint is not None:
            check_checkpoint_file(self.checkpoint)
        if self.at == "trained":
            _check(
                self.checkpoint is not None or self.pretrain_epochs > 0 or self.pretrained,
                "--at trained needs --checkpoint FILE or --pretrain-epochs N > 0 (or --pretrained)",
            )
        if self.at == "gradual":
            self.plan()
        return self

    def _check_structured(self) -> None:
        _check(
            self.at in STRUCTURED_REGIMES,
            f"--structured prunes --at {' or '.join(STRUCTURED_REGIMES)}, not {self.at}",
        )
        channels, macs = self.channel_sparsity, self.macs_target
        _check(
            channels is not None or macs is not None,
            "--structured needs --channel-sparsity S (fraction of channels removed) or "
            "--macs-target F (kept fraction of MACs); --sparsity counts single weights",
        )
        _check(
            channels is None or macs is None,
            "give --channel-sparsity or --macs-target, not both",
        )
        if channels is not None:
            check_sparsity(channels, "--channel-sparsity")
            _check(
                channels <= MAX_LAYER_SPARSITY,
                f"--channel-sparsity {channels:g} is above {MAX_LAYER_SPARSITY}, the most any "
                "layer may lose",
            )
        if macs is not None:
            _check(0 < macs <= 1, f"--macs-target must be a number in (0, 1], got {macs}")

    def _check_applicable(self) -> None:
        defaults = RunConfig()
        for key, regimes in _REGIME_FIELDS.items():
            if self.at not in regimes and getattr(self, key) != getattr(defaults, key):
                raise InvalidArgument(
                    f"--{_flag(key)} applies to --at {' or '.join(regimes)} only, not {self.at}"
                )
        if self.structured:
            _check(
                self.sparsity == defaults.sparsity,
                "--sparsity is the fraction of single weights removed; with --structured use "
                "--channel-sparsity or --macs-target",
            )
        for key in _STRUCTURED_TARGETS:
            _check(
                self.structured or getattr(self, key) is None,
                f"--{_flag(key)} applies to --structured runs only",
            )
        accepted = self.accepted_options()
        for key in CRITERION_OPTIONS:
            if getattr(self, key) is not None and key not in accepted:
                valid = [f"--{_flag(k)}" for k in CRITERION_OPTIONS if k in accepted]
                raise InvalidArgument(
                    f"--{_flag(key)} does not apply to criterion {self.criterion} "
                    f"(its options: {', '.join(valid) or 'none'})"
                )

    def plan(self):
        """The gradual regime's pruning events (see `curvprune.pruning.schedules.gradual_plan`)."""
        return gradual_plan(
            initial_sparsity=self.initial_sparsity,
            final_sparsity=self.sparsity,
            start_epoch=self.start_epoch,
            end_epoch=self.end_epoch,
            frequency=self.frequency,
        )


#: Options whose value is itself a list: a sweep file makes them an axis only as lists of lists.
TUPLE_OPTIONS = tuple(f.name for f in fields(_RunOptions) if str(f.type).startswith("tuple"))

RunConfig = make_dataclass(
    "RunConfig",
    [(o.name, o.type | None, field(default=None)) for o in OPTIONS.values()],
    bases=(_RunOptions,),
    frozen=True,
    namespace={"__module__": __name__, "__qualname__": "RunConfig"},
)
RunConfig.__doc__ = (_RunOptions.__doc__ or "") + (
    "\n    Criterion options (one field each, None = the criterion's default) are generated\n"
    "    from `curvprune.criteria.options.OPTIONS`.\n"
)


def _flag(key: str) -> str:
    return key.replace("_", "-")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidArgument(message)


def _check_name(flag: str, value: str, valid: Mapping | tuple) -> None:
    if value not in valid:
        raise InvalidArgument(f"unknown {flag} {value!r}; valid: {', '.join(valid)}")


def _criteria(structured: bool = False) -> Mapping[str, Any]:
    """Criteria with per-weight scores, or with channel scores for structured runs."""
    from curvprune import CRITERIA

    return {
        name: c for name, c in CRITERIA.items() if (c.structured if structured else c.unstructured)
    }


def _criterion(name: str, *, structured: bool = False) -> Any:
    from curvprune import CRITERIA

    criteria = _criteria(structured)
    if name in CRITERIA and name not in criteria and not structured:
        raise InvalidArgument(
            f"criterion {name!r} scores channels only (structured pruning), not single weights: "
            f"add --structured; valid without it: {', '.join(criteria)}"
        )
    if name in CRITERIA and name not in criteria:
        hint = " ('l1' is the channels' magnitude)" if name == "magnitude" else ""
        raise InvalidArgument(
            f"criterion {name!r} scores single weights only, not channels{hint}; valid with "
            f"--structured: {', '.join(criteria)}"
        )
    _check_name("--criterion", name, criteria)
    return criteria[name]


def _field_type(key: str) -> str:
    annotation = next(f.type for f in fields(RunConfig) if f.name == key)
    return str(annotation).split(" |")[0]


def coerce(key: str, value: Any) -> Any:
    """Convert a YAML / JSON / CLI value to the type of option ``key``.

    Raises:
        InvalidArgument: If the value cannot be read as that type.
    """
    kind = _field_type(key)
    if value is None:
        return None
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            item = str if kind.startswith("tuple[str") else float
            return tuple(item(str(v).strip()) for v in items if str(v).strip() != "")
        return str(value)
    except (TypeError, ValueError):
        kind_name = "list of numbers" if kind.startswith("tuple[float") else kind
        kind_name = "list of strings" if kind.startswith("tuple[str") else kind_name
        raise InvalidArgument(f"--{_flag(key)} expects a {kind_name}, got {value!r}") from None
