"""The runner: the state that one run's steps share (data, model, device, timers, logging).

`Run` loads the data and builds the model for a `RunConfig`, then offers the steps that the
regimes (`curvprune.experiments.regimes`) put together: train, evaluate, score and prune
(per weight or per channel), re-estimate BatchNorm, load or pretrain, and report where the run
executed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from curvprune._core import distributed
from curvprune._core.memory import memory_baseline, peak_memory_since
from curvprune._core.params import Excluding, prunable_weights
from curvprune._core.state import modes_kept
from curvprune.checkpoint import load_checkpoint
from curvprune.errors import InvalidArgument
from curvprune.experiments import launch
from curvprune.experiments.config import MAX_LAYER_SPARSITY, RunConfig
from curvprune.training import (
    Trainer,
    autocast_dtype,
    evaluate,
    open_tensorboard,
    progress_bar,
    seed_everything,
)

__all__ = ["LATENCY_BATCH_SIZES", "Run", "weight_sizes"]

#: Batch sizes at which structured runs time the dense and the pruned model.
LATENCY_BATCH_SIZES = (1, 64)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidArgument(message)


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


class Run:
    """State shared by the steps of one run: data, model, device, timers, logging.

    Under a `torch.distributed` process group of K ranks, each rank loads a disjoint shard of
    the training set (``batch_size / K`` samples per step, so ``--batch-size`` is the global
    batch), takes every K-th scoring batch and every K-th test sample, and trains through
    `DistributedDataParallel`; only rank 0 logs, shows progress bars and writes files.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        quiet: bool,
        tensorboard: str | None,
        log: Callable | None,
        checkpoints: Any = None,
    ) -> None:
        from curvprune.data import load_data
        from curvprune.models import build_model

        self.cfg = cfg
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.show_progress = not quiet and self.main  # progress bars
        if not self.main:
            self.log = lambda msg: None
        else:
            self.log = log or ((lambda msg: None) if quiet else _logger.info)
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
            val_split=cfg.val_split,
            num_workers=cfg.workers,
            rank=self.rank,
            world_size=self.world,
        )
        self.test = launch.shard_eval(self.data.test)
        self.val = None if self.data.val is None else launch.shard_eval(self.data.val)
        #: Weights of the best validation epoch (`curvprune.experiments.selection`), or None.
        self.best_state: dict[str, torch.Tensor] | None = None
        info = self.data.info
        torch.manual_seed(cfg.seed)
        self.model = build_model(
            cfg.model,
            in_channels=info.in_channels,
            num_classes=info.num_classes,
            image_size=info.image_size,
            **({"pretrained": True} if cfg.pretrained else {}),
        ).to(self.device)
        #: What ``--exclude`` leaves prunable; its patterns are checked now, before any data pass.
        self.prunable = Excluding(cfg.exclude) if cfg.exclude else None
        if self.prunable is not None:
            prunable_weights(self.model, self.prunable)
        self.writer = open_tensorboard(tensorboard) if tensorboard and self.main else None
        self.timings = {"score_s": 0.0, "train_s": 0.0, "pretrain_s": 0.0, "eval_s": 0.0}
        self._score_batches: list | None = None
        self._wrapped: tuple[torch.nn.Module, torch.nn.Module] | None = None
        #: What the regime has done so far (JSON-ready), saved in checkpoints for resuming.
        self.progress: dict[str, Any] = {}
        #: A `curvprune.experiments.resume.Checkpointer`, or None: no checkpoints.
        self.checkpoints = checkpoints
        if checkpoints is not None:
            checkpoints.restore_run(self)

    def training_model(self) -> torch.nn.Module:
        """The model as the training loop sees it: DDP-wrapped (once per model) with ranks."""
        if self._wrapped is None or self._wrapped[0] is not self.model:
            self._wrapped = (self.model, launch.ddp(self.model, self.device))
        return self._wrapped[1]

    def trainer(self, epochs: float, tag: str = "train") -> Trainer:
        """A `Trainer` over this run's data with the run's optimizer options."""
        cfg = self.cfg
        trainer = Trainer(
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
            progress=self.show_progress,
            writer=self.writer,
            tag=tag,
            autocast=self.autocast,
        )
        if self.checkpoints is not None:
            self.checkpoints.attach(self, trainer)
        return trainer

    def train(self, trainer: Trainer, until: float | None = None, key: str = "train_s") -> None:
        """Train to epoch `until` (default: the end), timed under ``timings[key]``."""
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
        """Test accuracy over the whole test set (all ranks), logged as `what`."""
        start = time.perf_counter()
        result = evaluate(
            self.model,
            self.test,
            device=self.device,
            progress=self.show_progress,
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
        cfg = self.cfg
        if cfg.score_per_class is not None:
            samples = cfg.score_per_class * self.data.info.num_classes
            what = f"--score-per-class {cfg.score_per_class}"
        else:
            # Capped so that the default also works with --train-limit or a tiny dataset.
            samples = min(cfg.score_samples, self.data.num_train)
            what = f"--score-samples {samples}"
        size = cfg.scoring_batch_size()
        count = -(-samples // size)
        _check(
            count >= self.world,
            f"{what} in scoring batches of {size} gives {count} scoring batch(es), fewer "
            f"than the {self.world} ranks; score on more samples or lower --score-batch-size",
        )
        return samples

    def score_batches(self, draw: int = 0) -> list:
        """This rank's scoring batches: every K-th of the single-process list, from the r-th.

        `draw` 0 is the run's scoring subset (cached); 1, 2, ... are fresh seeded subsets of the
        same size (`DataBundle.scoring_batches`), for the gradual regime's later steps.
        """
        if draw or self._score_batches is None:
            cfg = self.cfg
            samples = self.check_score_split()
            per_class = cfg.score_per_class
            size = cfg.scoring_batch_size()
            batches = self.data.scoring_batches(
                None if per_class else samples, size, per_class=per_class, draw=draw
            )
            fbs = cfg.fisher_batch_size
            if self.world > 1 and fbs and size % fbs:
                self.log(
                    f"  note: --fisher-batch-size {fbs} does not divide the scoring batch "
                    f"{size}, so with {self.world} ranks the Fisher's groups of {fbs} "
                    "samples differ from one process's (see docs/distributed.md)"
                )
            mine = batches[self.rank :: self.world]
            mine = [(x.to(self.device), y.to(self.device)) for x, y in mine]
            if draw:
                return mine
            self._score_batches = mine
        return self._score_batches

    def bn_warmup(self) -> None:
        """Re-estimate BatchNorm statistics over one pass of the training set.

        As the HTS code's warm-up: the training loader (this rank's shard, augmented as in
        training), BatchNorm in train mode, no gradients. Unlike that code's momentum-0.1
        running average, `curvprune.bn_warmup` takes the exact average over the pass. The pass
        leaves training's data order unchanged (the trainer sets each epoch's order itself).
        """
        from curvprune import bn_warmup

        bn_warmup(self.model, self.data.train)

    def prune(self, sparsity: float, draw: int = 0) -> Any:
        """Score (on scoring subset `draw`) and prune to `sparsity` in eval mode.

        Returns the `PruneResult`.
        """
        from curvprune import prune

        cfg = self.cfg
        options = cfg.criterion_options()
        batches = _ProgressBatches(
            self.score_batches(draw), f"score {cfg.criterion}", self.show_progress
        )
        start = time.perf_counter()
        # Scores see the model in eval mode unless --score-mode train (or the criterion's
        # variant) says otherwise: BatchNorm uses its running statistics (the default ones at
        # init unless --bn-warmup re-estimated them, which is the point of that option), and
        # per-sample Fisher gradients are well defined. No autocast: curvature is float32.
        result = prune(
            self.model,
            cfg.criterion,
            batches,
            sparsity=sparsity,
            scope=cfg.scope,
            iterations=cfg.iterations,
            schedule=cfg.schedule,
            prunable=self.prunable,
            mode=cfg.score_mode,
            **options,
        )
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
        from curvprune.pruning.masks import make_permanent
        from curvprune.structured.run import model_cost, structured_run

        make_permanent(self.model)  # a masked checkpoint: its zeros become plain weights
        cfg = self.cfg
        batches = _ProgressBatches(
            self.score_batches(), f"score {cfg.criterion}", self.show_progress
        )
        self.dense_sizes = weight_sizes(self.model)
        start = time.perf_counter()
        was_training = self.model.training
        with modes_kept(self.model):  # scored in eval mode unless --score-mode train
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
                mode=cfg.score_mode,
                **cfg.criterion_options(),
            )
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
        self.progress["structured_pruned"] = True
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
        """Start from ``--checkpoint`` or ``--pretrain-epochs``; return the dense accuracy.

        Done once: a resumed run past this step returns the accuracy it measured.
        """
        if "dense_accuracy" in self.progress:
            return self.progress["dense_accuracy"]
        self.progress["dense_accuracy"] = self._load_or_pretrain()
        return self.progress["dense_accuracy"]

    def _load_or_pretrain(self) -> float | None:
        cfg = self.cfg
        if cfg.checkpoint is not None:
            load_checkpoint(self.model, cfg.checkpoint, expect={"model": cfg.model})
            self.model.to(self.device)
        elif cfg.pretrain_epochs > 0:
            self.train(self.trainer(cfg.pretrain_epochs, tag="pretrain"), key="pretrain_s")
        elif not cfg.pretrained:
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


def weight_sizes(model: torch.nn.Module) -> dict[str, int]:
    """Elements of each prunable weight (Linear and Conv), by name."""
    from curvprune._core.params import prunable_weights

    return {n: w.value().numel() for n, w in prunable_weights(model).items()}


def _over_ranks(stats: Mapping[str, float]) -> tuple[float, float]:
    """Training loss and accuracy of one `Trainer.train_until` call over every rank's samples."""
    n = stats["samples"]
    sums = {"v": torch.tensor([stats["loss"] * n, stats["accuracy"] * n, n], dtype=torch.float64)}
    distributed.sum_dicts(sums)
    loss_sum, correct, seen = sums["v"].tolist()
    return loss_sum / max(seen, 1), correct / max(seen, 1)


_logger = logging.getLogger("curvprune")
