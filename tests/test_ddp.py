"""The CLI under torchrun: two gloo ranks train with DDP, rank 0 alone writes and prints."""

import contextlib
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curvprune.checkpoint import load_checkpoint
from curvprune.cli import _print_error, main
from curvprune.data import load_data
from curvprune.errors import InvalidArgument
from curvprune.experiments import launch
from curvprune.models import build_model
from curvprune.structured import load_pruned
from curvprune.training import evaluate

PRUNE = [
    "prune", "--dataset", "digits", "--model", "mlp", "--criterion", "fts", "--sparsity", "0.5",
    "--epochs", "1", "--batch-size", "64", "--score-samples", "256", "--threads", "1",
    "--device", "cpu",
]  # fmt: skip


SWEEP = [
    "sweep", "--criteria", "magnitude,snip", "--sparsities", "0.5", "--epochs", "0",
    "--batch-size", "64", "--score-samples", "128", "--threads", "1", "--device", "cpu", "--quiet",
]  # fmt: skip


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_env(rank, world, port):
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _digest(tensors):
    h = hashlib.sha1()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _worker(rank, world, ports, tmp):
    """One rank of ``torchrun --nproc-per-node 2 -m curvprune prune ...``, instrumented."""
    os.environ.update(_torchrun_env(rank, world, ports[0]))
    torch.set_num_threads(1)
    import curvprune.experiments.files as files
    import curvprune.experiments.report as report
    import curvprune.experiments.sweep as sweep
    import curvprune.pruning.masks as masks

    real_report, real_write = masks.sparsity_report, files.atomic_write_text

    def report_after_training(model, *args, **kwargs):
        # Called once every rank has trained: compare what each rank holds, over the group.
        mine = {
            "masks": _digest((n, b) for n, b in model.named_buffers() if n.endswith("_mask")),
            "weights": _digest(model.named_parameters()),
            "num_masks": sum(n.endswith("_mask") for n, _ in model.named_buffers()),
        }
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        if dist.get_rank() == 0:
            with open(f"{tmp}/ranks.json", "w") as f:
                json.dump(every, f)
        return real_report(model, *args, **kwargs)

    def recording_write(path, text):
        with open(f"{tmp}/wrote.{rank}", "a") as f:
            f.write(f"{path}\n")
        real_write(path, text)

    masks.sparsity_report = report_after_training
    for module in (files, sweep, report):  # each imported the function by name
        module.atomic_write_text = recording_write
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*PRUNE, "--out", f"{tmp}/run"])
    sweeps = []
    for port in ports[1:3]:  # the second time, rank 0 finds both runs done; the others follow
        # a fresh port per group: a fast rank could otherwise reach the previous group's store
        os.environ["MASTER_PORT"] = str(port)
        with contextlib.redirect_stdout(io.StringIO()) as sweep_out:
            sweeps.append(main([*SWEEP, "--out", f"{tmp}/sweep"]))
        sweeps.append(sweep_out.getvalue())
    os.environ["MASTER_PORT"] = str(ports[3])
    channels = ["--channel-sparsity" if a == "--sparsity" else a for a in PRUNE]
    structured = main([*channels, "--structured", "--quiet", "--out", f"{tmp}/structured"])
    with open(f"{tmp}/rank{rank}.json", "w") as f:
        json.dump(
            {
                "code": code,
                "stdout": out.getvalue(),
                "stderr": err.getvalue(),
                "sweeps": sweeps,
                "structured": structured,
            },
            f,
        )


@pytest.mark.slow
def test_two_gloo_ranks_train_with_identical_masks_and_rank0_writes(tmp_path):
    # fork: the children inherit the imported modules (spawn would re-import torch: ~10 s)
    mp.start_processes(
        _worker,
        args=(2, [_free_port() for _ in range(4)], str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["code"] for r in ranks] == [0, 0], ranks
    assert "fts at init, sparsity 0.5000" in ranks[0]["stdout"]
    assert ranks[1]["stdout"] == "" and ranks[1]["stderr"] == ""  # other ranks stay quiet

    first, again = ranks[0]["sweeps"][1], ranks[0]["sweeps"][3]
    assert "2 runs: 2 run now" in first and "2 runs: 0 run now, 2 already finished" in again
    assert ranks[1]["sweeps"] == [0, "", 0, ""]
    assert len((tmp_path / "sweep" / "results.csv").read_text().splitlines()) == 3

    every = json.loads((tmp_path / "ranks.json").read_text())
    assert every[0]["num_masks"] == 3
    assert every[0]["masks"] == every[1]["masks"]
    assert every[0]["weights"] == every[1]["weights"]  # DDP kept the replicas in step

    written = (tmp_path / "wrote.0").read_text().splitlines()
    assert written[0] == str(tmp_path / "run" / "result.json") and any(
        w.endswith("results.csv") for w in written
    )
    assert not (tmp_path / "wrote.1").exists()  # nor result.json, results.csv, summary.md
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "model.safetensors",
        "result.json",
        "run.log",
    ]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["actual_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["peak_memory_mb"] > 0

    # Evaluation summed over the ranks' shards equals one process on the whole test set.
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    load_checkpoint(model, tmp_path / "run" / "model.safetensors")
    single = evaluate(model, load_data("digits", batch_size=64).test)
    assert result["test_accuracy"] == single.accuracy

    # Structured: both ranks removed the same channels (the run checks the shapes agree).
    assert [r["structured"] for r in ranks] == [0, 0]
    result = json.loads((tmp_path / "structured" / "result.json").read_text())
    assert result["world_size"] == 2 and result["macs_kept"] < 1
    small = load_pruned(tmp_path / "structured" / "model.safetensors")
    assert (
        evaluate(small, load_data("digits", batch_size=64).test).accuracy
        == (result["test_accuracy"])
    )


@pytest.mark.slow  # a fresh interpreter imports torch
def test_python_m_curvprune_under_a_single_process_torchrun_env(tmp_path):
    env = {**os.environ, **_torchrun_env(0, 1, _free_port()), "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "curvprune", *PRUNE, "--epochs", "0", "--quiet", "--out", out],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 1 and result["backend"] == "gloo"
    assert "wrote" in proc.stdout


def test_torchrun_env_is_read_and_checked(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert launch.torchrun_env() is None and launch.env_rank() == 0
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch.torchrun_env() == (1, 4, 1) and launch.env_rank() == 1
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InvalidArgument, match="RANK=4 must be in 0..WORLD_SIZE-1"):
        launch.torchrun_env()


def test_torchrun_env_without_master_address_is_a_user_error(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    code = main([*PRUNE, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "MASTER_ADDR and MASTER_PORT is not" in err
    assert len(err.strip().splitlines()) == 1


def test_only_rank0_prints_errors_that_every_rank_raises(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    _print_error(InvalidArgument("--lr must be > 0"))  # before the group: same on every rank
    assert capsys.readouterr().err == ""
    err = InvalidArgument("data missing on this node")
    err.rank = 1  # raised inside the group: possibly this rank alone
    _print_error(err)
    assert capsys.readouterr().err == "curvprune: error: [rank 1] data missing on this node\n"
    assert main(["prune", "--lr", "0", "--quiet"]) == 2
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_trains_in_bf16_and_scores_in_float32(tmp_path, capsys):
    gpu = [a if a != "cpu" else "cuda" for a in PRUNE]
    code = main([*gpu, "--quiet", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["device"].startswith("cuda")
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "float32"
    assert result["precision"] == expected and result["peak_memory_mb"] > 0


@pytest.mark.parametrize(
    "world, options, message",
    [
        (3, {"batch_size": 64}, "--batch-size 64 is the global batch and must be a multiple of"),
        (2, {"batch_size": 64, "score_samples": 32}, "gives 1 scoring batch(es), fewer than"),
    ],
)
def test_a_split_that_leaves_a_rank_without_data_is_refused_first(
    monkeypatch, world, options, message
):
    import curvprune._core.distributed as distributed
    from curvprune.experiments.config import RunConfig
    from curvprune.experiments.regimes import run_experiment

    monkeypatch.setattr(distributed, "world_size", lambda: world)
    config = RunConfig(threads=1, device="cpu", epochs=0, **options)
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        run_experiment(config, quiet=True)
