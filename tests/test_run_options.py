"""Run options that reproduce the papers' settings: --exclude, --score-per-class, --schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import curvprune as cp
from curvprune._core.params import Excluding
from curvprune.data import load_data
from curvprune.errors import InvalidArgument
from curvprune.experiments.config import RunConfig
from curvprune.experiments.regimes import run_experiment
from curvprune.experiments.sweep import expand_grid

FAST = {"threads": 1, "device": "cpu", "epochs": 0.0, "batch_size": 64, "score_samples": 128}


def test_exclude_keeps_matching_weights_dense_and_counts_sparsity_over_the_rest():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    batches = [(torch.randn(16, 6), torch.randint(0, 3, (16,)))]
    result = cp.prune(model, "magnitude", batches, sparsity=0.5, prunable=Excluding(["4.*"]))
    assert set(result.masks) == {"0.weight", "2.weight"}
    assert not hasattr(model[4], "weight_mask")
    assert result.sparsity == pytest.approx(0.5, abs=1 / 80)


def test_an_exclude_pattern_that_matches_nothing_is_an_error_naming_the_weights():
    model = nn.Sequential(nn.Linear(6, 3))
    with pytest.raises(InvalidArgument, match=r"'fc\*' matches no prunable weight.*0\.weight"):
        cp.prune(model, "magnitude", [(torch.randn(4, 6), torch.zeros(4).long())], sparsity=0.5,
                 prunable=Excluding(["fc*"]))  # fmt: skip


def test_a_run_checks_its_exclude_patterns_before_any_training_or_data_pass(monkeypatch):
    from curvprune.experiments import runner

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --exclude")

    monkeypatch.setattr(runner.Run, "train", no_training, raising=True)
    monkeypatch.setattr(runner.Run, "evaluate", no_training, raising=True)
    config = RunConfig(criterion="snip", at="early", prune_after=1.0, exclude=("fc*",), **FAST)
    with pytest.raises(InvalidArgument, match=r"'fc\*' matches no prunable weight"):
        run_experiment(config)


def test_run_with_exclude_reports_the_excluded_layer_out_of_the_sparsity():
    r = run_experiment(RunConfig(criterion="snip", sparsity=0.9, exclude=("5.*",), **FAST))
    assert set(r["layer_density"]) == {"1.weight", "3.weight"}
    assert r["actual_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert "exclude=5.*" in r["label"]


def test_score_per_class_draws_exactly_n_of_each_class_reproducibly():
    data = load_data("digits", batch_size=32, seed=3)
    batches = data.scoring_batches(None, 16, per_class=7)
    labels = torch.cat([y for _, y in batches])
    assert torch.bincount(labels, minlength=10).tolist() == [7] * 10
    again = torch.cat([y for _, y in data.scoring_batches(None, 16, per_class=7)])
    assert torch.equal(labels, again)
    other = load_data("digits", batch_size=32, seed=4).scoring_batches(None, 16, per_class=7)
    assert not torch.equal(torch.cat([x for x, _ in batches]), torch.cat([x for x, _ in other]))


def test_score_per_class_replaces_score_samples_in_the_run_id():
    a = RunConfig(criterion="snip", score_per_class=10)
    b = RunConfig(criterion="snip", score_per_class=10, score_samples=64)
    assert a.run_id() == b.run_id() != RunConfig(criterion="snip").run_id()


def test_schedule_reaches_prune_and_is_part_of_the_label(monkeypatch):
    seen = {}
    real = cp.prune

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(cp, "prune", spy)
    cfg = RunConfig(criterion="magnitude", iterations=3, schedule="linear", **FAST)
    r = run_experiment(cfg)
    assert seen["schedule"] == "linear" and seen["iterations"] == 3
    assert r["label"] == "magnitude[iterations=3,schedule=linear]"
    with pytest.raises(InvalidArgument, match="schedule"):
        RunConfig(schedule="cubic").validate()


def test_exclude_in_a_sweep_file_is_an_axis_only_as_a_list_of_lists():
    one = expand_grid({"criterion": "snip", "exclude": ["5.*", "1.*"]})
    assert [c.exclude for c in one] == [("5.*", "1.*")]
    two = expand_grid({"criterion": "snip", "exclude": [["5.*"], ["1.*"]]})
    assert [c.exclude for c in two] == [("5.*",), ("1.*",)]


def test_val_split_holds_out_a_fixed_stratified_share_and_leaves_the_test_set_alone():
    plain = load_data("digits", seed=0)
    split = load_data("digits", seed=0, val_split=0.2)
    other_seed = load_data("digits", seed=7, val_split=0.2)
    assert plain.val is None and plain.num_val == 0
    assert split.num_val + split.num_train == plain.num_train
    val = torch.cat([y for _, y in split.val])
    counts = torch.bincount(val, minlength=10)
    assert counts.min() >= 28 and counts.max() <= 29  # 20% of each class's ~143-144
    assert torch.equal(val, torch.cat([y for _, y in other_seed.val]))  # same split every seed
    train = torch.cat([x for x, _ in split.scoring_batches(split.num_train, 512)])
    held = torch.cat([x for x, _ in split.val])
    assert not (train[:, None] == held[None]).flatten(2).all(2).any()  # disjoint
    assert torch.equal(torch.cat([x for x, _ in plain.test]), torch.cat([x for x, _ in split.test]))
    with pytest.raises(InvalidArgument, match="val_split"):
        load_data("digits", val_split=1.0)


def test_val_split_tests_the_weights_of_the_best_validation_epoch(tmp_path):
    from curvprune.checkpoint import load_checkpoint
    from curvprune.models import build_model
    from curvprune.training import evaluate

    cfg = RunConfig(criterion="snip", sparsity=0.9, val_split=0.2, lr=0.5, **{**FAST, "epochs": 4})
    r = run_experiment(cfg, out_dir=tmp_path, save_model=True, quiet=True)
    assert r["best_epoch"] in (1.0, 2.0, 3.0, 4.0)
    data = load_data("digits", batch_size=64, val_split=0.2)
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    load_checkpoint(model, tmp_path / "model.safetensors")  # the saved model is the best one
    assert evaluate(model, data.val).accuracy == pytest.approx(r["val_accuracy"], abs=1e-12)
    assert evaluate(model, data.test).accuracy == pytest.approx(r["test_accuracy"], abs=1e-12)
    plain = run_experiment(RunConfig(criterion="snip", sparsity=0.9, **{**FAST, "epochs": 1}))
    assert "val_accuracy" not in plain and "best_epoch" not in plain


def test_progress_bars_follow_quiet_whatever_the_regime_has_recorded():
    from curvprune.experiments.runner import Run

    run = Run(RunConfig(**FAST), quiet=True, tensorboard=None, log=None)
    run.progress["pruned"] = True
    assert run.show_progress is False


def test_gradual_pruning_scores_a_fresh_subset_at_each_step(monkeypatch):
    from curvprune.experiments.runner import Run

    seen = []
    real = Run.score_batches

    def spy(self, draw=0):
        batches = real(self, draw)
        seen.append((draw, torch.cat([x for x, _ in batches])))
        return batches

    monkeypatch.setattr(Run, "score_batches", spy)
    cfg = RunConfig(
        criterion="snip", at="gradual", sparsity=0.9, start_epoch=0.0, end_epoch=1.0,
        frequency=0.5, initial_sparsity=0.5, **{**FAST, "epochs": 0.0},
    )  # fmt: skip
    run_experiment(cfg)
    draws = {d: x for d, x in seen}
    assert sorted(draws) == [0, 1, 2]  # three pruning steps, three subsets
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    data = load_data("digits", batch_size=64)
    again = torch.cat([x for x, _ in data.scoring_batches(128, 64, draw=1)])
    assert torch.equal(again, draws[1])  # reproducible from the seed and the step


def test_bn_warmup_passes_over_the_whole_training_set(monkeypatch):
    seen = []
    real = cp.bn_warmup

    def spy(model, batches):
        seen.append(sum(len(y) for _, y in batches))
        return real(model, batches)

    monkeypatch.setattr(cp, "bn_warmup", spy)
    cfg = RunConfig(model="resnet20", criterion="snip", bn_warmup=True, **FAST)
    run_experiment(cfg)
    assert seen == [load_data("digits").num_train]  # every training image, as the HTS code


def test_run_ids_recorded_before_later_options_existed_are_unchanged():
    """A finished run is found on resume only if its id never changes (a claims-ledger run)."""
    config = RunConfig(
        model="resnet20",
        dataset="fashion-mnist",
        criterion="oba",
        structured=True,
        macs_target=0.5,
        at="trained",
        checkpoint="benchmarks/claims/runs/resnet20-dense/model.safetensors",
        epochs=0.0,
        score_samples=256,
        threads=1,
    )
    assert config.run_id() == "oba-trained-macs0.5-seed0-cdbe698cb3"
    assert RunConfig(**{**config.to_dict(), "val_split": 0.1}).run_id() != config.run_id()


def test_a_variant_is_checked_against_the_criterion_and_reset_in_sweeps():
    with pytest.raises(InvalidArgument, match=r"--variant must be one of original, pai_code for "
                       r"criterion 'grasp', got 'oba_code'"):  # fmt: skip
        RunConfig(criterion="grasp", variant="oba_code").validate()
    RunConfig(
        criterion="taylor", structured=True, channel_sparsity=0.5, variant="oba_code"
    ).validate()
    runs = expand_grid(
        {"criteria": ["grasp", "snip"], "variant": ["pai_code", "oba_code"], "sparsity": 0.5}
    )
    assert sorted((c.criterion, str(c.variant)) for c in runs) == [
        ("grasp", "None"), ("grasp", "pai_code"), ("snip", "None")
    ]  # fmt: skip


def test_a_criterions_own_valid_values_are_checked_before_any_data_loads(monkeypatch, capsys):
    """Issue 20 (8): --normalize mean is valid for channels but not for oba's weight scores."""
    from curvprune.cli import main
    from curvprune.experiments import runner

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the options were checked")

    monkeypatch.setattr(runner.Run, "__init__", no_data)
    code = main(["prune", "--criterion", "oba", "--normalize", "mean", "--epochs", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--normalize must be one of none, max for criterion 'oba', got 'mean'" in err
    with pytest.raises(InvalidArgument, match="normalize must be one of none, max for criterion"):
        cp.score(nn.Sequential(nn.Linear(2, 2)), "oba", [], normalize="mean")
    RunConfig(criterion="oba", structured=True, channel_sparsity=0.5, normalize="mean").validate()
    # a sweep over both resets the value where the criterion does not take it
    runs = expand_grid({"criteria": ["oba"], "normalize": ["max", "mean"], "sparsity": 0.5})
    assert sorted(str(c.normalize) for c in runs) == ["None", "max"]


def test_score_batch_size_defaults_to_the_papers_code_and_keeps_recorded_run_ids():
    """Issue 20 (9): HTS/HP score one sample per batch (the HTS code); ids recorded before the
    option existed (scored in batches of --batch-size) are unchanged."""
    assert RunConfig(criterion="hts").scoring_batch_size() == 1
    assert RunConfig(criterion="hp").scoring_batch_size() == 1
    assert RunConfig(criterion="snip").scoring_batch_size() == 128
    assert RunConfig(criterion="hts", score_batch_size=16).scoring_batch_size() == 16
    # ids computed with the code before --score-batch-size existed
    recorded = {
        "hts-init-s0.9-seed0-f8977b32c2": {
            "criterion": "hts",
            "score_per_class": 10,
            "exclude": ("fc*",),
        },  # fmt: skip
        "hp-init-s0.9-seed0-5006068072": {"criterion": "hp", "temperature": 1.0},
        "snip-init-s0.98-seed0-a8331da05e": {"criterion": "snip", "sparsity": 0.98},
        "hts-init-ch0.5-seed0-89adccb481": {
            "criterion": "hts",
            "structured": True,
            "channel_sparsity": 0.5,
        },  # fmt: skip
    }
    for run_id, options in recorded.items():
        old = RunConfig(**options, score_batch_size=128)  # what those runs did
        assert old.run_id() == run_id
        if options["criterion"] == "snip":
            assert RunConfig(**options).run_id() == run_id
        else:  # the new default scores differently, so it is a new run
            assert RunConfig(**options).run_id() != run_id
    with pytest.raises(InvalidArgument, match="--score-batch-size must be a positive integer"):
        RunConfig(score_batch_size=0).validate()


def test_hts_scores_in_batches_of_one_and_result_json_records_it(monkeypatch):
    from curvprune.criteria import scores

    seen = []
    real = scores._hutchinson

    def spy(model, loss_fn, batches, **kwargs):
        seen.append([len(y) for _, y in batches])
        return real(model, loss_fn, batches, **kwargs)

    monkeypatch.setattr(scores, "_hutchinson", spy)
    cfg = RunConfig(criterion="hts", score_per_class=2, num_probes=1, **FAST)
    result = run_experiment(cfg)
    assert seen == [[1] * 20]  # 2 per class, 10 classes, one per batch: 10 fresh probes each
    assert result["score_batch_size"] == 1 and result["score_mode"] == "eval"
    seen.clear()
    result = run_experiment(RunConfig(**{**cfg.to_dict(), "score_batch_size": 8}))
    assert seen == [[8, 8, 4]] and result["score_batch_size"] == 8


def test_score_mode_is_an_option_of_runs_and_only_changes_ids_when_it_changes_the_mode():
    base = RunConfig(criterion="snip")
    assert RunConfig(criterion="snip", score_mode="eval").run_id() == base.run_id()
    assert RunConfig(criterion="snip", score_mode="train").run_id() != base.run_id()
    code = RunConfig(criterion="oba", variant="oba_code")
    assert code.scoring_mode() == "train"
    assert RunConfig(criterion="oba", variant="oba_code", score_mode="train").run_id() == (
        code.run_id()
    )
    with pytest.raises(InvalidArgument, match="--score-mode must be one of eval, train"):
        RunConfig(score_mode="test").validate()


def test_a_variant_whose_computation_changed_gets_a_new_run_id():
    """GraSP's pai_code now takes g and Hg over every parameter (issue 20 (1)): its runs
    recorded before compute something else, so a resumed sweep must not take them."""
    assert RunConfig(criterion="grasp").run_id() == "grasp-init-s0.9-seed0-b031fc052e"
    before = "grasp-init-s0.9-seed0-2e44b17798"  # variant pai_code, computed before the change
    assert RunConfig(criterion="grasp", variant="pai_code").run_id() != before
