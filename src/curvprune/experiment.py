"""One experiment: data and model, a pruning regime, training, evaluation and a result dict.

`RunConfig` holds every option of a run (one field per CLI flag, same name with underscores)
and validates them once, here at the edge. `run_experiment` executes one pruning run in one of
four regimes (`REGIMES`); `train_dense` trains without pruning (the ``train`` command). Both
return a JSON-ready dict and, given ``out_dir``, write it to ``out_dir/result.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from curvprune import distributed, launch
from curvprune._version import __version__
from curvprune.checkpoint import load_checkpoint, save_checkpoint
from curvprune.errors import CheckpointError, InvalidArgument
from curvprune.masks import check_scope, check_sparsity
from curvprune.memory import memory_baseline, parse_memory, peak_memory_since
from curvprune.schedules import gradual_plan
from curvprune.training import (
    LR_SCHEDULES,
    Trainer,
    autocast_dtype,
    evaluate,
    open_tensorboard,
    progress_bar,
    resolve_device,
    seed_everything,
)

__all__ = [
    "CRITERION_OPTIONS",
    "REGIMES",
    "RunConfig",
    "atomic_write_text",
    "run_experiment",
    "train_dense",
]

REGIMES: dict[str, str] = {
    "init": "score and prune at initialization (optionally after --bn-warmup), then train",
    "early": "train --prune-after epochs (fractions allowed), prune, then train on",
    "trained": "start from --checkpoint or --pretrain-epochs, prune one-shot, then fine-tune",
    "gradual": "prune on the cubic schedule --initial-sparsity -> --sparsity every --frequency "
    "epochs from --start-epoch to --end-epoch, then train on",
}

#: Keyword options handed to a criterion when it lists them in ``Criterion.options``.
CRITERION_OPTIONS = (
    "num_probes",
    "temperature",
    "dampening",
    "block_size",
    "num_grads",
    "fisher_batch_size",
    "normalize",
    "add_magnitude",
    "chunk_size",
    "max_memory",
)
_POSITIVE_OPTIONS = (
    "num_probes",
    "temperature",
    "dampening",
    "block_size",
    "num_grads",
    "fisher_batch_size",
    "chunk_size",
)
#: Criterion options that bound memory but leave the scores unchanged: not in labels or ids.
_MEMORY_OPTIONS = ("chunk_size", "max_memory")

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
#: Batch sizes at which structured runs time the dense and the pruned model.
LATENCY_BATCH_SIZES = (1, 64)

#: Fields that say where or how a run executes, not what it computes.
_NOT_IN_RUN_ID = ("data_dir", "device", "download", "threads", *_MEMORY_OPTIONS)


@dataclass(frozen=True)
class RunConfig:
    """Every option of one run; field names are the CLI flags with underscores.

    Fractional epochs are allowed everywhere (``prune_after=0.25`` prunes after a quarter
    epoch). Criterion options left at ``None`` use the criterion's own defaults. With
    ``structured=True`` whole channels go instead of single weights, by ``channel_sparsity``
    (fraction of channels removed) or down to ``macs_target`` (kept fraction of MACs), and
    ``sparsity`` is unused.
    """

    model: str = "mlp"
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
    augment: bool = True
    download: bool = False
    device: str = "auto"
    threads: int | None = None
    num_probes: int | None = None
    temperature: float | None = None
    dampening: float | None = None
    block_size: int | None = None
    num_grads: int | None = None
    fisher_batch_size: int | None = None
    normalize: str | None = None
    add_magnitude: bool | None = None
    chunk_size: int | None = None
    max_memory: str | None = None
    iterations: int | None = None

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
        if out["milestones"] is not None:
            out["milestones"] = list(out["milestones"])
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
        if self.iterations is not None:
            opts["iterations"] = self.iterations
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
        return dataclasses.replace(self, **changes)

    def run_id(self) -> str:
        """Stable id of what this run computes: readable prefix plus a hash of the options."""
        identity = {k: v for k, v in self.normalized().to_dict().items() if k not in _NOT_IN_RUN_ID}
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
        ):
            _check(value > 0, f"{flag} must be a positive integer, got {value}")
        _check(
            self.train_limit is None or self.train_limit > 0,
            f"--train-limit must be positive, got {self.train_limit}",
        )
        _check(math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        _check(0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}")
        _check(self.seed >= 0, f"--seed must be >= 0, got {self.seed}")
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
        for key in (*_POSITIVE_OPTIONS, "iterations"):
            value = getattr(self, key)
            if value is not None:
                _check(value > 0, f"--{_flag(key)} must be > 0, got {value}")
        if self.max_memory is not None:
            try:
                parse_memory(self.max_memory)
            except InvalidArgument:
                raise InvalidArgument(
                    f"--max-memory {self.max_memory!r} is not a size such as 8GiB, 512MB or "
                    "2000000000 (bytes)"
                ) from None
        if strict:
            self._check_applicable()
        needs_file = self.at in ("trained", "gradual") and self.checkpoint is not None
        if needs_file and not Path(self.checkpoint).is_file():
            raise CheckpointError(
                f"checkpoint not found: {self.checkpoint} "
                f"(looked in {Path(self.checkpoint).resolve().parent})"
            )
        if self.at == "trained":
            _check(
                self.checkpoint is not None or self.pretrain_epochs > 0,
                "--at trained needs --checkpoint FILE or --pretrain-epochs N > 0",
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
        """The gradual regime's pruning events (see `curvprune.schedules.gradual_plan`)."""
        return gradual_plan(
            initial_sparsity=self.initial_sparsity,
            final_sparsity=self.sparsity,
            start_epoch=self.start_epoch,
            end_epoch=self.end_epoch,
            frequency=self.frequency,
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
            return tuple(float(v) for v in items if str(v).strip() != "")
        return str(value)
    except (TypeError, ValueError):
        kind_name = "list of numbers" if kind.startswith("tuple") else kind
        raise InvalidArgument(f"--{_flag(key)} expects a {kind_name}, got {value!r}") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _ProgressBatches(list):
    """Scoring batches that show a fresh progress bar on each pass.

    A list, so that criteria see a sized sequence (WoodFisher's memory check counts its
    samples up front).
    """

    def __init__(self, batches: list, desc: str, enabled: bool) -> None:
        super().__init__(batches)
        self._desc = desc
        self._enabled = enabled

    def __iter__(self):
        return iter(
            progress_bar(
                super().__iter__(), total=len(self), desc=self._desc, enabled=self._enabled
            )
        )


class _Run:
    """State shared by the steps of one run: data, model, device, timers, logging.

    Under a `torch.distributed` process group of K ranks, each rank loads a disjoint shard of
    the training set (``batch_size / K`` samples per step, so ``--batch-size`` is the global
    batch), takes every K-th scoring batch and every K-th test sample, and trains through
    `DistributedDataParallel`; only rank 0 logs, shows progress bars and writes files.
    """

    def __init__(
        self, cfg: RunConfig, *, quiet: bool, tensorboard: str | None, log: Callable | None
    ) -> None:
        from curvprune.data import load_data
        from curvprune.models import build_model

        self.cfg = cfg
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.progress = not quiet and self.main
        if not self.main:
            self.log = lambda msg: None
        else:
            self.log = log or ((lambda msg: None) if quiet else _stderr)
        _check(
            cfg.batch_size % self.world == 0,
            f"--batch-size {cfg.batch_size} is the global batch and must be a multiple of the "
            f"{self.world} ranks",
        )
        self.device = launch.run_device(cfg.device)
        # Peak memory is reported above this baseline: the run's own, not the torch import's.
        self.memory = memory_baseline(self.device)
        self.autocast = autocast_dtype(self.device)
        if cfg.threads is not None:
            # Small models run many times faster on one thread when cores are shared.
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.data = load_data(
            cfg.dataset,
            cfg.data_dir,
            batch_size=cfg.batch_size // self.world,
            eval_batch_size=cfg.batch_size,
            seed=cfg.seed,
            augment=cfg.augment,
            download=cfg.download,
            train_limit=cfg.train_limit,
            rank=self.rank,
            world_size=self.world,
        )
        self.test = launch.shard_eval(self.data.test)
        info = self.data.info
        torch.manual_seed(cfg.seed)
        self.model = build_model(
            cfg.model,
            in_channels=info.in_channels,
            num_classes=info.num_classes,
            image_size=info.image_size,
        ).to(self.device)
        self.writer = open_tensorboard(tensorboard) if tensorboard and self.main else None
        self.timings = {"score_s": 0.0, "train_s": 0.0, "pretrain_s": 0.0, "eval_s": 0.0}
        self._score_batches: list | None = None
        self._wrapped: tuple[torch.nn.Module, torch.nn.Module] | None = None

    def training_model(self) -> torch.nn.Module:
        """The model as the training loop sees it: DDP-wrapped (once per model) with ranks."""
        if self._wrapped is None or self._wrapped[0] is not self.model:
            self._wrapped = (self.model, launch.ddp(self.model, self.device))
        return self._wrapped[1]

    def trainer(self, epochs: float, tag: str = "train") -> Trainer:
        cfg = self.cfg
        return Trainer(
            self.training_model(),
            self.data.train,
            epochs=epochs,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            schedule=cfg.lr_schedule,
            milestones=cfg.milestones,
            gamma=cfg.gamma,
            device=self.device,
            progress=self.progress,
            writer=self.writer,
            tag=tag,
            autocast=self.autocast,
        )

    def train(self, trainer: Trainer, until: float | None = None, key: str = "train_s") -> None:
        start = time.perf_counter()
        stats = trainer.train_until(until) if until is not None else trainer.train_all()
        # Ranks end with BatchNorm statistics from their own last batch: take rank 0's.
        launch.sync_buffers(self.model)
        self.timings[key] += time.perf_counter() - start
        if stats["steps"]:
            loss, accuracy = _over_ranks(stats)
            self.log(
                f"  {trainer.tag} to epoch {trainer.epoch:g}: loss {loss:.4f}, "
                f"train accuracy {accuracy:.4f}"
            )

    def evaluate(self, what: str) -> float:
        start = time.perf_counter()
        result = evaluate(
            self.model,
            self.test,
            device=self.device,
            progress=self.progress,
            autocast=self.autocast,
        )
        self.timings["eval_s"] += time.perf_counter() - start
        self.log(f"  test accuracy {what}: {result.accuracy:.4f}")
        if self.writer is not None:
            self.writer.add_scalar(f"test/accuracy_{what.replace(' ', '_')}", result.accuracy)
        self.last_loss = result.loss
        return result.accuracy

    def check_score_split(self) -> int:
        """Scoring samples; error before any work if some rank would get no scoring batch."""
        # Capped so that the default also works with --train-limit or a tiny dataset.
        samples = min(self.cfg.score_samples, self.data.num_train)
        count = -(-samples // self.cfg.batch_size)
        _check(
            count >= self.world,
            f"--score-samples {samples} at --batch-size {self.cfg.batch_size} gives {count} "
            f"scoring batch(es), fewer than the {self.world} ranks; raise --score-samples or "
            "lower --batch-size",
        )
        return samples

    def score_batches(self) -> list:
        """This rank's scoring batches: every K-th of the single-process list, from the r-th."""
        if self._score_batches is None:
            cfg = self.cfg
            batches = self.data.scoring_batches(self.check_score_split(), cfg.batch_size)
            fbs = cfg.fisher_batch_size
            if self.world > 1 and fbs and cfg.batch_size % fbs:
                self.log(
                    f"  note: --fisher-batch-size {fbs} does not divide --batch-size "
                    f"{cfg.batch_size}, so with {self.world} ranks the Fisher's groups of {fbs} "
                    "samples differ from one process's (see docs/distributed.md)"
                )
            mine = batches[self.rank :: self.world]
            self._score_batches = [(x.to(self.device), y.to(self.device)) for x, y in mine]
        return self._score_batches

    def bn_warmup(self) -> None:
        from curvprune import bn_warmup

        bn_warmup(self.model, self.score_batches())

    def prune(self, sparsity: float) -> Any:
        from curvprune import prune

        cfg = self.cfg
        options = cfg.criterion_options()
        batches = _ProgressBatches(self.score_batches(), f"score {cfg.criterion}", self.progress)
        start = time.perf_counter()
        # Scores see the model in eval mode: BatchNorm uses its running statistics (the
        # default ones at init unless --bn-warmup re-estimated them, which is the point of
        # that option), and per-sample Fisher gradients are well defined. No autocast:
        # curvature is computed in float32.
        was_training = self.model.training
        self.model.eval()
        try:
            result = prune(
                self.model,
                cfg.criterion,
                batches,
                sparsity=sparsity,
                scope=cfg.scope,
                iterations=cfg.iterations,
                **options,
            )
        finally:
            self.model.train(was_training)
        self.timings["score_s"] += time.perf_counter() - start
        self.log(
            f"  pruned with {cfg.label()} to sparsity {result.sparsity:.4f}"
            + (f"; collapsed: {', '.join(result.collapsed)}" if result.collapsed else "")
        )
        if cfg.recalibrate_bn:
            self.bn_warmup()
        return result

    def prune_to_target(self) -> None:
        """One-shot pruning to the run's target: ``sparsity``, or channels if structured."""
        if self.cfg.structured:
            self.prune_structured()
        else:
            self.prune(self.cfg.sparsity)

    def prune_structured(self) -> None:
        """Replace the model by a physically smaller copy without the least important channels.

        Sets ``self.cost`` (parameters, MACs and CPU latency, dense and pruned: the fields of
        `StructuredResult.to_dict`) and ``self.dense_sizes`` (elements per prunable weight).
        """
        from curvprune.masks import make_permanent
        from curvprune.structured import model_cost, structured_run

        make_permanent(self.model)  # a masked checkpoint: its zeros become plain weights
        cfg = self.cfg
        batches = _ProgressBatches(self.score_batches(), f"score {cfg.criterion}", self.progress)
        self.dense_sizes = _weight_sizes(self.model)
        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()  # as in `prune`: running BatchNorm statistics, float32
        try:
            result = structured_run(
                self.model,
                cfg.criterion,
                batches,
                example_inputs=batches[0][0][:1],
                channel_sparsity=cfg.channel_sparsity,
                macs_target=cfg.macs_target,
                latency_batch_sizes=(),  # timed below, apart from scoring
                global_pruning=cfg.scope == "global",
                max_layer_sparsity=MAX_LAYER_SPARSITY,
                iterative_steps=cfg.iterations or 1,
                **cfg.criterion_options(),
            )
        finally:
            self.model.train(was_training)
        self.timings["score_s"] += time.perf_counter() - start
        start = time.perf_counter()
        if self.main:  # timing is per process: one rank is enough, others would disturb it
            example = batches[0][0][:1]
            result = dataclasses.replace(
                result,
                dense=model_cost(self.model, example, batch_sizes=LATENCY_BATCH_SIZES),
                pruned=model_cost(result.model, example, batch_sizes=LATENCY_BATCH_SIZES),
            )
        self.timings["measure_s"] = time.perf_counter() - start
        self.model = result.model.train(was_training)
        self.cost = result.to_dict()
        self.cost["latency_ms"] = launch.broadcast_object(self.cost["latency_ms"])
        self.cost["speedup"] = launch.broadcast_object(self.cost["speedup"])
        self.log(
            f"  pruned channels with {cfg.label()} ({cfg.target_text()}): MACs kept "
            f"{self.cost['macs_kept']:.4f}, parameters kept {self.cost['params_kept']:.4f}"
        )
        if cfg.recalibrate_bn:
            self.bn_warmup()

    def load_or_pretrain(self) -> float | None:
        """Start from ``--checkpoint`` or ``--pretrain-epochs``; return the dense accuracy."""
        cfg = self.cfg
        if cfg.checkpoint is not None:
            load_checkpoint(self.model, cfg.checkpoint, expect={"model": cfg.model})
            self.model.to(self.device)
        elif cfg.pretrain_epochs > 0:
            self.train(self.trainer(cfg.pretrain_epochs, tag="pretrain"), key="pretrain_s")
        else:
            return None
        return self.evaluate("dense")

    def execution(self) -> dict[str, Any]:
        """Where and how the run executed: result.json fields, equal on every rank."""
        peak = launch.max_over_ranks(peak_memory_since(self.memory))
        return {
            "device": str(self.device),
            "world_size": self.world,
            "backend": launch.backend(),
            "precision": "bf16-mixed" if self.autocast is not None else "float32",
            "peak_memory_mb": round(peak / 2**20, 1),
        }


def _weight_sizes(model: torch.nn.Module) -> dict[str, int]:
    """Elements of each prunable weight (Linear and Conv), by name."""
    from curvprune.params import prunable_weights

    return {n: w.value().numel() for n, w in prunable_weights(model).items()}


def _over_ranks(stats: Mapping[str, float]) -> tuple[float, float]:
    """Training loss and accuracy of one `Trainer.train_until` call over every rank's samples."""
    n = stats["samples"]
    sums = {"v": torch.tensor([stats["loss"] * n, stats["accuracy"] * n, n], dtype=torch.float64)}
    distributed.sum_dicts(sums)
    loss_sum, correct, seen = sums["v"].tolist()
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _restores_threads(fn: Callable) -> Callable:
    """``--threads`` applies to one run: give the caller its thread count back afterwards."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


@_restores_threads
def run_experiment(
    cfg: RunConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    save_model: bool = False,
    quiet: bool = False,
    tensorboard: str | None = None,
    log: Callable[[str], None] | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Run one pruning experiment and return its result dict.

    Regimes: ``init`` prunes the freshly initialized model (after `bn_warmup` with
    ``bn_warmup=True``); ``early`` trains ``prune_after`` epochs first, with one learning-rate
    schedule over ``prune_after + epochs``; ``trained`` loads ``checkpoint`` or trains
    ``pretrain_epochs``, prunes, then fine-tunes ``epochs`` on a fresh schedule; ``gradual``
    (optionally from a checkpoint) prunes on the cubic schedule while training, then trains
    ``epochs`` more. ``accuracy_at_prune`` is measured once the target sparsity is reached,
    ``test_accuracy`` after the final ``epochs``.

    With ``cfg.structured`` (regimes ``init`` and ``trained``) whole channels go instead: the
    model is replaced by a physically smaller copy (`curvprune.structured.structured_run`),
    the result adds dense and pruned ``params``, ``macs`` and CPU ``latency_ms`` (batch sizes
    1 and 64, median of 20 passes, the run's thread count), and ``model.safetensors`` is the
    small model (`curvprune.structured.save_pruned`; reload with ``load_pruned``).

    Under an initialized `torch.distributed` process group (``torchrun``), every rank calls
    this with the same ``cfg``: training is data-parallel, scores and masks are identical on
    all ranks, evaluation covers the whole test set, and only rank 0 logs and writes
    ``out_dir``. Every rank returns the same dict.

    Args:
        cfg: The run's options.
        out_dir: If given, ``result.json`` (and with ``save_model`` ``model.safetensors``) go
            there.
        save_model: Also save the pruned, trained model.
        quiet: No progress bars and no log lines.
        tensorboard: Log directory for TensorBoard scalars, or None.
        log: Where progress lines go (default: stderr unless ``quiet``).
        strict: Reject options that the regime or criterion would ignore.
    """
    from curvprune.masks import sparsity_report
    from curvprune.structured.measure import effective_macs

    cfg = cfg.validate(strict=strict)
    wall = time.perf_counter()
    run = _Run(cfg, quiet=quiet, tensorboard=tensorboard, log=log)
    run.check_score_split()
    run.log(
        f"run {cfg.run_id()}: {cfg.model} on {cfg.dataset}, {cfg.label()} at {cfg.at}, "
        f"{cfg.target_text()}, seed {cfg.seed}, device {run.device}"
    )
    dense_accuracy = None
    if cfg.at == "init":
        if cfg.bn_warmup:
            run.bn_warmup()
        run.prune_to_target()
        trainer = run.trainer(cfg.epochs)
    elif cfg.at == "early":
        trainer = run.trainer(cfg.prune_after + cfg.epochs)
        run.train(trainer, until=cfg.prune_after)
        run.prune(cfg.sparsity)
    elif cfg.at == "trained":
        dense_accuracy = run.load_or_pretrain()
        run.prune_to_target()
        trainer = run.trainer(cfg.epochs)
    else:  # gradual
        dense_accuracy = run.load_or_pretrain()
        plan = cfg.plan()
        trainer = run.trainer(plan[-1].epoch + cfg.epochs)
        reached = 0.0
        for step in plan:
            run.train(trainer, until=step.epoch)
            # Steps that would not raise sparsity (e.g. s_i = 0 at the start) cost a scoring
            # pass for nothing, so skip them.
            if step.sparsity > reached:
                run.prune(step.sparsity)
                reached = step.sparsity
    accuracy_at_prune = run.evaluate("at prune")
    steps_before = trainer.step
    run.train(trainer)
    # With --epochs 0 the model is unchanged since the last evaluation: don't evaluate twice.
    test_accuracy = run.evaluate("final") if trainer.step > steps_before else accuracy_at_prune
    launch.check_same_on_all_ranks(run.model)
    if cfg.structured:
        kept = _weight_sizes(run.model)
        num_prunable = sum(run.dense_sizes.values())
        layer_density = {n: kept[n] / size for n, size in run.dense_sizes.items()}
        actual = 1 - sum(kept.values()) / num_prunable
        collapsed = [n for n, d in layer_density.items() if d == 0]
    else:
        report = sparsity_report(run.model)
        actual, layer_density, collapsed = report.sparsity, report.layer_density, report.collapsed
        num_prunable = sum(
            int(b.numel()) for n, b in run.model.named_buffers() if n.endswith("_mask")
        )
        # MACs per sample: dense, and Σ layer MACs × layer density (what sparse kernels do).
        example = run.score_batches()[0][0][:1]
        macs = dict(zip(("dense", "effective"), effective_macs(run.model, example, layer_density)))
    run.timings["total_s"] = time.perf_counter() - wall
    if run.writer is not None:
        run.writer.close()

    result = {
        "run_id": cfg.run_id(),
        "label": cfg.label(),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "criterion": cfg.criterion,
        "at": cfg.at,
        "scope": cfg.scope,
        "bn_warmup": cfg.bn_warmup,
        "prune_after": cfg.prune_after if cfg.at == "early" else None,
        "sparsity": None if cfg.structured else cfg.sparsity,
        "actual_sparsity": float(actual),
        "structured": cfg.structured,
        **(run.cost if cfg.structured else {"macs": macs}),
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "test_accuracy": test_accuracy,
        "test_loss": run.last_loss,
        "accuracy_at_prune": accuracy_at_prune,
        "dense_accuracy": dense_accuracy,
        "num_prunable": num_prunable,
        "num_collapsed": len(collapsed),
        "collapsed_layers": list(collapsed),
        "layer_density": {k: float(v) for k, v in layer_density.items()},
        "timings": {k: round(v, 4) for k, v in run.timings.items()},
        **run.execution(),
        "versions": {"curvprune": __version__, "torch": torch.__version__},
        "config": cfg.to_dict(),
    }
    run.log(
        f"  done: test accuracy {test_accuracy:.4f} at sparsity {actual:.4f} "
        f"(score {run.timings['score_s']:.2f} s, train {run.timings['train_s']:.2f} s)"
    )
    if out_dir is not None and run.main:
        if save_model and cfg.structured:
            _save_structured(run, Path(out_dir) / "model.safetensors")
        elif save_model:
            save_checkpoint(
                run.model,
                Path(out_dir) / "model.safetensors",
                metadata=_checkpoint_metadata(cfg, run),
            )
        atomic_write_text(Path(out_dir) / "result.json", json.dumps(result, indent=2) + "\n")
    _log_hparams(run, tensorboard, result)
    return result


def _log_hparams(run: _Run, tensorboard: str | None, result: Mapping[str, Any]) -> None:
    """Options and final metrics into TensorBoard's HParams tab (`curvprune.loggers`)."""
    if tensorboard and run.main:
        from curvprune.loggers import log_tensorboard_hparams

        log_tensorboard_hparams(tensorboard, result)


def _save_structured(run: _Run, path: Path) -> None:
    """The smaller model itself (`save_pruned`), in eval mode; `load_pruned` rebuilds it."""
    from curvprune.structured import save_pruned

    info = run.data.info
    spec = {
        "model": run.cfg.model,
        "in_channels": info.in_channels,
        "num_classes": info.num_classes,
        "image_size": info.image_size,
    }
    was_training = run.model.training
    run.model.eval()
    try:
        save_pruned(run.model, path, spec=spec)
    finally:
        run.model.train(was_training)


@_restores_threads
def train_dense(
    cfg: RunConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    tensorboard: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg.model`` densely for ``cfg.epochs``; write ``model.safetensors`` and
    ``result.json`` to ``out_dir`` if given. The checkpoint feeds ``--at trained``."""
    cfg = cfg.validate(pruning=False)
    wall = time.perf_counter()
    run = _Run(cfg, quiet=quiet, tensorboard=tensorboard, log=log)
    run.log(
        f"train {cfg.model} on {cfg.dataset} for {cfg.epochs:g} epochs, seed {cfg.seed}, "
        f"device {run.device}"
    )
    trainer = run.trainer(cfg.epochs)
    run.train(trainer)
    accuracy = run.evaluate("final")
    run.timings["total_s"] = time.perf_counter() - wall
    if run.writer is not None:
        run.writer.close()
    result = {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "test_accuracy": accuracy,
        "test_loss": run.last_loss,
        "num_params": sum(p.numel() for p in run.model.parameters()),
        "timings": {k: round(v, 4) for k, v in run.timings.items()},
        **run.execution(),
        "versions": {"curvprune": __version__, "torch": torch.__version__},
        "config": cfg.to_dict(),
    }
    if out_dir is not None and run.main:
        save_checkpoint(
            run.model, Path(out_dir) / "model.safetensors", metadata=_checkpoint_metadata(cfg, run)
        )
        atomic_write_text(Path(out_dir) / "result.json", json.dumps(result, indent=2) + "\n")
    _log_hparams(run, tensorboard, result)
    return result


def _checkpoint_metadata(cfg: RunConfig, run: _Run) -> dict[str, str]:
    info = run.data.info
    return {
        "format": "curvprune",
        "curvprune_version": __version__,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "in_channels": str(info.in_channels),
        "num_classes": str(info.num_classes),
        "image_size": str(info.image_size),
    }
