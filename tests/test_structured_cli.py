"""``curvprune prune --structured`` and structured sweeps on digits, and their bad inputs."""

import json

import pytest

from curvprune.cli import main
from curvprune.data import load_data
from curvprune.experiments.config import RunConfig
from curvprune.experiments.sweep import read_results, result_row
from curvprune.models import build_model
from curvprune.structured import count_params_and_macs, load_pruned, save_pruned
from curvprune.training import evaluate

FAST = [
    "--dataset", "digits", "--model", "mlp", "--batch-size", "64", "--score-samples", "128",
    "--threads", "1", "--device", "cpu", "--quiet",
]  # fmt: skip


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_channel_sparsity_at_init_saves_the_smaller_model(tmp_path, capsys):
    code, out, err = run(capsys, "prune", *FAST, "--structured", "--channel-sparsity", 0.5,
                         "--criterion", "fts", "--epochs", 1, "--out", tmp_path)  # fmt: skip
    assert code == 0, err
    assert "fts at init, structured, channel sparsity 0.5: MACs kept" in out
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["structured"] is True and r["sparsity"] is None
    assert r["channel_sparsity"] == 0.5 and r["macs_target"] is None
    assert r["params"]["pruned"] < r["params"]["dense"] and r["macs"]["pruned"] < r["macs"]["dense"]
    assert r["macs_kept"] == pytest.approx(r["macs"]["pruned"] / r["macs"]["dense"])
    for which in ("dense", "pruned"):
        assert set(r["latency_ms"][which]) == {"1", "64"}
        assert all(t > 0 for t in r["latency_ms"][which].values())
    # Kept fraction per weight tensor; the classifier keeps its 10 outputs, not its inputs.
    assert set(r["layer_density"]) == {"1.weight", "3.weight", "5.weight"}
    assert all(0 < d < 1 for d in r["layer_density"].values())
    assert 0 < r["actual_sparsity"] < 1 and r["run_id"].startswith("fts-init-ch0.5-seed0-")

    # model.safetensors is the physically smaller model, and it scores what result.json says.
    model = load_pruned(tmp_path / "model.safetensors")
    x = load_data("digits", batch_size=64).test
    assert sum(p.numel() for p in model.parameters()) == r["params"]["pruned"]
    assert evaluate(model, x).accuracy == r["test_accuracy"]


def test_macs_target_after_training_is_reached(tmp_path, capsys):
    code, out, err = run(capsys, "prune", *FAST, "--structured", "--macs-target", 0.5,
                         "--criterion", "taylor", "--at", "trained", "--pretrain-epochs", 1,
                         "--iterations", 2, "--epochs", 0, "--out", tmp_path)  # fmt: skip
    assert code == 0, err
    r = json.loads((tmp_path / "result.json").read_text())
    assert 0.45 < r["macs_kept"] <= 0.5 and r["macs_target"] == 0.5
    assert r["dense_accuracy"] is not None and r["label"] == "taylor[iterations=2]"
    model = load_pruned(tmp_path / "model.safetensors")
    assert count_params_and_macs(model, load_data("digits").scoring_batches(1, 1)[0][0]) == (
        r["params"]["pruned"],
        r["macs"]["pruned"],
    )


def test_convolutions_and_batchnorm_lose_channels_together(tmp_path, capsys):
    code, _, err = run(capsys, "prune", *FAST, "--model", "resnet20", "--train-limit", 128,
                       "--structured", "--channel-sparsity", 0.5, "--criterion", "l1",
                       "--recalibrate-bn", "--epochs", 0, "--out", tmp_path)  # fmt: skip
    assert code == 0, err
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["macs_kept"] < 0.6 and r["speedup"]["64"] > 0
    model = load_pruned(tmp_path / "model.safetensors")
    block = model.layer1[0]
    assert block.bn1.num_features == block.conv1.out_channels < 16


def test_structured_sweep_and_report_plot_accuracy_against_macs(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", *FAST, "--structured", "--criteria", "l1,taylor", "--channel-sparsities",
            "0.25,0.5", "--epochs", 0, "--out", out]  # fmt: skip
    code, text, err = run(capsys, *argv)
    assert code == 0, err
    assert "| label | ch 0.25 | ch 0.5 |" in text and "4 runs: 4 run now" in text
    assert "Structured runs: MACs kept (%)" in text
    rows = read_results(out)
    assert {r["run_id"].split("-")[2] for r in rows} == {"ch0.25", "ch0.5"}
    assert all(0 < float(r["macs_kept"]) < 1 and float(r["latency_ms:pruned:1"]) > 0 for r in rows)
    assert (out / "accuracy_vs_macs.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "accuracy_vs_sparsity.png").exists()  # no unstructured runs

    code, again, _ = run(capsys, *argv[:-2], "--macs-targets", "0.5", "--out", out)
    assert code == 0 and "| ch 0.25 | ch 0.5 | MACs 0.5 |" in again
    summary = (out / "summary.md").read_text()
    code, text, _ = run(capsys, "report", out)
    assert code == 0 and text == summary


def test_result_row_flattens_the_costs():
    row = result_row(
        {
            "structured": True,
            "params": {"dense": 10, "pruned": 4},
            "macs": {"dense": 100, "pruned": 30},
            "latency_ms": {"dense": {"1": 2.0}, "pruned": {"1": 1.0}},
            "latency_iqr_ms": {"dense": {"1": 0.2}, "pruned": {"1": 0.1}},
            "latency_device": "cpu",
            "speedup": {"1": 2.0},
        }
    )
    assert row["params:pruned"] == 4 and row["macs:dense"] == 100
    assert row["latency_ms:pruned:1"] == 1.0 and row["speedup:1"] == 2.0
    assert row["latency_iqr_ms:dense:1"] == 0.2 and row["latency_device"] == "cpu"


def test_run_ids_and_normalization_keep_the_two_kinds_apart():
    a = RunConfig(structured=True, channel_sparsity=0.5, criterion="l1")
    assert a.run_id().startswith("l1-init-ch0.5-seed0-")
    assert (
        RunConfig(structured=True, macs_target=0.25, criterion="l1")
        .run_id()
        .startswith("l1-init-macs0.25-")
    )
    # A sweep resets what a run ignores: the weight sparsity of a structured run, and the
    # channel targets of an unstructured one.
    assert a.run_id() == RunConfig(structured=True, channel_sparsity=0.5, criterion="l1",
                                   sparsity=0.5).run_id()  # fmt: skip
    assert RunConfig(channel_sparsity=0.5).normalized().channel_sparsity is None


def test_list_marks_structured_criteria(capsys):
    code, out, _ = run(capsys, "list", "criteria")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "[structured only]" in lines["taylor"] and "[data-free, structured only]" in lines["l1"]
    assert "[structured]" in lines["fts"] and "structured" not in lines["snip"]


S = ["prune", "--structured", "--criterion", "l1"]
BAD_INPUTS = [
    ([*S, "--channel-sparsity", "1.0"], "--channel-sparsity must be a number in [0, 1)"),
    ([*S, "--channel-sparsity", "-0.1"], "--channel-sparsity must be a number in [0, 1)"),
    ([*S, "--macs-target", "0"], "--macs-target must be a number in (0, 1], got 0.0"),
    ([*S, "--macs-target", "1.5"], "--macs-target must be a number in (0, 1], got 1.5"),
    ([*S, "--macs-target", "nan"], "--macs-target must be a number in (0, 1]"),
    (S, "--structured needs --channel-sparsity S"),
    ([*S, "--channel-sparsity", "0.5", "--macs-target", "0.5"], "not both"),
    ([*S, "--channel-sparsity", "0.5", "--at", "early"], "--structured prunes --at init or"),
    ([*S, "--channel-sparsity", "0.5", "--criterion", "snip"], "scores single weights only"),
    ([*S, "--channel-sparsity", "0.5", "--criterion", "magnitude"], "'l1' is the channels'"),
    ([*S, "--channel-sparsity", "0.5", "--sparsity", "0.8"], "--sparsity is the fraction of"),
    ([*S, "--channel-sparsity", "0.5", "--temperature", "2"], "does not apply to criterion l1"),
    ([*S, "--channel-sparsity", "0.97"], "above 0.95, the most any layer may lose"),
    (["prune", "--channel-sparsity", "0.5"], "--channel-sparsity applies to --structured"),
    (["prune", "--criterion", "taylor"], "add --structured"),
    (["sweep", *S[1:], "--sparsities", "0.5", "--out", "{tmp}"], "needs --channel-sparsity"),
    (["sweep", *S[1:], "--macs-targets", "0.5,2", "--out", "{tmp}"], "got 2.0"),
    (["prune", "--at", "trained", "--checkpoint", "{tmp}/small.safetensors"], "load_pruned"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    sizes = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    spec = {"model": "mlp", **sizes}
    save_pruned(build_model("mlp", **sizes), tmp_path / "small.safetensors", spec=spec)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, *argv, *FAST, "--epochs", 0)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("curvprune: error:") and message in lines[0]
