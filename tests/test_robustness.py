"""Issue 11: no silent wrong results, no tracebacks, sweeps that share a folder."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from curvprune.checkpoint import load_checkpoint, save_checkpoint, save_tensors
from curvprune.cli import main
from curvprune.errors import CheckpointError, DataError, InvalidArgument, OutputError
from curvprune.experiments.config import RunConfig
from curvprune.experiments.files import atomic_write_json
from curvprune.experiments.report import build_report, summary_markdown
from curvprune.experiments.sweep import (
    expand_grid,
    grid_size,
    plan_sweep,
    read_results,
    result_row,
    run_sweep,
    shard,
)
from curvprune.models import build_model

TRAIN = ["--batch-size", "64", "--threads", "1", "--device", "cpu"]
FAST = [*TRAIN, "--score-samples", "128"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("curvprune: error: "), err
    return lines[0]


# ------------------------------------------------------------ two sweeps into one folder


@pytest.mark.slow
@pytest.mark.parametrize("split", ["same grid", "shards"])
def test_two_sweeps_into_one_folder_run_every_run_exactly_once(tmp_path, split):
    out = tmp_path / "sweep"
    argv = [
        sys.executable, "-m", "curvprune", "sweep", "--criteria", "magnitude,random,snip",
        "--sparsities", "0.5,0.9", "--seeds", "0,1", "--epochs", "0", "--threads", "1",
        "--score-samples", "64", "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip
    extra = [[], []] if split == "same grid" else [["--shard", "0/2"], ["--shard", "1/2"]]
    procs = [
        subprocess.Popen([*argv, *e], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for e in extra
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    ids = [r["run_id"] for r in read_results(out)]
    # Raw lines too: no duplicate row hides behind read_results' de-duplication.
    raw = (out / "results.csv").read_text().splitlines()[1:]
    assert len(ids) == len(set(ids)) == len(raw) == 12
    ran = sum(1 for d in (out / "runs").iterdir() if (d / "result.json").is_file())
    assert ran == 12


def test_shard_partitions_the_grid_and_dry_run_lists_states(tmp_path, capsys):
    configs = expand_grid({"criteria": "magnitude,snip", "sparsities": [0.5, 0.9], "seeds": [0]})
    parts = [shard(configs, i, 3) for i in range(3)]
    assert sorted(c.run_id() for p in parts for c in p) == sorted(c.run_id() for c in configs)
    with pytest.raises(InvalidArgument, match="0..2"):
        shard(configs, 3, 3)
    assert {s for _, s in plan_sweep(configs, tmp_path)} == {"to run"}
    code, out, err = run(
        capsys, "sweep", "--criteria", "magnitude,snip", "--sparsities", "0.5,0.9",
        "--shard", "1/2", "--dry-run", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0 and "grid: 4 runs (criterion 2 x sparsity 2)" in err
    assert [line.split()[1:] for line in out.splitlines()] == [["to", "run"]] * 2
    assert not (tmp_path / "results.csv").exists()


def test_a_huge_grid_is_counted_not_expanded():
    spec = {k: list(range(40)) for k in ("seed", "batch_size", "score_samples", "epochs", "lr")}
    assert grid_size(spec)[0] == 40**5
    with pytest.raises(InvalidArgument, match="102,400,000 runs .* --max-runs 102400000"):
        expand_grid(spec)
    assert len(expand_grid({"seeds": list(range(12))}, max_runs=12)) == 12


# ---------------------------------------------------------------- results.csv on read


def _fake_row(cfg, accuracy=0.5):
    return {
        "run_id": cfg.run_id(), "label": cfg.label(), "model": cfg.model, "dataset": cfg.dataset,
        "criterion": cfg.criterion, "at": cfg.at, "sparsity": cfg.sparsity, "seed": cfg.seed,
        "actual_sparsity": cfg.sparsity,
        "test_accuracy": accuracy, "num_collapsed": 0,
    }  # fmt: skip


def _write_sweep(tmp_path, n=2):
    configs = [RunConfig(sparsity=s) for s in (0.5, 0.7, 0.9)[:n]]

    def fake(cfg, **kwargs):
        os.makedirs(kwargs["out_dir"], exist_ok=True)
        result = _fake_row(cfg)
        (kwargs["out_dir"] / "result.json").write_text(json.dumps(result))
        return result

    import curvprune.experiments.sweep as sweep_mod

    original, sweep_mod.run_experiment = sweep_mod.run_experiment, fake
    try:
        run_sweep(configs, tmp_path)
    finally:
        sweep_mod.run_experiment = original
    return configs


def test_a_truncated_row_is_rebuilt_from_its_result_json(tmp_path):
    configs = _write_sweep(tmp_path)
    path = tmp_path / "results.csv"
    text = path.read_text()
    path.write_text(text[: text.rindex(",")] + "\n")  # the last row lost its last field
    rows = read_results(tmp_path)
    assert [r["run_id"] for r in rows] == [c.run_id() for c in configs]
    assert all(r["test_accuracy"] == "0.5" for r in rows)


def test_a_bad_row_without_result_json_stops_naming_file_and_line(tmp_path):
    configs = _write_sweep(tmp_path)
    (tmp_path / "runs" / configs[1].run_id() / "result.json").unlink()
    path = tmp_path / "results.csv"
    # Both rows go bad; the first is rebuilt from its result.json, the second cannot be.
    path.write_text(path.read_text().replace(",0.5,", ",1.7,"))  # accuracy out of [0, 1]
    with pytest.raises(DataError, match=r"results.csv line 3: test_accuracy 1.7 is not in"):
        read_results(tmp_path)
    path.write_text(path.read_text().replace(",1.7,", ",abc,"))
    with pytest.raises(DataError, match="line 3: test_accuracy 'abc' is not a number"):
        read_results(tmp_path)


def test_duplicate_rows_are_read_once(tmp_path):
    _write_sweep(tmp_path)
    path = tmp_path / "results.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    assert len(read_results(tmp_path)) == 2


@pytest.mark.parametrize(
    "content, message",
    [
        (b"magnitude-init,0.5,0.9\n", "line 1: no header row"),
        (b"run_id,test_accuracy\nabc,0.5\x00\n", "line 2: NUL bytes"),
        (b"run_id,test_accuracy\nabc,\xff\xfe\n", "line 2: not UTF-8 text"),
    ],
    ids=["headerless", "nul", "latin-1"],
)
def test_garbage_results_csv_is_one_error_line(tmp_path, capsys, content, message):
    (tmp_path / "results.csv").write_bytes(content)
    code, _, err = run(capsys, "report", tmp_path)
    assert code == 2 and message in one_error_line(err)


# ---------------------------------------------------------------- divergence


def test_a_diverging_run_stops_naming_epoch_and_rate(tmp_path, capsys):
    argv = ["--epochs", 1, "--lr", "1e6", "--out", tmp_path, "--quiet"]
    code, _, err = run(capsys, "prune", *FAST, *argv)
    line = one_error_line(err)
    assert "training diverged" in line and "at epoch" in line and "peak 1e+06" in line
    assert code == 2
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "result.json").exists()
    assert not (tmp_path / "run-checkpoint.safetensors").exists()


@pytest.mark.slow
def test_a_sweep_records_diverged_runs_and_goes_on(tmp_path, capsys):
    code, out, err = run(
        capsys, "sweep", *FAST, "--sparsities", "0.5", "--epochs", 1, "--quiet",
        "--config", _yaml(tmp_path, "lr: [0.1, 1.0e6]\n"), "--out", tmp_path / "s",
    )  # fmt: skip
    assert code == 0, err
    rows = read_results(tmp_path / "s")
    assert [r.get("status", "") for r in rows] == ["", "diverged"]
    assert rows[1]["test_accuracy"] == "" and "learning rate" in rows[1]["error"]
    assert "diverged" in out and "1 diverged" in out
    report = json.loads((tmp_path / "s" / "runs" / rows[1]["run_id"] / "result.json").read_text())
    assert report["test_accuracy"] is None


def _yaml(tmp_path, text):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_json_never_holds_nan(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"loss": math.nan, "xs": [math.inf, 1.0]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"loss": None, "xs": [None, 1.0]}


# ---------------------------------------------------------------- checkpoints and paths


def test_prune_refuses_to_overwrite_its_input_checkpoint(tmp_path, capsys):
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    save_checkpoint(model, tmp_path / "d" / "model.safetensors", metadata={"model": "mlp"})
    (tmp_path / "link").symlink_to(tmp_path / "d")
    for out in (tmp_path / "d", tmp_path / "link", f"{tmp_path}/d/../d"):
        code, _, err = run(
            capsys, "prune", *FAST, "--at", "trained", "--epochs", 0,
            "--checkpoint", tmp_path / "d" / "model.safetensors", "--out", out,
        )  # fmt: skip
        assert code == 2 and "would be overwritten" in one_error_line(err)


def test_checkpoints_of_the_wrong_dtype_or_non_finite_values_are_refused(tmp_path):
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    state = model.state_dict()
    key = next(k for k in state if k.endswith("weight"))
    save_tensors({**state, key: state[key].to(torch.int8)}, tmp_path / "int.safetensors")
    with pytest.raises(CheckpointError, match=f"stores {key} as int8"):
        load_checkpoint(model, tmp_path / "int.safetensors")
    bad = state[key].clone()
    bad[0, 0] = math.nan
    save_tensors({**state, key: bad}, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match=f"NaN or infinite values in {key}"):
        load_checkpoint(model, tmp_path / "nan.safetensors")


def test_checkpoints_get_the_umask_mode_and_leave_no_temp_file_on_failure(tmp_path, monkeypatch):
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    old = os.umask(0o027)
    try:
        save_checkpoint(model, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o640

    from safetensors import SafetensorError

    def full_disk(*args, **kwargs):
        open(args[1], "wb").close()  # a partial file, as a full disk leaves
        raise SafetensorError("Error while serializing: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    with pytest.raises(OutputError, match="cannot write .*No space left"):
        save_checkpoint(model, tmp_path / "n.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


@pytest.mark.parametrize(
    "make, argv, message",
    [
        (lambda t: None, ["--seed", str(2**64)], "--seed must be in [0, 2**64 - 1]"),
        (
            lambda t: (t / "loop").symlink_to(t / "loop"),
            ["--at", "trained", "--checkpoint", "{t}/loop"],
            "is a symlink loop",
        ),
        (
            lambda t: (t / "dir").mkdir(),
            ["--at", "trained", "--checkpoint", "{t}/dir"],
            "is a directory, not a file",
        ),
        (
            lambda t: (t / "file").write_text(""),
            ["--out", "{t}/file"],
            "--out {t}/file is a file, not a folder",
        ),
    ],
    ids=["seed", "symlink-loop", "directory", "out-is-a-file"],
)
def test_bad_paths_and_values_are_one_error_line(tmp_path, capsys, make, argv, message):
    make(tmp_path)
    argv = [a.replace("{t}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, "prune", *FAST, "--epochs", 0, "--quiet", *argv)
    assert code == 2 and message.replace("{t}", str(tmp_path)) in one_error_line(err)


def test_unwritable_out_fails_before_training(tmp_path, capsys, monkeypatch):
    import curvprune.experiments.regimes as regimes

    monkeypatch.setattr(regimes, "Run", lambda *a, **k: pytest.fail("trained first"))
    # /proc refuses new folders even to root, like a read-only file system.
    code, _, err = run(capsys, "train", *TRAIN, "--epochs", 1, "--out", "/proc/curvprune-out")
    assert code == 2 and "cannot write to --out /proc/curvprune-out" in one_error_line(err)


def test_an_ascii_terminal_gets_escapes_not_a_traceback():
    env = {**ENV, "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "LC_ALL": "C"}
    env.pop("PYTHONIOENCODING", None)
    done = subprocess.run(
        [sys.executable, "-m", "curvprune", "list", "criteria"], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"\\u03b8" in done.stdout


# ---------------------------------------------------------------- report


def test_report_says_na_when_collapse_is_unknown_and_needs_seeds(tmp_path):
    rows = [
        {k: str(v) for k, v in _fake_row(RunConfig(sparsity=0.9, seed=s)).items()} for s in (0, 1)
    ]
    for row in rows:
        del row["num_collapsed"]
    summary = summary_markdown(rows)
    assert "| magnitude | n/a |" in summary and "0/2" not in summary
    import csv

    with open(tmp_path / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "seed"])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k != "seed"} for r in rows)
    with pytest.raises(DataError, match="lacks the column.* seed"):
        build_report(tmp_path, plots=False)


def test_report_shows_diverged_runs_as_diverged():
    ok = {k: str(v) for k, v in _fake_row(RunConfig(sparsity=0.5)).items()}
    bad = {**result_row({**_fake_row(RunConfig(sparsity=0.9)), "test_accuracy": None})}
    bad = {k: "" if v is None else str(v) for k, v in bad.items()}
    bad.update(status="diverged", error="training diverged: the loss is nan")
    summary = summary_markdown([ok, bad])
    assert "| magnitude | **50.00** | diverged |" in summary
    assert "the loss is nan" in summary
