"""The four pruning regimes on a small case: the MLP on the embedded digits data."""

import pytest
import torch

import curvprune
from curvprune.checkpoint import load_checkpoint
from curvprune.errors import CheckpointError, InvalidArgument
from curvprune.experiments.config import RunConfig
from curvprune.experiments.regimes import run_experiment, train_dense
from curvprune.models import build_model

# Small and fast: 1437 digits, 64 per batch, a few hundred scoring samples, one thread.
FAST = {
    "model": "mlp",
    "dataset": "digits",
    "batch_size": 64,
    "score_samples": 256,
    "lr": 0.05,
    "threads": 1,
    "device": "cpu",
}

REQUIRED_FIELDS = (
    "model", "dataset", "criterion", "sparsity", "actual_sparsity", "test_accuracy",
    "accuracy_at_prune", "seed", "layer_density", "collapsed_layers", "timings", "config",
)  # fmt: skip


def cfg(**kwargs):
    return RunConfig(**{**FAST, **kwargs})


@pytest.fixture
def prune_calls(monkeypatch):
    """Record the sparsity of every `curvprune.prune` call and the model's training state."""
    calls = []
    real = curvprune.prune

    def recording(model, criterion, batches, *, sparsity, **kwargs):
        calls.append(sparsity)
        return real(model, criterion, batches, sparsity=sparsity, **kwargs)

    monkeypatch.setattr(curvprune, "prune", recording)
    return calls


def check_result(result, config):
    for key in REQUIRED_FIELDS:
        assert key in result, key
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert 0.0 <= result["accuracy_at_prune"] <= 1.0
    assert result["actual_sparsity"] == pytest.approx(config.sparsity, abs=1e-3)
    assert set(result["layer_density"]) == {"1.weight", "3.weight", "5.weight"}
    assert result["timings"]["score_s"] >= 0 and result["timings"]["train_s"] >= 0
    assert result["config"] == config.to_dict()
    # Relative to the run's start: a small MLP's own peak, not the torch import's ~700 MB.
    assert 0 <= result["peak_memory_mb"] < 300 and result["world_size"] == 1
    # Per sample; in an MLP one MAC per weight, so the effective MACs are the kept weights.
    assert result["macs"]["dense"] == 64 * 128 + 128 * 64 + 64 * 10
    kept = (1 - result["actual_sparsity"]) * result["macs"]["dense"]
    assert result["macs"]["effective"] == pytest.approx(kept, abs=1)
    assert result["precision"] == "float32" and result["backend"] is None


def test_init_runs_bn_warmup_before_scoring(monkeypatch, prune_calls):
    order = []
    real_warmup = curvprune.bn_warmup
    monkeypatch.setattr(
        curvprune,
        "bn_warmup",
        lambda m, b: (order.append(("warmup", len(prune_calls))), real_warmup(m, b))[1],
    )
    config = cfg(criterion="snip", sparsity=0.8, at="init", bn_warmup=True, epochs=2)
    result = run_experiment(config, quiet=True)
    check_result(result, config)
    assert order == [("warmup", 0)] and prune_calls == [0.8]
    assert result["test_accuracy"] > 0.3  # 2 epochs: far above chance (0.1)


def test_early_prunes_after_a_fraction_of_an_epoch(prune_calls):
    config = cfg(criterion="magnitude", sparsity=0.7, at="early", prune_after=0.5, epochs=1)
    result = run_experiment(config, quiet=True)
    check_result(result, config)
    assert prune_calls == [0.7]
    assert result["prune_after"] == 0.5
    # Half an epoch of training happened before pruning: far better than chance.
    assert result["accuracy_at_prune"] > 0.3


def test_trained_from_pretraining_and_from_a_checkpoint(tmp_path, prune_calls):
    dense = train_dense(cfg(epochs=3), out_dir=tmp_path / "dense", quiet=True)
    checkpoint = tmp_path / "dense" / "model.safetensors"
    assert checkpoint.is_file() and dense["test_accuracy"] > 0.8

    config = cfg(criterion="magnitude", sparsity=0.5, at="trained", checkpoint=str(checkpoint),
                 epochs=0)  # fmt: skip
    result = run_experiment(config, out_dir=tmp_path / "pruned", save_model=True, quiet=True)
    check_result(result, config)
    assert result["dense_accuracy"] == pytest.approx(dense["test_accuracy"])
    assert result["test_accuracy"] == result["accuracy_at_prune"]  # --epochs 0
    assert result["accuracy_at_prune"] > 0.5  # 50% magnitude pruning of a trained MLP is mild

    # The pruned model's checkpoint comes back pruned and scores the same.
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    load_checkpoint(model, tmp_path / "pruned" / "model.safetensors", expect={"model": "mlp"})
    kept = sum(int(b.sum()) for n, b in model.named_buffers() if n.endswith("weight_mask"))
    assert kept == round(0.5 * result["num_prunable"])

    pretrained = cfg(criterion="fisher", sparsity=0.6, at="trained", pretrain_epochs=1, epochs=1,
                     recalibrate_bn=True)  # fmt: skip
    result = run_experiment(pretrained, quiet=True)
    check_result(result, pretrained)
    assert result["dense_accuracy"] is not None and result["timings"]["pretrain_s"] > 0
    assert prune_calls == [0.5, 0.6]


def test_gradual_follows_the_cubic_schedule(prune_calls):
    config = cfg(criterion="magnitude", sparsity=0.9, at="gradual", initial_sparsity=0.0,
                 start_epoch=0, end_epoch=3, frequency=1, epochs=1)  # fmt: skip
    result = run_experiment(config, quiet=True)
    check_result(result, config)
    # s(t) = 0.9 + (0 - 0.9) (1 - t/3)^3 at t = 1, 2, 3; t = 0 (sparsity 0) is skipped.
    expected = [0.9 - 0.9 * (1 - t / 3) ** 3 for t in (1, 2, 3)]
    assert prune_calls == pytest.approx(expected)


def test_same_seed_same_result():
    config = cfg(criterion="hp", sparsity=0.9, epochs=1, num_probes=2)
    threads = torch.get_num_threads()
    first, second = run_experiment(config, quiet=True), run_experiment(config, quiet=True)
    assert torch.get_num_threads() == threads  # --threads 1 applied to the runs only
    for key in ("test_accuracy", "accuracy_at_prune", "layer_density", "test_loss"):
        assert first[key] == second[key]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"at": "init", "prune_after": 0.5},
            InvalidArgument,
            "--prune-after applies to --at early",
        ),
        ({"at": "early", "bn_warmup": True}, InvalidArgument, "--bn-warmup applies to --at init"),
        ({"at": "trained"}, InvalidArgument, "needs --checkpoint FILE or --pretrain-epochs"),
        ({"at": "trained", "checkpoint": "missing.safetensors"}, CheckpointError, "not found"),
        ({"at": "gradual", "end_epoch": 2, "start_epoch": 3}, InvalidArgument, "--end-epoch"),
        ({"criterion": "magnitude", "temperature": 2.0}, InvalidArgument, "does not apply"),
        ({"at": "sometime"}, InvalidArgument, "valid: init, early, trained, gradual"),
    ],
)
def test_regime_options_are_checked_before_any_work(kwargs, error, message):
    with pytest.raises(error, match=message):
        run_experiment(cfg(**kwargs), quiet=True)


def test_a_sweep_normalizes_instead_of_rejecting():
    config = cfg(criterion="magnitude", at="init", temperature=2.0, prune_after=0.5).normalized()
    assert config.temperature is None and config.prune_after == RunConfig().prune_after
    assert config.run_id() == cfg(criterion="magnitude").run_id()
    torch.testing.assert_close(torch.tensor(config.sparsity), torch.tensor(0.9))


def test_scores_use_eval_mode_so_bn_warmup_matters(monkeypatch):
    """Per-sample Fisher needs eval-mode BatchNorm; warmed-up statistics change the scores."""
    import curvprune.models

    def bn_mlp(name, *, in_channels, num_classes, image_size):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size**2, 32),
            torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, num_classes),
        )  # fmt: skip

    monkeypatch.setattr(curvprune.models, "build_model", bn_mlp)
    plain = run_experiment(cfg(criterion="fisher", sparsity=0.9, epochs=0), quiet=True)
    warm = run_experiment(cfg(criterion="fisher", sparsity=0.9, epochs=0, bn_warmup=True),
                          quiet=True)  # fmt: skip
    assert plain["actual_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert plain["layer_density"] != warm["layer_density"]


def test_memory_options_reach_the_criterion_but_not_the_run_id(monkeypatch):
    seen = {}
    real = curvprune.prune

    def recording(model, criterion, batches, **kwargs):
        seen.update(kwargs)
        return real(model, criterion, batches, **kwargs)

    monkeypatch.setattr(curvprune, "prune", recording)
    config = cfg(criterion="fisher", sparsity=0.5, epochs=0, chunk_size=16, max_memory="1GiB")
    result = run_experiment(config, quiet=True)
    assert seen["chunk_size"] == 16 and seen["max_memory"] == "1GiB"
    # Chunking bounds memory; the scores stay the same, so the run is the same run.
    assert result["label"] == "fisher"
    assert config.run_id() == cfg(criterion="fisher", sparsity=0.5, epochs=0).run_id()
    assert cfg(criterion="snip", chunk_size=16).normalized().chunk_size is None


def test_woodfisher_refuses_what_does_not_fit_the_memory_budget():
    config = cfg(criterion="woodfisher", sparsity=0.5, epochs=0, max_memory="1MiB")
    with pytest.raises(InvalidArgument, match=r"WoodFisher needs about .* GiB budget"):
        run_experiment(config, quiet=True)
