"""Epoch-end run checkpoints: interrupt a run anywhere, resume it, get the very same bits."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import curvprune.training as training
from curvprune.errors import CheckpointError
from curvprune.experiments.config import RunConfig
from curvprune.experiments.regimes import run_experiment, train_dense
from curvprune.experiments.resume import CHECKPOINT_NAME
from curvprune.experiments.sweep import read_results, run_sweep

FAST = {"epochs": 3, "batch_size": 64, "threads": 1, "device": "cpu", "score_samples": 128}
#: One case per regime, each with 3 epochs of training after pruning (and 2 of pretraining).
REGIMES = {
    "init": {},
    "early": {"prune_after": 1.0},
    "trained": {"pretrain_epochs": 2.0},
    "gradual": {"start_epoch": 0.0, "end_epoch": 2.0, "frequency": 0.5},
}


class Interrupted(Exception):
    """Stands for a kill: raised right after the n-th epoch-end checkpoint."""


@pytest.fixture
def interrupt_after(monkeypatch):
    """``interrupt_after(n)``: the next run stops right after its n-th epoch-end hook."""

    def arm(n):
        seen = {"epochs": 0}
        original = training.Trainer.train_until

        def train_until(self, epoch):
            hook = self.on_epoch_end
            if hook is not None and not getattr(hook, "armed", False):

                def interrupting(trainer):
                    hook(trainer)
                    seen["epochs"] += 1
                    if seen["epochs"] == n:
                        raise Interrupted

                interrupting.armed = True
                self.on_epoch_end = interrupting
            return original(self, epoch)

        monkeypatch.setattr(training.Trainer, "train_until", train_until)
        return lambda: monkeypatch.setattr(training.Trainer, "train_until", original)

    return arm


def _same_files(a, b):
    left, right = load_file(a), load_file(b)
    return set(left) == set(right) and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize("at", list(REGIMES))
@pytest.mark.parametrize("stop_after", [1, 2])
def test_resumed_run_is_bit_identical(tmp_path, interrupt_after, at, stop_after):
    cfg = RunConfig(at=at, **FAST, **REGIMES[at])
    reference = run_experiment(cfg, out_dir=tmp_path / "ref", save_model=True, quiet=True)
    assert not (tmp_path / "ref" / CHECKPOINT_NAME).exists()  # removed when finished

    disarm = interrupt_after(stop_after)
    with pytest.raises(Interrupted):
        run_experiment(cfg, out_dir=tmp_path / "cut", save_model=True, quiet=True)
    disarm()
    assert (tmp_path / "cut" / CHECKPOINT_NAME).is_file()
    assert not (tmp_path / "cut" / "result.json").exists()

    resumed = run_experiment(
        cfg, out_dir=tmp_path / "cut", save_model=True, quiet=True, resume=True
    )
    assert _same_files(
        tmp_path / "ref" / "model.safetensors", tmp_path / "cut" / "model.safetensors"
    )
    for key in (
        "test_accuracy",
        "test_loss",
        "accuracy_at_prune",
        "dense_accuracy",
        "layer_density",
    ):
        assert resumed[key] == reference[key], key
    assert not (tmp_path / "cut" / CHECKPOINT_NAME).exists()


def test_train_resumes_and_keeps_the_checkpoint_when_asked(tmp_path, interrupt_after):
    cfg = RunConfig(**FAST)
    train_dense(cfg, out_dir=tmp_path / "ref", quiet=True, keep_checkpoints=True)
    kept = tmp_path / "ref" / CHECKPOINT_NAME
    with safe_open(str(kept), framework="pt") as f:  # one file, tensors and JSON: no pickle
        state = json.loads(f.metadata()["state"])
        keys = set(f.keys())
    assert state["trainer"]["step"] == state["trainer"]["total_steps"]
    assert {"rng.torch", "rng.numpy", "rng.python"} <= keys
    assert any(k.startswith("optimizer.") and k.endswith("momentum_buffer") for k in keys)

    disarm = interrupt_after(2)
    with pytest.raises(Interrupted):
        train_dense(cfg, out_dir=tmp_path / "cut", quiet=True)
    disarm()
    train_dense(cfg, out_dir=tmp_path / "cut", quiet=True, resume=True)
    assert _same_files(
        tmp_path / "ref" / "model.safetensors", tmp_path / "cut" / "model.safetensors"
    )


def test_save_every_zero_writes_no_checkpoint(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(training.Trainer, "state_dict", lambda self: saved.append(1))
    cfg = RunConfig(**FAST)
    run_experiment(cfg, out_dir=tmp_path, quiet=True, save_every=0, keep_checkpoints=True)
    assert not saved and not (tmp_path / CHECKPOINT_NAME).exists()


def test_a_checkpoint_of_other_options_is_refused(tmp_path, interrupt_after):
    disarm = interrupt_after(1)
    with pytest.raises(Interrupted):
        run_experiment(RunConfig(**FAST), out_dir=tmp_path, quiet=True)
    disarm()
    other = RunConfig(**{**FAST, "lr": 0.05})
    with pytest.raises(CheckpointError, match="belongs to run magnitude-init"):
        run_experiment(other, out_dir=tmp_path, quiet=True, resume=True)


def test_sweep_resumes_an_interrupted_run_from_its_checkpoint(tmp_path, interrupt_after, caplog):
    configs = [RunConfig(**FAST, sparsity=0.5), RunConfig(**FAST, sparsity=0.8)]
    reference = run_sweep(configs, tmp_path / "ref", quiet=True)
    disarm = interrupt_after(2)
    with pytest.raises(Interrupted):
        run_sweep(configs, tmp_path / "cut", quiet=True)
    disarm()
    run_dir = tmp_path / "cut" / "runs" / configs[0].run_id()
    assert (run_dir / CHECKPOINT_NAME).is_file()
    with caplog.at_level("DEBUG", logger="curvprune"):
        counts = run_sweep(configs, tmp_path / "cut", quiet=True)
    assert "resuming run" in caplog.text and "train epoch 2" in caplog.text
    assert counts["done"] == 2 == reference["done"]
    ref = {r["run_id"]: r["test_accuracy"] for r in read_results(tmp_path / "ref")}
    cut = {r["run_id"]: r["test_accuracy"] for r in read_results(tmp_path / "cut")}
    assert ref == cut
    assert not (run_dir / CHECKPOINT_NAME).exists()


@pytest.mark.slow
def test_cli_resume_after_sigkill(tmp_path):
    """A real kill: SIGKILL once the first checkpoint exists, then the same command + --resume."""
    argv = [
        sys.executable, "-m", "curvprune", "prune", "--epochs", "5", "--batch-size", "16",
        "--threads", "1", "--device", "cpu", "--quiet", "--seed", "7",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ref = subprocess.run([*argv, "--out", tmp_path / "ref"], env=env, capture_output=True)
    assert ref.returncode == 0, ref.stderr.decode()
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*argv, "--out", cut], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (cut / CHECKPOINT_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "result.json").exists(), "the run finished before the kill"
    done = subprocess.run([*argv, "--out", cut, "--resume"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert _same_files(tmp_path / "ref" / "model.safetensors", cut / "model.safetensors")
    results = [json.loads((d / "result.json").read_text()) for d in (tmp_path / "ref", cut)]
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"]
    assert "resuming run" in (cut / "run.log").read_text()


@pytest.mark.parametrize("stop_after", [1, 2])
def test_the_best_validation_epoch_survives_a_resume(tmp_path, interrupt_after, stop_after):
    cfg = RunConfig(val_split=0.2, lr=0.5, **FAST)
    reference = run_experiment(cfg, out_dir=tmp_path / "ref", save_model=True, quiet=True)
    disarm = interrupt_after(stop_after)
    with pytest.raises(Interrupted):
        run_experiment(cfg, out_dir=tmp_path / "cut", save_model=True, quiet=True)
    disarm()
    resumed = run_experiment(
        cfg, out_dir=tmp_path / "cut", save_model=True, quiet=True, resume=True
    )
    assert _same_files(
        tmp_path / "ref" / "model.safetensors", tmp_path / "cut" / "model.safetensors"
    )
    for key in ("test_accuracy", "val_accuracy", "best_epoch", "last_epoch_test_accuracy"):
        assert resumed[key] == reference[key], key
