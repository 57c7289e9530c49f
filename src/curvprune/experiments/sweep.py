"""Sweeps: a grid of runs, one CSV row per finished run, safe to kill and resume.

Layout of a sweep directory::

    DIR/results.csv             one row per finished run (scalar fields of result.json)
    DIR/runs/<run_id>/result.json
    DIR/summary.md, DIR/accuracy_vs_sparsity.png, DIR/layer_density.png   (see report.py)
    DIR/accuracy_vs_macs.png                                               (structured runs)

Each finished run's row is added by rewriting ``results.csv`` to a temporary file and
renaming it over the old one (`os.replace` is atomic on POSIX), so a reader or a killed sweep
sees the table before or after the row, never a torn line. The run id is a hash of the run's
options (`RunConfig.run_id`), so re-running the same command skips every run whose row exists,
and a run whose ``result.json`` landed just before a kill is recovered without re-running. A
run killed halfway resumes from its last epoch-end checkpoint in ``runs/<id>/``
(`curvprune.experiments.resume`).

Several sweeps may share one folder at once (``--shard i/n``, or the same command twice):
rewrites of ``results.csv`` happen under a lock and each run is claimed while it is computed
(`curvprune.experiments.results`). A run whose training loss turns non-finite is recorded
with ``status`` ``diverged`` and no accuracy, and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from curvprune.errors import Diverged, InvalidArgument
from curvprune.experiments import launch
from curvprune.experiments.config import TUPLE_OPTIONS, RunConfig, coerce
from curvprune.experiments.files import atomic_write_json, atomic_write_text, check_out_dir
from curvprune.experiments.regimes import run_experiment
from curvprune.experiments.results import (
    DIVERGED,
    RESULTS_NAME,
    claim_run,
    is_claimed,
    locked,
    parse_results,
)
from curvprune.experiments.resume import CHECKPOINT_NAME

__all__ = [
    "GRID_ALIASES",
    "MAX_RUNS",
    "expand_grid",
    "grid_size",
    "plan_sweep",
    "load_sweep_file",
    "read_results",
    "result_row",
    "run_sweep",
    "shard",
]

#: Most runs a grid may expand to without an explicit ``max_runs`` (``--max-runs``).
MAX_RUNS = 10_000

#: Plural sweep keys and the option each one varies.
GRID_ALIASES = {
    "criteria": "criterion",
    "sparsities": "sparsity",
    "seeds": "seed",
    "channel_sparsities": "channel_sparsity",
    "macs_targets": "macs_target",
}
_STRUCTURED_TARGET = "channel_sparsity|macs_target"
#: Keys of a sweep file besides the run options.
_SWEEP_KEYS = ("out", "quiet")
#: Columns first in results.csv, in this order; other scalar fields follow.
_LEAD_COLUMNS = (
    "run_id", "label", "model", "dataset", "criterion", "at", "scope", "bn_warmup",
    "prune_after", "sparsity", "actual_sparsity", "structured", "channel_sparsity",
    "macs_target", "macs_kept", "params_kept", "seed", "epochs", "test_accuracy",
    "accuracy_at_prune", "dense_accuracy", "test_loss", "num_collapsed", "collapsed_layers",
    "score_s", "train_s", "pretrain_s", "eval_s", "total_s",
)  # fmt: skip
DENSITY_PREFIX = "density:"


def load_sweep_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep's YAML file: a mapping with the flags' names (dashes or underscores).

    Any option may be a list, which makes it an axis of the grid (options whose value is a
    list, ``milestones`` and ``exclude``, are axes only as lists of lists).

    Raises:
        InvalidArgument: Missing file, invalid YAML, not a mapping, or unknown keys.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InvalidArgument(f"sweep config not found: {path} (looked in {path.resolve().parent})")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InvalidArgument(
            f"invalid YAML in {path}{line}: {getattr(err, 'problem', err)}"
        ) from None
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise InvalidArgument(
            f"{path} must hold a mapping of option: value, not {type(spec).__name__}"
        )
    spec = {str(k).replace("-", "_"): v for k, v in spec.items()}
    valid = set(RunConfig.keys()) | set(GRID_ALIASES) | set(_SWEEP_KEYS)
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise InvalidArgument(
            f"unknown key(s) {', '.join(unknown)} in {path}; valid: {', '.join(sorted(valid))}"
        )
    return spec


def _axes(spec: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Option -> its list of values (one value for options that are not axes)."""
    axes: dict[str, list[Any]] = {}
    for raw_key, value in spec.items():
        if raw_key in _SWEEP_KEYS:
            continue
        key = GRID_ALIASES.get(raw_key, raw_key)
        if raw_key in GRID_ALIASES and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        is_axis = isinstance(value, list) and (
            key not in TUPLE_OPTIONS or any(isinstance(v, list) for v in value)
        )
        values = value if is_axis else [value]
        if not values:
            raise InvalidArgument(f"sweep option {raw_key!r} has an empty list of values")
        axes[key] = values
    return axes


def grid_size(spec: Mapping[str, Any]) -> tuple[int, str]:
    """Runs in the grid before de-duplication (the product of the axes' lengths), and the axes.

    Counted without expanding, so a huge grid is caught before it fills the memory.

    Returns:
        ``(count, text)``, e.g. ``(12, "criterion 3 x sparsity 2 x seed 2")``.
    """
    axes = {k: len(v) for k, v in _axes(spec).items() if len(v) > 1}
    if "channel_sparsity" in axes and "macs_target" in axes:
        axes["channel_sparsity|macs_target"] = axes.pop("channel_sparsity") + axes.pop(
            "macs_target"
        )
    text = " x ".join(f"{k} {n}" for k, n in axes.items()) or "one run"
    return math.prod(axes.values()), text


def expand_grid(spec: Mapping[str, Any], *, max_runs: int = MAX_RUNS) -> list[RunConfig]:
    """All runs of a sweep spec, in grid order, without duplicates.

    Args:
        spec: Option -> value or list of values; the plural keys of `GRID_ALIASES`
            (``criteria``, ``sparsities``, ``seeds``, ``channel_sparsities``, ``macs_targets``;
            lists or comma-separated strings) stand for the singular options. ``out`` and
            ``quiet`` are ignored here.

    Returns:
        One normalized `RunConfig` per distinct run: options that a run's regime or criterion
        ignores are reset, so e.g. ``temperature: [1, 200]`` doubles only the criteria that
        take a temperature. ``channel_sparsities`` and ``macs_targets`` together give the runs
        of both lists (a structured run has one target or the other).

    Raises:
        InvalidArgument: A grid of more than ``max_runs`` runs (counted before expanding).
    """
    count, text = grid_size(spec)
    if count > max_runs:
        raise InvalidArgument(
            f"the grid has {count:,} runs ({text}), more than the limit of {max_runs:,}; "
            f"pass --max-runs {count} to run it anyway"
        )
    axes = {key: [coerce(key, v) for v in values] for key, values in _axes(spec).items()}
    # A structured run prunes to a channel sparsity or to a MACs target: with both lists, the
    # runs of each (one axis of alternatives), not their product.
    if "channel_sparsity" in axes and "macs_target" in axes:
        axes[_STRUCTURED_TARGET] = [
            {"channel_sparsity": v} for v in axes.pop("channel_sparsity")
        ] + [{"macs_target": v} for v in axes.pop("macs_target")]
    configs: dict[str, RunConfig] = {}
    for combo in itertools.product(*axes.values()):
        options = dict(zip(axes, combo, strict=True))
        options.update(options.pop(_STRUCTURED_TARGET, {}))
        cfg = RunConfig.from_dict(options).normalized()
        configs.setdefault(cfg.run_id(), cfg)
    return list(configs.values())


def result_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar fields of a result dict, flattened into one CSV row.

    ``timings`` become ``score_s``, ``train_s``, ...; ``layer_density`` becomes one
    ``density:<tensor>`` column per prunable tensor; ``collapsed_layers`` is joined with ``;``.
    Structured runs' ``params`` and ``macs`` become ``params:dense``, ``params:pruned``, ...,
    ``latency_ms`` becomes ``latency_ms:dense:1``, ... (``latency_iqr_ms`` likewise) and
    ``speedup`` ``speedup:1``, ....
    """
    row: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, bool | int | float | str) or value is None:
            row[key] = value
    for key in ("params", "macs", "speedup"):
        for which, value in result.get(key, {}).items():
            row[f"{key}:{which}"] = value
    for key in ("latency_ms", "latency_iqr_ms"):
        for which, by_batch in result.get(key, {}).items():
            for batch, value in by_batch.items():
                row[f"{key}:{which}:{batch}"] = value
    row.update(result.get("timings", {}))
    row["collapsed_layers"] = ";".join(result.get("collapsed_layers", []))
    for name, density in result.get("layer_density", {}).items():
        row[DENSITY_PREFIX + name] = density
    return row


def read_results(out_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of ``out_dir/results.csv`` as dicts of strings ([] if there is no file yet).

    Rows are checked and de-duplicated by run id; a bad row is rebuilt from its run's
    ``result.json`` (see `curvprune.experiments.results.parse_results`).

    Raises:
        DataError: A garbled file, or a bad row that cannot be rebuilt (naming the line).
    """
    out_dir = Path(out_dir)

    def rebuild(run_id: str) -> dict[str, Any] | None:
        result = _read_result(out_dir / "runs" / run_id / "result.json")
        return result_row(result) if result is not None else None

    return parse_results(out_dir / RESULTS_NAME, rebuild)


def _write_results(out_dir: Path, rows: list[Mapping[str, Any]]) -> None:
    columns = [c for c in _LEAD_COLUMNS if any(c in r for r in rows)]
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    atomic_write_text(out_dir / "results.csv", buffer.getvalue())


def _append_row(out_dir: Path, row: Mapping[str, Any]) -> None:
    # Under the folder's lock: another sweep may be adding its own row at the same moment.
    with locked(out_dir):
        rows = read_results(out_dir)
        if all(r["run_id"] != row["run_id"] for r in rows):
            _write_results(out_dir, [*rows, row])


def shard(configs: list[RunConfig], index: int, count: int) -> list[RunConfig]:
    """Every ``count``-th run from the ``index``-th (0-based): shard ``index`` of ``count``.

    Raises:
        InvalidArgument: Unless ``0 <= index < count``.
    """
    if not 0 <= index < count:
        raise InvalidArgument(f"--shard {index}/{count}: the index must be in 0..{count - 1}")
    return configs[index::count]


def plan_sweep(configs: list[RunConfig], out_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """``(run_id, state)`` of each run: what a sweep into ``out_dir`` would do with it.

    States: ``finished``, ``diverged``, ``recoverable`` (its result.json is whole),
    ``running elsewhere`` (claimed by another sweep), ``resumable`` (it has a checkpoint), or
    ``to run``.
    """
    out_dir = Path(out_dir)
    rows = {r["run_id"]: r for r in read_results(out_dir)}
    plan = []
    for cfg in configs:
        run_id = cfg.run_id()
        run_dir = out_dir / "runs" / run_id
        if run_id in rows:
            state = "diverged" if rows[run_id].get("status") == DIVERGED else "finished"
        elif _read_result(run_dir / "result.json") is not None:
            state = "recoverable"
        elif is_claimed(run_dir):
            state = "running elsewhere"
        elif (run_dir / CHECKPOINT_NAME).is_file():
            state = "resumable"
        else:
            state = "to run"
        plan.append((run_id, state))
    return plan


def run_sweep(
    configs: list[RunConfig],
    out_dir: str | os.PathLike,
    *,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    tensorboard: str | os.PathLike | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    save_every: int = 1,
    keep_checkpoints: bool = False,
) -> dict[str, int]:
    """Run every config not yet in ``out_dir/results.csv``, appending one row per run.

    All configs are validated before the first run starts, so a typo fails at once rather
    than an hour in. Runs are not strict: options a run ignores were reset by `expand_grid`.

    Under a `torch.distributed` process group every rank calls this with the same configs and
    each run uses all ranks (see `run_experiment`); rank 0 decides which runs to skip or
    recover, tells the others, and alone writes files and logs.

    Args:
        configs: The runs, e.g. from `expand_grid`.
        out_dir: The sweep directory.
        quiet: No progress bars.
        log: Where the one line per finished run goes (default: nowhere).
        tensorboard: If given, each run logs to ``tensorboard/<run_id>``.
        on_result: Called on rank 0 with the result dict of each run run now (not of runs
            skipped or recovered), after its row is written; e.g.
            `curvprune.experiments.loggers.log_wandb`.
        save_every: Each run checkpoints into ``runs/<id>/`` every this many epochs (0:
            never); an interrupted run resumes from its checkpoint.
        keep_checkpoints: Keep each run's checkpoint after it finishes.

    Returns:
        Counts ``{"total", "done", "skipped", "recovered", "diverged", "busy"}``; ``busy``
        runs were being computed by another sweep into the same folder.
    """
    out_dir = Path(out_dir)
    main = launch.is_main()
    log = (log or (lambda msg: None)) if main else (lambda msg: None)
    for cfg in configs:
        cfg.validate(strict=False)
    if main:
        check_out_dir(out_dir)
    finished = {row.get("run_id") for row in read_results(out_dir)} if main else set()
    counts = dict.fromkeys(("done", "skipped", "recovered", "diverged", "busy"), 0)
    counts["total"] = len(configs)
    for index, cfg in enumerate(configs, start=1):
        run_id = cfg.run_id()
        run_dir = out_dir / "runs" / run_id
        claim = claim_run(run_dir) if main and run_id not in finished else _unclaimed()
        with claim as mine:
            action, result = "skip", None
            if main and run_id not in finished:
                action, result = _next_action(out_dir, run_id, mine)
            # Rank 0 alone reads the directory; every rank must take part in the same runs.
            action = launch.broadcast_object(action if main else None)
            where = f"[{index}/{len(configs)}] {run_id}"
            if action in ("skip", "busy"):
                counts["skipped" if action == "skip" else "busy"] += 1
                if action == "busy":
                    log(f"{where}: running in another sweep; left to it")
                continue
            if action == "recover":
                counts["recovered"] += 1
                log(f"{where}: recovered from {run_dir / 'result.json'}")
            else:
                start = time.perf_counter()
                board = None if tensorboard is None else str(Path(tensorboard) / run_id)
                result = _compute(cfg, run_dir, quiet, board, save_every, keep_checkpoints)
                counts["diverged" if result.get("status") == DIVERGED else "done"] += 1
                log(f"{where}: {_outcome(result)} ({time.perf_counter() - start:.1f} s)")
            if main:
                _append_row(out_dir, result_row(result))
                if on_result is not None and action == "run":
                    on_result(result)
        finished.add(run_id)
    return counts


def _compute(
    cfg: RunConfig,
    run_dir: Path,
    quiet: bool,
    tensorboard: str | None,
    save_every: int,
    keep_checkpoints: bool,
) -> dict[str, Any]:
    """Run one config (resuming from its checkpoint); a diverged run's result on divergence."""
    try:
        return run_experiment(
            cfg,
            out_dir=run_dir,
            quiet=quiet,
            strict=False,
            log=_logger.debug,  # one line per run from the sweep; the run's own lines with -v
            tensorboard=tensorboard,
            save_every=save_every,
            resume=True,
            keep_checkpoints=keep_checkpoints,
        )
    except Diverged as err:
        result = diverged_result(cfg, err)
        if launch.is_main():
            atomic_write_json(run_dir / "result.json", result)
        return result


def _unclaimed() -> contextlib.AbstractContextManager[bool]:
    return contextlib.nullcontext(True)


def _next_action(out_dir: Path, run_id: str, mine: bool) -> tuple[str, dict[str, Any] | None]:
    """``skip``, ``busy``, ``recover`` (with the result) or ``run``, for a run not yet seen."""
    if not mine:
        return "busy", None
    # Another sweep may have finished it since we read the table: read it again.
    if any(r["run_id"] == run_id for r in read_results(out_dir)):
        return "skip", None
    result = _read_result(out_dir / "runs" / run_id / "result.json")
    return ("recover", result) if result is not None else ("run", None)


def _outcome(result: Mapping[str, Any]) -> str:
    if result.get("status") == DIVERGED:
        return f"diverged: {result['error']}"
    reached = (
        f"MACs kept {result['macs_kept']:.4f}"
        if result.get("structured")
        else f"sparsity {result['actual_sparsity']:.4f}"
    )
    return f"test accuracy {result['test_accuracy']:.4f} at {reached}"


def diverged_result(cfg: RunConfig, err: Exception) -> dict[str, Any]:
    """The result dict of a run stopped by a non-finite loss: its options, no accuracy."""
    return {
        **cfg.result_fields(),
        "channel_sparsity": cfg.channel_sparsity,
        "macs_target": cfg.macs_target,
        "test_accuracy": None,
        "status": DIVERGED,
        "error": str(err),
        "config": cfg.to_dict(),
    }


def _read_result(path: Path) -> dict[str, Any] | None:
    """A finished run's result.json, or None if absent or unreadable (then it is re-run)."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and "test_accuracy" in result else None


_logger = logging.getLogger("curvprune")
