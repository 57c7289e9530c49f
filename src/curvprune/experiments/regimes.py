"""The regimes: when a run prunes relative to training, and the result dict it returns.

`run_experiment` executes one pruning run in one of the regimes of `REGIMES` (``init``,
``early``, ``trained``, ``gradual``); `train_dense` trains without pruning (the ``train``
command). Both return a JSON-ready dict and, given ``out_dir``, write ``out_dir/result.json``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from curvprune._core.state import modes_kept
from curvprune._version import __version__
from curvprune.checkpoint import save_checkpoint
from curvprune.errors import Diverged
from curvprune.experiments import launch
from curvprune.experiments.config import REGIMES, RunConfig
from curvprune.experiments.files import atomic_write_json, check_out_dir, refuse_overwrite
from curvprune.experiments.resume import Checkpointer
from curvprune.experiments.runner import Run, weight_sizes
from curvprune.experiments.selection import BestEpoch
from curvprune.pruning.gradual import GradualPruner

__all__ = ["REGIMES", "run_experiment", "train_dense"]


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
    save_every: int = 1,
    resume: bool = False,
    keep_checkpoints: bool = False,
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
        log: Where progress lines go (default: the ``curvprune`` logger unless ``quiet``).
        strict: Reject options that the regime or criterion would ignore.
        save_every: With ``out_dir``, write a resumable checkpoint every this many epochs
            (`curvprune.experiments.resume`); 0 never.
        resume: Continue from ``out_dir``'s checkpoint if there is one.
        keep_checkpoints: Keep the checkpoint after the run finishes.

    Raises:
        Diverged: A non-finite training loss (naming the epoch and learning rate).
    """
    cfg = cfg.validate(strict=strict)
    _check_outputs(cfg, out_dir, save_model)
    wall = time.perf_counter()
    checkpoints = _checkpointer(cfg, out_dir, save_every, resume, keep_checkpoints)
    with _finished_or_diverged(checkpoints):
        run = Run(cfg, quiet=quiet, tensorboard=tensorboard, log=log, checkpoints=checkpoints)
        run.check_score_split()
        result = _run_regime(cfg, run, wall)
        _write(run, out_dir, result, save_model=save_model)
    _log_hparams(run, tensorboard, result)
    return result


def _checkpointer(
    cfg: RunConfig, out_dir: Any, save_every: int, resume: bool, keep: bool
) -> Checkpointer:
    return Checkpointer(
        out_dir,
        run_id=cfg.run_id(),
        save_every=save_every,
        resume=resume,
        keep=keep,
        enabled=launch.is_main(),
    )


@contextlib.contextmanager
def _finished_or_diverged(checkpoints: Checkpointer):
    """Remove the run's checkpoint when it finishes or diverges; keep it on anything else."""
    try:
        yield
    except Diverged:
        checkpoints.finish()
        raise
    checkpoints.finish()


def _check_outputs(cfg: RunConfig, out_dir: Any, save_model: bool) -> None:
    """Before any work: ``out_dir`` is writable and no output overwrites an input."""
    if out_dir is None or not launch.is_main():
        return
    out = check_out_dir(out_dir)
    outputs = [out / "result.json", out / "run-checkpoint.safetensors"]
    if save_model:
        outputs.append(out / "model.safetensors")
    refuse_overwrite([("--checkpoint", cfg.checkpoint), ("--data-dir", cfg.data_dir)], outputs)


def _run_regime(cfg: RunConfig, run: Run, wall: float) -> dict[str, Any]:
    """Prune and train in ``cfg.at``'s regime, resuming where ``run.progress`` says."""
    from curvprune.pruning.masks import sparsity_report
    from curvprune.structured.measure import effective_macs

    progress = run.progress
    run.log(
        f"run {cfg.run_id()}: {cfg.model} on {cfg.dataset}, {cfg.label()} at {cfg.at}, "
        f"{cfg.target_text()}, seed {cfg.seed}, device {run.device}"
    )
    # Each step runs once: a resumed run skips what its checkpoint's progress says is done.
    dense_accuracy = None
    if cfg.at == "init":
        if not progress.get("pruned"):
            if cfg.bn_warmup:
                run.bn_warmup()
            run.prune_to_target()
            progress["pruned"] = True
        trainer = run.trainer(cfg.epochs)
    elif cfg.at == "early":
        trainer = run.trainer(cfg.prune_after + cfg.epochs)
        run.train(trainer, until=cfg.prune_after)
        if not progress.get("pruned"):
            run.prune(cfg.sparsity)
            progress["pruned"] = True
    elif cfg.at == "trained":
        dense_accuracy = run.load_or_pretrain()
        if not progress.get("pruned"):
            run.prune_to_target()
            progress["pruned"] = True
        trainer = run.trainer(cfg.epochs)
    else:  # gradual
        dense_accuracy = run.load_or_pretrain()
        # Each pruning step scores a fresh seeded subset of the training set (the WoodFisher
        # code's gradual pruner does); the first is the one the other regimes use.
        draw = {"step": 0}
        pruner = GradualPruner(
            run.model,
            cfg.criterion,
            lambda t: run.score_batches(draw["step"]),
            sparsity=cfg.sparsity,
            initial_sparsity=cfg.initial_sparsity,
            start=cfg.start_epoch,
            end=cfg.end_epoch,
            frequency=cfg.frequency,
            scope=cfg.scope,
            iterations=cfg.iterations,
            # the run's own prune: progress bars, timings, logs, BN recalibration
            prune_fn=lambda target: run.prune(target, draw=draw["step"]),
            **cfg.criterion_options(),
        )
        pruner.reached = progress.get("reached", 0.0)  # a resumed run skips the steps done
        trainer = run.trainer(pruner.plan[-1].epoch + cfg.epochs)
        for index, step in enumerate(pruner.plan):
            draw["step"] = index
            run.train(trainer, until=step.epoch)
            # Steps that would not raise sparsity (e.g. s_i = 0 at the start) are skipped.
            if pruner.step(step.epoch):
                progress["reached"] = pruner.reached
    if "accuracy_at_prune" not in progress:
        progress["accuracy_at_prune"] = run.evaluate("at prune")
        progress["loss_at_prune"] = run.last_loss
        progress["step_at_prune"] = trainer.step
    accuracy_at_prune = progress["accuracy_at_prune"]
    best = BestEpoch(run)
    best.watch(trainer)  # --val-split: the epochs after pruning compete on validation accuracy
    run.train(trainer)
    # With --epochs 0 the model is unchanged since the last evaluation: don't evaluate twice.
    last_accuracy = None
    if trainer.step > progress["step_at_prune"]:
        test_accuracy = run.evaluate("final")
        if best.restore_best():
            last_accuracy, test_accuracy = test_accuracy, run.evaluate("best validation epoch")
    else:
        test_accuracy, run.last_loss = accuracy_at_prune, progress["loss_at_prune"]
    _check_finite(run.model, trainer)
    launch.check_same_on_all_ranks(run.model)
    if cfg.structured:
        kept = weight_sizes(run.model)
        num_prunable = sum(run.dense_sizes.values())
        layer_density = {n: kept[n] / size for n, size in run.dense_sizes.items()}
        actual = 1 - sum(kept.values()) / num_prunable
        collapsed = [n for n, d in layer_density.items() if d == 0]
    else:
        report = sparsity_report(run.model, run.prunable)
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
        **cfg.result_fields(),
        "score_batch_size": cfg.scoring_batch_size(),
        "score_mode": cfg.scoring_mode(),
        "actual_sparsity": float(actual),
        **(run.cost if cfg.structured else {"macs": macs}),
        "test_accuracy": test_accuracy,
        "test_loss": run.last_loss,
        "accuracy_at_prune": accuracy_at_prune,
        "dense_accuracy": dense_accuracy,
        **_selection(progress, last_accuracy),
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
    return result


def _selection(progress: dict[str, Any], last_accuracy: float | None) -> dict[str, Any]:
    """With a validation split: the best epoch, its validation accuracy, the last epoch's test."""
    if last_accuracy is None:
        return {}
    return {
        "val_accuracy": progress["best_val_accuracy"],
        "best_epoch": progress["best_epoch"],
        "last_epoch_test_accuracy": last_accuracy,
    }


def _write(run: Run, out_dir: Any, result: dict[str, Any], *, save_model: bool) -> None:
    """``result.json`` (strict JSON) and, with ``save_model``, ``model.safetensors``."""
    if out_dir is None or not run.main:
        return
    if save_model and run.cfg.structured:
        _save_structured(run, Path(out_dir) / "model.safetensors")
    elif save_model:
        save_checkpoint(
            run.model,
            Path(out_dir) / "model.safetensors",
            metadata=_checkpoint_metadata(run.cfg, run),
        )
    atomic_write_json(Path(out_dir) / "result.json", result)


def _check_finite(model: torch.nn.Module, trainer: Any) -> None:
    """A model with NaN or infinite weights is never reported or saved."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise Diverged(
                f"training diverged: {name} holds NaN or infinite values after epoch "
                f"{trainer.epoch:.4g} with peak learning rate {trainer.lr:g}; lower --lr"
            )


def _log_hparams(run: Run, tensorboard: str | None, result: dict[str, Any]) -> None:
    """Options and final metrics into TensorBoard's HParams tab (`experiments.loggers`)."""
    if tensorboard and run.main:
        from curvprune.experiments.loggers import log_tensorboard_hparams

        log_tensorboard_hparams(tensorboard, result)


def _save_structured(run: Run, path: Path) -> None:
    """The smaller model itself (`save_pruned`), in eval mode; `load_pruned` rebuilds it."""
    from curvprune.structured import save_pruned

    info = run.data.info
    spec = {
        "model": run.cfg.model,
        "in_channels": info.in_channels,
        "num_classes": info.num_classes,
        "image_size": info.image_size,
    }
    with modes_kept(run.model, eval=True):
        save_pruned(run.model, path, spec=spec)


@_restores_threads
def train_dense(
    cfg: RunConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    tensorboard: str | None = None,
    log: Callable[[str], None] | None = None,
    save_every: int = 1,
    resume: bool = False,
    keep_checkpoints: bool = False,
) -> dict[str, Any]:
    """Train ``cfg.model`` densely for ``cfg.epochs``.

    Writes ``model.safetensors`` and ``result.json`` to ``out_dir`` if given; the checkpoint
    feeds ``--at trained``. ``save_every``, ``resume`` and ``keep_checkpoints`` are those of
    `run_experiment`.
    """
    cfg = cfg.validate(pruning=False)
    _check_outputs(cfg, out_dir, True)
    checkpoints = _checkpointer(cfg, out_dir, save_every, resume, keep_checkpoints)
    with _finished_or_diverged(checkpoints):
        result, run = _train_dense(cfg, quiet, tensorboard, log, checkpoints)
        if out_dir is not None and run.main:
            save_checkpoint(
                run.model,
                Path(out_dir) / "model.safetensors",
                metadata=_checkpoint_metadata(cfg, run),
            )
            atomic_write_json(Path(out_dir) / "result.json", result)
    _log_hparams(run, tensorboard, result)
    return result


def _train_dense(
    cfg: RunConfig, quiet: bool, tensorboard: Any, log: Any, checkpoints: Checkpointer
) -> tuple[dict[str, Any], Run]:
    wall = time.perf_counter()
    run = Run(cfg, quiet=quiet, tensorboard=tensorboard, log=log, checkpoints=checkpoints)
    run.log(
        f"train {cfg.model} on {cfg.dataset} for {cfg.epochs:g} epochs, seed {cfg.seed}, "
        f"device {run.device}"
    )
    trainer = run.trainer(cfg.epochs)
    run.train(trainer)
    _check_finite(run.model, trainer)
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
    return result, run


def _checkpoint_metadata(cfg: RunConfig, run: Run) -> dict[str, str]:
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
