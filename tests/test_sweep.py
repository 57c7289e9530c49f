"""Sweeps: grid expansion, run ids, atomic resumable results.csv, reports, and SIGKILL."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import curvprune.experiments.sweep as sweep_mod
from curvprune.errors import DataError, InvalidArgument
from curvprune.experiments.config import RunConfig
from curvprune.experiments.report import build_report, summary_markdown
from curvprune.experiments.sweep import (
    expand_grid,
    load_sweep_file,
    read_results,
    result_row,
    run_sweep,
)


def fake_result(cfg, accuracy=None):
    """A result dict shaped like run_experiment's, with accuracy a function of the config."""
    acc = accuracy if accuracy is not None else 0.9 - cfg.sparsity / 2 + cfg.seed / 100
    return {
        "run_id": cfg.run_id(),
        "label": cfg.label(),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "criterion": cfg.criterion,
        "at": cfg.at,
        "sparsity": cfg.sparsity,
        "actual_sparsity": cfg.sparsity,
        "seed": cfg.seed,
        "test_accuracy": acc,
        "accuracy_at_prune": 0.1,
        "num_collapsed": int(cfg.sparsity > 0.85),
        "collapsed_layers": ["5.weight"] if cfg.sparsity > 0.85 else [],
        "layer_density": {"1.weight": 1 - cfg.sparsity, "5.weight": 0.0},
        "timings": {"score_s": 0.5, "train_s": 1.0},
        "config": cfg.to_dict(),
    }


@pytest.fixture
def fake_runs(monkeypatch):
    """Replace run_experiment by a fast fake that writes result.json; record the run ids."""
    ran = []

    def fake(cfg, *, out_dir, quiet, strict, log, tensorboard, **checkpoint_options):
        result = fake_result(cfg)
        os.makedirs(out_dir, exist_ok=True)
        (out_dir / "result.json").write_text(json.dumps(result))
        ran.append(cfg.run_id())
        return result

    monkeypatch.setattr(sweep_mod, "run_experiment", fake)
    return ran


def test_grid_expansion_aliases_and_dedup():
    configs = expand_grid(
        {
            "criteria": "magnitude,hp",
            "sparsities": [0.5, 0.9],
            "seeds": [0],
            "temperature": [1, 200],
        }
    )
    # magnitude takes no temperature: 2 runs for it, 4 for hp.
    labels = sorted({c.label() for c in configs})
    assert labels == ["hp[temperature=1]", "hp[temperature=200]", "magnitude"]
    assert len(configs) == 6 and len({c.run_id() for c in configs}) == 6
    # milestones, itself a list, is a value rather than an axis.
    (single,) = expand_grid({"milestones": [3, 6]})
    assert single.milestones == (3.0, 6.0)


def test_run_id_is_stable_and_ignores_where_a_run_executes():
    a = RunConfig(criterion="snip", sparsity=0.9, seed=1)
    assert a.run_id() == RunConfig(criterion="snip", sparsity=0.9, seed=1).run_id()
    assert a.run_id() == RunConfig(criterion="snip", sparsity=0.9, seed=1, data_dir="/x",
                                   device="cpu", threads=1).run_id()  # fmt: skip
    assert a.run_id() != RunConfig(criterion="snip", sparsity=0.95, seed=1).run_id()
    assert a.run_id().startswith("snip-init-s0.9-seed1-")
    # A YAML integer and a float of the same value name the same run.
    assert RunConfig.from_dict({"epochs": 3}).run_id() == RunConfig(epochs=3.0).run_id()


def test_sweep_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("criteria: [snip\nsparsities: 0.9\n")
    with pytest.raises(InvalidArgument, match="invalid YAML in .*bad.yaml at line"):
        load_sweep_file(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("criteria: snip\nsparsty: 0.9\n")
    with pytest.raises(InvalidArgument, match="unknown key.*sparsty.*valid:.*sparsities"):
        load_sweep_file(unknown)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- snip\n")
    with pytest.raises(InvalidArgument, match="must hold a mapping"):
        load_sweep_file(scalar)
    with pytest.raises(InvalidArgument, match="not found"):
        load_sweep_file(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("criteria: [snip, grasp]\nbatch-size: 32\nsparsities: 0.9\n")
    spec = load_sweep_file(good)
    assert [c.batch_size for c in expand_grid(spec)] == [32, 32]
    with pytest.raises(InvalidArgument, match="--epochs expects a float"):
        expand_grid({"epochs": "many"})


def test_sweep_appends_rows_and_resumes(tmp_path, fake_runs):
    configs = expand_grid({"criteria": "magnitude,snip", "sparsities": [0.5, 0.9], "seeds": [0, 1]})
    counts = run_sweep(configs[:3], tmp_path)
    none = {"diverged": 0, "busy": 0}
    assert counts == {"total": 3, "done": 3, "skipped": 0, "recovered": 0, **none}
    counts = run_sweep(configs, tmp_path)
    assert counts == {"total": 8, "done": 5, "skipped": 3, "recovered": 0, **none}
    rows = read_results(tmp_path)
    assert [r["run_id"] for r in rows] == [c.run_id() for c in configs]
    assert len(fake_runs) == len(set(fake_runs)) == 8
    assert rows[0]["density:1.weight"] == "0.5" and rows[0]["score_s"] == "0.5"
    assert "config" not in rows[0]  # only scalar fields become columns
    # No temporary files left; the lock file stays (removing one is a race).
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".curvprune.lock"]

    # A run whose result.json landed but whose row did not is recovered, not re-run.
    extra = RunConfig(criterion="random", sparsity=0.5)
    (tmp_path / "runs" / extra.run_id()).mkdir(parents=True)
    (tmp_path / "runs" / extra.run_id() / "result.json").write_text(json.dumps(fake_result(extra)))
    counts = run_sweep([*configs, extra], tmp_path)
    assert counts == {"total": 9, "done": 0, "skipped": 8, "recovered": 1, **none}
    assert len(fake_runs) == 8


def test_sweep_validates_every_run_first(tmp_path, fake_runs):
    configs = [RunConfig(sparsity=0.5), RunConfig(sparsity=1.5)]
    with pytest.raises(InvalidArgument, match="--sparsity must be a number in"):
        run_sweep(configs, tmp_path)
    assert fake_runs == [] and not (tmp_path / "results.csv").exists()


def test_summary_marks_the_best_and_averages_seeds():
    configs = expand_grid({"criteria": "magnitude,snip", "sparsities": [0.5, 0.9], "seeds": [0, 1]})
    rows = []
    for cfg in configs:
        acc = {"magnitude": 0.8, "snip": 0.7}[cfg.criterion] if cfg.sparsity == 0.5 else None
        row = result_row(fake_result(cfg, acc))
        rows.append({k: str(v) for k, v in row.items()})
    text = summary_markdown(rows)
    lines = {}  # first table only: criterion -> its accuracy row
    for line in text.splitlines():
        if line.startswith("|"):
            lines.setdefault(line.split("|")[1].strip(), line)
    # At 0.5 magnitude wins (80%); at 0.9 both get 0.45 + seed/100: mean 45.5 ± 0.71, a tie.
    assert "**80.00 ± 0.00**" in lines["magnitude"] and "| 70.00 ± 0.00 |" in lines["snip"]
    assert lines["snip"].count("**45.50 ± 0.71**") == 1
    assert "| magnitude | 0/2 | 2/2 |" in text  # collapse table


def test_report_rebuilds_from_results_csv(tmp_path, fake_runs):
    run_sweep(expand_grid({"criteria": "snip,grasp", "sparsities": [0.5, 0.9]}), tmp_path)
    first = build_report(tmp_path)
    for name in ("summary.md", "accuracy_vs_sparsity.png", "layer_density.png"):
        (tmp_path / name).unlink()
    assert build_report(tmp_path) == first == (tmp_path / "summary.md").read_text()
    for name in ("accuracy_vs_sparsity.png", "layer_density.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError, match="no results.csv in"):
        build_report(tmp_path / "elsewhere")


@pytest.mark.slow
def test_sweep_resumes_after_sigkill(tmp_path):
    out = tmp_path / "sweep"
    argv = [
        sys.executable, "-m", "curvprune", "sweep", "--criteria", "magnitude,random,snip",
        "--sparsities", "0.5,0.8", "--seeds", "0,1", "--epochs", "1", "--batch-size", "64",
        "--score-samples", "64", "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip
    total = 12
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    rows_at_kill = 0
    while time.monotonic() < deadline and proc.poll() is None:
        rows_at_kill = len(read_results(out))
        if rows_at_kill >= 1:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert 1 <= rows_at_kill < total
    # The table left by the kill is whole: every row parses and has an accuracy.
    with open(out / "results.csv", newline="") as f:
        before = list(csv.DictReader(f))
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in before)

    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_results(out)
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)) == total
    assert ids[: len(before)] == [r["run_id"] for r in before]  # nothing lost or rewritten
    assert f"{total} runs:" in done.stdout and "already finished" in done.stdout
    ran_again = int(done.stdout.split(f"{total} runs: ")[1].split(" run now")[0])
    assert ran_again <= total - len(before)
