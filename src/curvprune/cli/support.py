"""The CLI's plumbing for long runs: console encoding, logging, checkpoint and sharding flags.

Used by `curvprune.cli.parser` (the flags) and `curvprune.cli.commands` (running them).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from curvprune.experiments import launch

__all__ = [
    "CONTROL_FLAGS",
    "LOG_NAME",
    "add_checkpoint_options",
    "add_sweep_control_options",
    "checkpointing",
    "add_workers_option",
    "logging_for",
    "logging_to",
    "print_plan",
    "safe_console",
    "sweep_counts",
    "sweep_runs",
]

#: Flags that say how to run, checkpoint or resume, not what a run computes.
CONTROL_FLAGS = ("save_every", "resume", "keep_checkpoints", "dry_run", "shard", "max_runs")
#: The log file that ``train``, ``prune`` and ``sweep`` write into ``--out``.
LOG_NAME = "run.log"

logger = logging.getLogger("curvprune")


def safe_console() -> None:
    r"""Never fail on a character the terminal cannot show (θ, ± on an ASCII locale).

    Such characters are written as backslash escapes (``\u03b8``) instead of raising
    `UnicodeEncodeError`.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


@contextlib.contextmanager
def logging_to(out: str | os.PathLike | None, *, verbose: bool, quiet: bool) -> Iterator[None]:
    """Send the ``curvprune`` logger to stderr and, with ``out``, to ``out/run.log``.

    stderr shows INFO lines (DEBUG with ``verbose``, only warnings with ``quiet``); the file
    gets every line from DEBUG up, with times, appended across resumed runs. The handlers are
    removed when the block ends.
    """
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [console]
    if out is not None and Path(out).is_dir():
        try:
            file = logging.FileHandler(Path(out) / LOG_NAME, encoding="utf-8")
        except OSError:
            file = None  # an unwritable --out is reported by the command itself
        if file is not None:
            file.setLevel(logging.DEBUG)
            file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            handlers.append(file)
    previous = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


def _epochs(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_epochs.__name__ = "integer >= 0"


def add_checkpoint_options(p: argparse.ArgumentParser, *, sweep: bool) -> None:
    """The long-run flags: ``--workers``, ``--save-every``, ``--keep-checkpoints``, ``-v``.

    Single runs add ``--resume``; sweeps add `add_sweep_control_options`.
    """
    g = p.add_argument_group("long runs: checkpoints, resuming, workers (docs/robustness.md)")
    add_workers_option(g)
    where = "each run's runs/<id>/" if sweep else "--out"
    g.add_argument(
        "--save-every",
        type=_epochs,
        metavar="E",
        help=f"write a resumable checkpoint (run-checkpoint.safetensors) into {where} every E "
        "epochs; 0 turns it off (default 1)",
    )
    if not sweep:
        g.add_argument(
            "--resume",
            action="store_true",
            help="continue from the checkpoint in --out (same options), bit-identical to an "
            "uninterrupted run on the CPU; without one, start from the beginning",
        )
    g.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep the checkpoint when a run finishes (default: remove it)",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help=f"more log lines on stderr (every line goes to --out/{LOG_NAME} anyway)",
    )
    if sweep:
        add_sweep_control_options(p)


def add_workers_option(g: argparse._ArgumentGroup) -> None:
    """``--workers N``: a run option that changes no result (not in the run id)."""
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="DataLoader worker processes for streamed (image-folder) datasets, kept alive "
        "across epochs; augmentation does not depend on N (default 0)",
    )


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    i, n = int(index), int(count)
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(text)
    return i, n


_shard.__name__ = "shard i/n with 0 <= i < n"


def add_sweep_control_options(p: argparse.ArgumentParser) -> None:
    """``--dry-run``, ``--shard i/n`` and ``--max-runs N``."""
    g = p.add_argument_group("sweep control")
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs with their run ids and states (finished, resumable, to run, ...) "
        "and exit",
    )
    g.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="run only every N-th run, from the I-th (0-based), e.g. --shard "
        "$SLURM_ARRAY_TASK_ID/4; shards may share one --out",
    )
    g.add_argument(
        "--max-runs",
        type=int,
        metavar="N",
        help="allow grids of up to N runs (default 10000; the grid is counted before expanding)",
    )


def checkpointing(args: argparse.Namespace, *, sweep: bool = False) -> dict[str, Any]:
    """The run functions' checkpoint keywords from the flags (default: every epoch)."""
    options = {
        "save_every": getattr(args, "save_every", 1),
        "keep_checkpoints": getattr(args, "keep_checkpoints", False),
    }
    return options if sweep else {**options, "resume": getattr(args, "resume", False)}


def logging_for(
    args: argparse.Namespace, out: Any = None, *, quiet: bool | None = None
) -> contextlib.AbstractContextManager:
    """`logging_to` from the flags; ``out`` is checked first (a writable folder).

    ``quiet`` overrides ``--quiet`` (a sweep file's ``quiet: true``).
    """
    main = launch.env_rank() == 0
    if out is not None and main:
        from curvprune.experiments.files import check_out_dir

        check_out_dir(out)
    return logging_to(
        out if main else None,
        verbose=getattr(args, "verbose", False),
        quiet=getattr(args, "quiet", False) if quiet is None else quiet,
    )


def sweep_counts(counts: Mapping[str, int], out: str | os.PathLike) -> str:
    """The line after a sweep: how many runs ran, were skipped, recovered, diverged, busy."""
    others = "".join(
        f", {counts[k]} {text}"
        for k, text in (("diverged", "diverged"), ("busy", "running in another sweep"))
        if counts.get(k)
    )
    return (
        f"\n{counts['total']} runs: {counts['done']} run now, {counts['skipped']} already "
        f"finished, {counts['recovered']} recovered{others}; results in "
        f"{Path(out) / 'results.csv'}"
    )


def sweep_runs(spec: Mapping[str, Any], cli: Mapping[str, Any], *, quiet: bool) -> list:
    """The runs of a sweep's grid: counted (and printed) first, limited, sharded, validated."""
    from curvprune.experiments import sweep

    size, axes = sweep.grid_size(spec)
    if launch.env_rank() == 0 and (not quiet or cli.get("dry_run")):
        print(f"grid: {size} runs ({axes})", file=sys.stderr)
    configs = sweep.expand_grid(spec, max_runs=cli.get("max_runs", sweep.MAX_RUNS))
    if "shard" in cli:
        configs = sweep.shard(configs, *cli["shard"])
    for cfg in configs:
        cfg.validate(strict=False)
    return configs


def print_plan(configs: list, out: str | os.PathLike) -> None:
    """``--dry-run``: one line per run, its id and state, on stdout."""
    from curvprune.experiments import sweep

    if launch.env_rank() == 0:
        for run_id, state in sweep.plan_sweep(configs, out):
            print(f"{run_id}  {state}")
