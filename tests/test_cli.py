"""The curvprune command end to end on digits, and a table of bad inputs."""

import json
import pickle

import pytest
import torch

from curvprune import CRITERIA
from curvprune.checkpoint import save_checkpoint
from curvprune.cli import main
from curvprune.data import DATASETS
from curvprune.models import MODELS, build_model

TRAIN_FAST = ["--batch-size", "64", "--threads", "1", "--device", "cpu"]
FAST = [*TRAIN_FAST, "--score-samples", "128"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_everything(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in [*CRITERIA, *MODELS, *DATASETS, "init", "early", "trained", "gradual"]:
        assert f"  {name} " in out
    code, out, _ = run(capsys, "list", "criteria")
    rows = [line for line in out.splitlines()[1:] if "valid: --" not in line]
    assert code == 0 and "models:" not in out and len(rows) == len(CRITERIA)
    assert "(structured only)" not in out and out.count("structured only]") == 2
    code, out, _ = run(capsys, "list", "models")
    assert "  torchvision:NAME " in out and "  timm:NAME " in out


def test_train_prune_sweep_report_end_to_end(tmp_path, capsys):
    code, out, err = run(capsys, "train", *TRAIN_FAST, "--epochs", 3, "--out", tmp_path / "dense")
    assert code == 0, err
    assert (tmp_path / "dense" / "model.safetensors").is_file()
    dense = json.loads((tmp_path / "dense" / "result.json").read_text())
    assert dense["test_accuracy"] > 0.5

    code, out, err = run(
        capsys, "prune", *FAST, "--at", "trained", "--checkpoint",
        tmp_path / "dense" / "model.safetensors", "--criterion", "woodfisher", "--sparsity", 0.6,
        "--num-grads", 32, "--block-size", 64, "--epochs", 1, "--out", tmp_path / "pruned",
    )  # fmt: skip
    assert code == 0, err
    assert "woodfisher[block_size=64,num_grads=32] at trained, sparsity 0.6000" in out
    result = json.loads((tmp_path / "pruned" / "result.json").read_text())
    assert result["config"]["checkpoint"] == str(tmp_path / "dense" / "model.safetensors")
    assert result["dense_accuracy"] == pytest.approx(dense["test_accuracy"])
    assert set(result["timings"]) >= {"score_s", "train_s"}
    assert (tmp_path / "pruned" / "model.safetensors").is_file()

    config = tmp_path / "sweep.yaml"
    config.write_text("criteria: [magnitude, snip]\nsparsities: [0.5, 0.9]\nseeds: 0\nepochs: 1\n")
    sweep_dir = tmp_path / "sweep"
    code, out, err = run(capsys, "sweep", "--config", config, *FAST, "--quiet", "--out", sweep_dir)
    assert code == 0, err
    assert "| label | 0.5 | 0.9 |" in out and "4 runs: 4 run now" in out
    code, again, err = run(
        capsys, "sweep", "--config", config, *FAST, "--quiet", "--out", sweep_dir
    )
    assert code == 0 and "4 runs: 0 run now, 4 already finished" in again
    summary = (sweep_dir / "summary.md").read_text()
    (sweep_dir / "summary.md").unlink()
    code, out, err = run(capsys, "report", sweep_dir)
    assert code == 0 and out == summary == (sweep_dir / "summary.md").read_text()


def _write_bad_checkpoints(tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"garbage" * 10)
    other = tmp_path / "lenet300.safetensors"
    save_checkpoint(build_model("lenet300", in_channels=1, num_classes=10, image_size=8), other,
                    metadata={"model": "lenet300"})  # fmt: skip
    shapes = tmp_path / "shapes.pt"
    torch.save(build_model("lenet300", in_channels=1, num_classes=10, image_size=8).state_dict(),
               shapes)  # fmt: skip
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": print}, protocol=2))
    fashion = tmp_path / "fashion"
    fashion.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # fmt: skip
        (fashion / name).write_bytes(b"\x00\x00\x08\x03 not an idx file")
    (tmp_path / "bad.yaml").write_text("criteria: [snip\n")
    (tmp_path / "keys.yaml").write_text("criteria: snip\nlearning_rate: 0.1\n")


TRAINED = ["prune", "--at", "trained", "--checkpoint"]
BAD_INPUTS = [
    (["prune", "--sparsity", "1.0"], "--sparsity must be a number in [0, 1)"),
    (["prune", "--sparsity", "-0.1"], "--sparsity must be a number in [0, 1)"),
    (["prune", "--sparsity", "lots"], "invalid float value: 'lots'"),
    (["prune", "--epochs", "-1"], "--epochs must be >= 0"),
    (["train", "--batch-size", "0", "--out", "x"], "--batch-size must be a positive integer"),
    (["prune", "--lr", "0"], "--lr must be > 0"),
    (["prune", "--criterion", "obs"], "valid: random, magnitude, snip"),
    (["prune", "--criterion", "l1"], "scores channels only"),
    (["prune", "--model", "alexnet"], "valid: mlp, lenet300"),
    (["prune", "--dataset", "svhn"], "valid: digits, mnist"),
    (["prune", "--at", "later"], "argument --at: invalid choice: 'later'"),
    (["prune", "--scope", "local"], "argument --scope: invalid choice: 'local'"),
    (["prune", "--lr-schedule", "step"], "argument --lr-schedule: invalid choice: 'step'"),
    (["prune", "--device", "cuda:x"], "valid: auto, cpu, cuda, cuda:N, mps"),
    (["report", "{tmp}", "--format", "html"], "argument --format: invalid choice: 'html'"),
    (["prune", "--criterion", "snip", "--temperature", "2"], "does not apply to criterion snip"),
    (["prune", "--at", "init", "--pretrain-epochs", "2"], "applies to --at trained or gradual"),
    (["prune", "--at", "trained"], "needs --checkpoint FILE or --pretrain-epochs"),
    (["prune", "--dataset", "cifar10", "--data-dir", "{tmp}/nowhere"], "{tmp}/nowhere"),
    (["prune", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/fashion"], "{tmp}/fashion"),
    ([*TRAINED, "{tmp}/missing.safetensors"], "checkpoint not found: {tmp}/missing.safetensors"),
    ([*TRAINED, "{tmp}/corrupt.safetensors"], "corrupt checkpoint {tmp}/corrupt.safetensors"),
    ([*TRAINED, "{tmp}/lenet300.safetensors"], "is for model 'lenet300', not 'mlp'"),
    ([*TRAINED, "{tmp}/shapes.pt"], "does not match the model"),
    ([*TRAINED, "{tmp}/evil.pt"], "weights_only=True"),
    (["sweep", "--config", "{tmp}/bad.yaml", "--out", "{tmp}/s"], "invalid YAML in {tmp}/bad.yaml"),
    (["sweep", "--config", "{tmp}/keys.yaml", "--out", "{tmp}/s"], "unknown key(s) learning_rate"),
    (["sweep", "--config", "{tmp}/none.yaml", "--out", "{tmp}/s"], "sweep config not found"),
    (
        ["sweep", "--sparsities", "0.5,1.2", "--out", "{tmp}/s"],
        "--sparsity must be a number in [0, 1)",
    ),
    (["sweep", "--criteria", "snip"], "sweep needs --out DIR"),
    (["report", "{tmp}/nothing"], "no results.csv in {tmp}/nothing"),
    (["prune", "--train-limit", "-5"], "--train-limit must be positive"),
    (["prune", "--criterion", "fisher", "--chunk-size", "0"], "--chunk-size must be > 0"),
    (["prune", "--criterion", "fts", "--max-memory", "lots"], "--max-memory 'lots' is not a size"),
    (["prune", "--criterion", "snip", "--max-memory", "8GiB"], "does not apply to criterion snip"),
    (["prune", "--batch-size", "64", "--device", "tpu"], "unknown --device 'tpu'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    _write_bad_checkpoints(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = (
        run(capsys, *argv, "--quiet") if argv[0] in ("prune", "sweep") else run(capsys, *argv)
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]


def test_cuda_without_a_gpu_is_a_user_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run(capsys, "prune", "--device", "cuda")
    assert code == 2 and "no CUDA device is available" in err


def test_every_criterion_option_has_a_cli_flag_from_its_declaration():
    """argparse itself: each option a criterion takes is a flag with its declared help/choices."""
    import argparse

    from curvprune import CRITERIA
    from curvprune.cli import build_parser
    from curvprune.criteria import OPTIONS
    from curvprune.criteria.options import RUN_SUPPLIED
    from curvprune.criteria.registry import option_choices
    from curvprune.experiments.config import RunConfig

    taken = {o for c in CRITERIA.values() for o in (*c.options, *c.channel_options)}
    assert taken - set(RUN_SUPPLIED) <= set(OPTIONS)
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in ("prune", "sweep"):
        actions = {a.dest: a for a in commands[command]._actions}
        for name, opt in OPTIONS.items():
            action = actions[name]
            assert opt.flag in action.option_strings
            assert action.help.startswith(opt.help)
            assert all(c in action.help for c, crit in CRITERIA.items() if name in crit.options)
            if opt.type is bool:
                assert isinstance(action, argparse.BooleanOptionalAction)
            else:
                assert action.type is opt.type
                assert action.choices == option_choices(name)
    assert set(OPTIONS) <= set(RunConfig.keys())  # and the run configuration has a field each


def test_prune_reads_a_config_file_flags_override_and_print_config_round_trips(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "run.yaml"
    cfg.write_text("criterion: snip\nsparsity: 0.8\nepochs: 0\nexclude: ['5.*']\nseed: 3\n")
    code, out, err = run(capsys, "prune", "--config", cfg, "--sparsity", 0.7, "--print-config")
    assert code == 0, err
    resolved = yaml.safe_load(out)
    assert resolved["criterion"] == "snip" and resolved["sparsity"] == 0.7  # flag > file
    assert resolved["exclude"] == ["5.*"] and resolved["seed"] == 3 and resolved["epochs"] == 0
    again = tmp_path / "again.yaml"
    again.write_text(out)
    code, out2, _ = run(capsys, "prune", "--config", again, "--print-config")
    assert code == 0 and yaml.safe_load(out2) == resolved
    code, out, err = run(capsys, "prune", "--config", again, *FAST, "--out", tmp_path / "r")
    assert code == 0, err
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["criterion"] == "snip" and result["sparsity"] == 0.7
    assert set(result["layer_density"]) == {"1.weight", "3.weight"}


def test_a_list_in_a_single_run_config_is_refused_with_a_pointer_to_sweep(tmp_path, capsys):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("criteria: [snip, fts]\n")
    code, _, err = run(capsys, "prune", "--config", cfg, "--print-config")
    assert code == 2 and "curvprune sweep" in err


def test_sweep_print_config_shows_the_merged_spec_and_the_run_count(tmp_path, capsys):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("criteria: [snip, fts]\nsparsities: [0.5, 0.9]\nseeds: [0, 1]\n")
    code, out, err = run(capsys, "sweep", "--config", cfg, "--seeds", "4", "--print-config")
    assert code == 0, err
    assert "# 4 runs" in out and "seeds:" in out


def test_a_closed_pipe_is_not_an_error():
    import subprocess
    import sys

    proc = subprocess.run(
        f"{sys.executable} -m curvprune list | head -1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.startswith("criteria:") and "error" not in proc.stderr


def test_quiet_in_a_sweep_file_silences_the_progress_lines(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text("criterion: magnitude\nsparsity: 0.5\nepochs: 0\nquiet: true\n")
    code, out, err = run(capsys, "sweep", "--config", config, *FAST, "--out", tmp_path / "s")
    assert code == 0 and "1 runs: 1 run now" in out
    assert err == ""
    config.write_text("criterion: magnitude\nsparsity: 0.5\nepochs: 0\n")
    code, out, err = run(capsys, "sweep", "--config", config, *FAST, "--out", tmp_path / "t")
    assert code == 0 and "[1/1]" in err
