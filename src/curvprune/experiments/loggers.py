"""A finished run's options and final metrics, for TensorBoard's HParams tab and W&B.

The curves (loss, accuracy per step) go to TensorBoard while a run trains (`Trainer`'s
writer); what this module adds is one record per run: its options (``result["config"]`` plus
the label) as hyper-parameters and its final numbers as metrics, so runs of a sweep can be
compared side by side. Weights & Biases is optional and imported only when asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from curvprune.errors import InvalidArgument

__all__ = [
    "FINAL_METRICS",
    "final_metrics",
    "log_tensorboard_hparams",
    "log_wandb",
    "require_wandb",
    "run_hparams",
]

#: Scalar result fields reported as final metrics (those a result has), as ``final/<name>``.
FINAL_METRICS = (
    "test_accuracy",
    "accuracy_at_prune",
    "dense_accuracy",
    "test_loss",
    "actual_sparsity",
    "num_collapsed",
    "macs_kept",
    "params_kept",
    "peak_memory_mb",
)


def run_hparams(result: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The run's options as hyper-parameters: ``result["config"]`` and ``label``.

    TensorBoard takes only bool, int, float and str values: None becomes ``"none"`` and
    lists (``milestones``) their text, so every run of a sweep has the same keys.
    """
    config = dict(result.get("config", {}))
    if "label" in result:
        config["label"] = result["label"]
    hparams: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if value is None:
            hparams[key] = "none"
        elif isinstance(value, bool | int | float | str):
            hparams[key] = value
        else:
            hparams[key] = str(value)
    return hparams


def final_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a result dict to log, by name.

    ``final/<field>`` for each of `FINAL_METRICS` the result has (not None, not NaN),
    ``final/macs_effective_fraction`` for masked runs, and ``time/<timing>`` in seconds.
    """
    metrics = {}
    for key in FINAL_METRICS:
        value = result.get(key)
        if isinstance(value, bool | int | float) and not math.isnan(float(value)):
            metrics[f"final/{key}"] = float(value)
    macs = result.get("macs", {})
    if macs.get("effective") is not None and macs.get("dense"):
        metrics["final/macs_effective_fraction"] = macs["effective"] / macs["dense"]
    for key, value in result.get("timings", {}).items():
        metrics[f"time/{key}"] = float(value)
    return metrics


def log_tensorboard_hparams(logdir: str | os.PathLike, result: Mapping[str, Any]) -> None:
    """Write the run's hyper-parameters and final metrics (``add_hparams``) into `logdir`.

    Written into `logdir` itself (``run_name="."``), next to the run's training curves, so
    TensorBoard's HParams tab links each row to its curves.

    Raises:
        InvalidArgument: The optional ``tensorboard`` package is not installed.
    """
    from curvprune.training import open_tensorboard

    writer = open_tensorboard(str(logdir))
    try:
        writer.add_hparams(run_hparams(result), final_metrics(result), run_name=".")
    finally:
        writer.close()


def require_wandb() -> Any:
    """The ``wandb`` module, or `InvalidArgument` saying how to install it."""
    try:
        import wandb
    except ImportError as err:
        raise InvalidArgument(
            "--wandb needs the optional 'wandb' package: pip install wandb (then `wandb login`, "
            "or WANDB_MODE=offline to log without an account)"
        ) from err
    return wandb


def log_wandb(
    project: str,
    result: Mapping[str, Any],
    *,
    group: str | None = None,
    wandb: Any = None,
) -> None:
    """One W&B run per result: options as its config, final metrics as its summary.

    Args:
        project: The W&B project.
        result: A result dict of `run_experiment` or `train_dense`.
        group: Optional W&B group, e.g. the sweep directory, to keep a sweep's runs together.
        wandb: The ``wandb`` module (default: imported, see `require_wandb`); tests pass a
            stand-in.
    """
    wandb = wandb if wandb is not None else require_wandb()
    run = wandb.init(
        project=project,
        name=result.get("run_id") or result.get("label"),
        group=group,
        config=run_hparams(result),
        reinit=True,
    )
    try:
        run.summary.update(final_metrics(result))
    finally:
        run.finish()
