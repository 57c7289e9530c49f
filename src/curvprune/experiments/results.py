"""A sweep folder's shared files: ``results.csv`` read with checks, a lock, run claims.

Several sweeps may write into one folder at once (``sweep --shard i/n`` on a Slurm array, or
the same command started twice). Every read-modify-write of ``results.csv`` holds an exclusive
`fcntl.flock` on ``DIR/.curvprune.lock``; a run being computed is claimed by holding a lock on
``DIR/runs/<id>/.claim`` for its duration, so another sweep skips it. The kernel drops both
locks when a process dies, so a killed sweep leaves no stale claim behind.

Rows are checked on every read (field count, numbers that parse, accuracies in [0, 1]); a bad
row is rebuilt from ``runs/<id>/result.json`` when that file is whole, and otherwise reading
stops with an error naming the file and line. Rows are de-duplicated by run id (the first
one wins).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from curvprune.errors import DataError

__all__ = ["RESULTS_NAME", "claim_run", "locked", "parse_results"]

RESULTS_NAME = "results.csv"
_LOCK_NAME = ".curvprune.lock"
_CLAIM_NAME = ".claim"
#: Columns that must parse as numbers where they are not empty.
_NUMERIC = (
    "sparsity", "actual_sparsity", "channel_sparsity", "macs_target", "macs_kept",
    "params_kept", "seed", "epochs", "test_accuracy", "accuracy_at_prune", "dense_accuracy",
    "test_loss", "num_collapsed", "score_s", "train_s", "pretrain_s", "eval_s", "total_s",
)  # fmt: skip
_FRACTIONS = ("test_accuracy", "accuracy_at_prune", "dense_accuracy")
#: Value of the ``status`` column of a run that stopped on a non-finite loss.
DIVERGED = "diverged"


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if needed); yields whether it was taken."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking (documented in docs/robustness.md)
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the sweep folder's lock: for a read-modify-write of ``results.csv``."""
    with _flock(Path(out_dir) / _LOCK_NAME):
        yield


@contextlib.contextmanager
def claim_run(run_dir: str | os.PathLike) -> Iterator[bool]:
    """Claim a run for this process while the block runs; yields False if another has it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _flock(run_dir / _CLAIM_NAME, blocking=False) as taken:
        yield taken


def _problem(row: Mapping[str, str]) -> str | None:
    """What is wrong with a row, or None."""
    if not row.get("run_id"):
        return "no run_id"
    for column in _NUMERIC:
        text = row.get(column)
        if text in (None, ""):
            continue
        try:
            value = float(text)
        except ValueError:
            return f"{column} {text!r} is not a number"
        if column in _FRACTIONS and not 0 <= value <= 1:
            return f"{column} {text} is not in [0, 1]"
        if math.isnan(value):
            return f"{column} is NaN"
    if row.get("status") != DIVERGED and row.get("test_accuracy") in (None, ""):
        return "no test_accuracy"
    return None


def parse_results(
    path: str | os.PathLike, rebuild: Callable[[str], Mapping[str, Any] | None]
) -> list[dict[str, str]]:
    """Rows of a ``results.csv``, checked, repaired where possible, de-duplicated by run id.

    Args:
        path: The file ([] if it does not exist).
        rebuild: ``rebuild(run_id)`` returns a row from the run's own ``result.json``, or None.

    Raises:
        DataError: Not UTF-8, NUL bytes or broken quoting, no header, or a bad row that
            cannot be rebuilt; the message names the file and line.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 text; fix or delete that line") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise DataError(f"{path} line {line}: NUL bytes; fix or delete that line")
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise DataError(f"{path}: not a CSV table ({err})") from None
    if not lines:
        return []
    header = lines[0]
    if "run_id" not in header or "test_accuracy" not in header:
        raise DataError(
            f"{path} line 1: no header row with run_id and test_accuracy (got "
            f"{','.join(header)[:80]!r}); a sweep's results.csv starts with its header"
        )
    rows: dict[str, dict[str, str]] = {}
    for number, fields in enumerate(lines[1:], start=2):
        if not fields:
            continue
        row = dict(zip(header, fields, strict=False))
        problem = (
            f"{len(fields)} fields, the header has {len(header)}"
            if len(fields) != len(header)
            else _problem(row)
        )
        if problem is not None:
            run_id = row.get("run_id", "")
            fixed = rebuild(run_id) if run_id and "/" not in run_id else None
            if fixed is None:
                raise DataError(
                    f"{path} line {number}: {problem}, and no whole runs/{run_id or '?'}/"
                    "result.json to rebuild it from; fix or delete that line"
                )
            row = {k: "" if v is None else str(v) for k, v in fixed.items()}
        rows.setdefault(row["run_id"], row)
    return list(rows.values())


def is_claimed(run_dir: str | os.PathLike) -> bool:
    """True if another process holds the run's claim (without creating anything)."""
    path = Path(run_dir) / _CLAIM_NAME
    if not path.is_file():
        return False
    with _flock(path, blocking=False) as taken:
        return not taken
