"""Final metrics to TensorBoard's HParams tab and to Weights & Biases (a stand-in module)."""

from __future__ import annotations

import math
import sys
import types

import pytest

from curvprune.cli import main
from curvprune.errors import InvalidArgument
from curvprune.experiments.loggers import (
    final_metrics,
    log_tensorboard_hparams,
    log_wandb,
    require_wandb,
    run_hparams,
)

RESULT = {
    "run_id": "snip-init-s0.9-seed0-abc",
    "label": "snip",
    "test_accuracy": 0.9,
    "accuracy_at_prune": 0.1,
    "dense_accuracy": None,
    "test_loss": math.nan,
    "actual_sparsity": 0.9,
    "num_collapsed": 0,
    "macs": {"dense": 1000, "effective": 100},
    "timings": {"score_s": 0.5, "train_s": 2.0},
    "config": {"criterion": "snip", "sparsity": 0.9, "milestones": [30, 60], "checkpoint": None},
}


def test_hparams_and_metrics_are_flat_scalars():
    assert run_hparams(RESULT) == {
        "criterion": "snip",
        "sparsity": 0.9,
        "milestones": "[30, 60]",
        "checkpoint": "none",
        "label": "snip",
    }
    assert final_metrics(RESULT) == {
        "final/test_accuracy": 0.9,
        "final/accuracy_at_prune": 0.1,
        "final/actual_sparsity": 0.9,
        "final/num_collapsed": 0.0,
        "final/macs_effective_fraction": 0.1,
        "time/score_s": 0.5,
        "time/train_s": 2.0,
    }  # None and NaN left out


class FakeWandb(types.ModuleType):
    """Records what `log_wandb` sends."""

    def __init__(self):
        super().__init__("wandb")
        self.runs = []

    def init(self, **kwargs):
        run = types.SimpleNamespace(kwargs=kwargs, summary={}, finished=False)
        run.finish = lambda: setattr(run, "finished", True)
        self.runs.append(run)
        return run


def test_log_wandb_sends_config_and_summary():
    fake = FakeWandb()
    log_wandb("curvprune-tests", RESULT, group="sweep-dir", wandb=fake)
    (run,) = fake.runs
    assert run.kwargs["project"] == "curvprune-tests" and run.kwargs["group"] == "sweep-dir"
    assert run.kwargs["name"] == RESULT["run_id"]
    assert run.kwargs["config"] == run_hparams(RESULT)
    assert run.summary == final_metrics(RESULT) and run.finished


def test_missing_wandb_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    with pytest.raises(InvalidArgument, match="pip install wandb"):
        require_wandb()
    # The CLI checks before any work: exit 2, one line.
    code = main(["prune", "--wandb", "proj", "--epochs", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--wandb needs the optional 'wandb' package" in err


def test_cli_logs_each_run_to_wandb(monkeypatch, tmp_path, capsys):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    argv = ["--model", "mlp", "--dataset", "digits", "--epochs", "0", "--score-samples", "64",
            "--batch-size", "64", "--quiet", "--wandb", "proj"]  # fmt: skip
    assert main(["prune", "--criterion", "magnitude", *argv]) == 0
    assert main(["sweep", "--criteria", "magnitude,random", "--out", str(tmp_path), *argv]) == 0
    assert main(["sweep", "--criteria", "magnitude,random", "--out", str(tmp_path), *argv]) == 0
    # One prune, two sweep runs; the re-run skips both runs and logs nothing more.
    assert len(fake.runs) == 3 and all(r.finished for r in fake.runs)
    assert [r.kwargs["group"] for r in fake.runs] == [None, str(tmp_path), str(tmp_path)]
    assert fake.runs[1].summary["final/actual_sparsity"] == pytest.approx(0.9, abs=1e-3)
    capsys.readouterr()


def test_tensorboard_hparams_are_written_next_to_the_curves(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_tensorboard_hparams(tmp_path, RESULT)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert "final/test_accuracy" in events.Tags()["scalars"]
    assert events.PluginTagToContent("hparams")  # the HParams tab's experiment and session


def test_runs_log_hparams_with_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from curvprune.experiments.config import RunConfig, run_experiment

    cfg = RunConfig(epochs=0, score_samples=64, batch_size=64, criterion="magnitude")
    run_experiment(cfg, quiet=True, tensorboard=str(tmp_path))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"final/test_accuracy", "final/macs_effective_fraction"} <= set(events.Tags()["scalars"])
