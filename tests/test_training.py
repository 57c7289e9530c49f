"""Training loop, sparsity schedules and checkpoints."""

import math
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from curvprune.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from curvprune.errors import CheckpointError, InvalidArgument
from curvprune.experiments.launch import resolve_device
from curvprune.pruning.schedules import gradual_plan, polynomial_sparsity
from curvprune.training import (
    Trainer,
    autocast_dtype,
    evaluate,
    open_tensorboard,
    seed_everything,
)


class Batches:
    """Re-iterable fixed batches with len() and set_epoch(), like a DataBundle's train."""

    def __init__(self, n_batches=5, batch=16, dim=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.data = [
            (torch.randn(batch, dim, generator=g), torch.randint(0, 3, (batch,), generator=g))
            for _ in range(n_batches)
        ]
        self.epochs_seen = []

    def set_epoch(self, epoch):
        self.epochs_seen.append(epoch)

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        return iter(self.data)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


# --- schedules -------------------------------------------------------------------------------


def test_polynomial_sparsity_matches_the_cubic_formula():
    kw = {"initial": 0.1, "final": 0.9, "start": 2.0, "end": 6.0}
    assert polynomial_sparsity(1.0, **kw) == 0.0  # before pruning starts
    assert polynomial_sparsity(2.0, **kw) == pytest.approx(0.1)
    assert polynomial_sparsity(4.0, **kw) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5**3)
    assert polynomial_sparsity(6.0, **kw) == 0.9
    assert polynomial_sparsity(60.0, **kw) == 0.9
    values = [polynomial_sparsity(2 + 0.1 * i, **kw) for i in range(41)]
    assert values == sorted(values)


def test_gradual_plan_ends_exactly_on_target():
    plan = gradual_plan(
        initial_sparsity=0.0, final_sparsity=0.9, start_epoch=0, end_epoch=2.5, frequency=1
    )
    assert [s.epoch for s in plan] == [0, 1, 2, 2.5]
    assert plan[0].sparsity == 0.0 and plan[-1].sparsity == 0.9
    assert all(a.sparsity < b.sparsity for a, b in zip(plan, plan[1:], strict=False))
    single = gradual_plan(
        initial_sparsity=0.5, final_sparsity=0.8, start_epoch=3, end_epoch=3, frequency=1
    )
    assert [(s.epoch, s.sparsity) for s in single] == [(3, 0.8)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"final_sparsity": 1.0}, "--sparsity"),
        ({"initial_sparsity": 0.95}, "must not exceed"),
        ({"start_epoch": -1}, "--start-epoch"),
        ({"end_epoch": 0.5, "start_epoch": 1}, "--end-epoch"),
        ({"frequency": 0}, "--frequency"),
    ],
)
def test_gradual_plan_rejects_bad_values(kwargs, message):
    args = {
        "initial_sparsity": 0.0,
        "final_sparsity": 0.9,
        "start_epoch": 0,
        "end_epoch": 4,
        "frequency": 1,
    }
    with pytest.raises(InvalidArgument, match=message):
        gradual_plan(**{**args, **kwargs})


# --- training --------------------------------------------------------------------------------


def test_cosine_and_multistep_learning_rates():
    model, data = tiny_model(), Batches(n_batches=10)
    cos = Trainer(model, data, epochs=2, lr=0.4, schedule="cosine")
    assert cos.total_steps == 20
    assert cos.lr_at(0) == pytest.approx(0.4)
    assert cos.lr_at(10) == pytest.approx(0.2)
    assert cos.lr_at(20) == pytest.approx(0.0, abs=1e-12)
    step = Trainer(model, data, epochs=4, lr=1.0, schedule="multistep", milestones=[1, 3])
    assert [step.lr_at(s) for s in (0, 9, 10, 29, 30)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    with pytest.raises(InvalidArgument, match="cosine, multistep"):
        Trainer(model, data, epochs=1, lr=0.1, schedule="linear")


def test_fractional_epochs_resume_where_they_stopped():
    data = Batches(n_batches=4)
    trainer = Trainer(tiny_model(), data, epochs=2.5, lr=0.1)
    assert trainer.total_steps == 10
    assert trainer.train_until(0.5)["steps"] == 2
    assert trainer.train_until(1.75)["steps"] == 5
    assert trainer.epoch == 1.75
    assert trainer.train_all()["steps"] == 3
    assert trainer.train_until(9)["steps"] == 0  # capped at the budget
    assert data.epochs_seen == [0, 1, 2]


def test_training_keeps_pruned_weights_at_zero():
    model, data = tiny_model(), Batches()
    torch_prune.random_unstructured(model[0], "weight", amount=0.6)
    mask = model[0].weight_mask.clone()
    Trainer(model, data, epochs=3, lr=0.5, weight_decay=0.0).train_all()
    model(data.data[0][0])  # the pre-hook recomputes weight = weight_orig * mask
    assert torch.equal(model[0].weight_mask, mask)
    assert torch.all(model[0].weight[mask == 0] == 0)
    assert torch.all(model[0].weight_orig.grad[mask == 0] == 0)


def test_training_is_deterministic_for_a_seed():
    def train():
        seed_everything(3)
        model = tiny_model(seed=3)
        Trainer(model, Batches(), epochs=2, lr=0.1).train_all()
        return [p.detach().clone() for p in model.parameters()]

    first, second = train(), train()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_training_lowers_the_loss():
    model, data = tiny_model(), Batches()
    before = evaluate(model, data).loss
    Trainer(model, data, epochs=20, lr=0.1).train_all()
    assert evaluate(model, data).loss < before


def test_evaluate_counts_top1_and_restores_mode():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 1, 1, 1])  # the third is wrong
    model.train()
    result = evaluate(model, [(x[:3], y[:3]), (x[3:], y[3:])])
    assert result.accuracy == 0.75 and result.count == 4
    expected = nn.functional.cross_entropy(x, y).item()
    assert math.isclose(result.loss, expected, rel_tol=1e-6)
    assert model.training


def test_bf16_autocast_trains_with_a_float32_loss():
    """The mixed-precision path (bf16 on GPUs) also runs under CPU autocast."""
    assert autocast_dtype(torch.device("cpu")) is None  # float32 everywhere on the CPU
    model, data = tiny_model(), Batches()
    before = evaluate(model, data).loss
    stats = Trainer(model, data, epochs=20, lr=0.1, autocast=torch.bfloat16).train_all()
    assert stats["samples"] == 20 * 5 * 16 and math.isfinite(stats["loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    mixed = evaluate(model, data, autocast=torch.bfloat16)
    assert mixed.loss < before
    assert mixed.loss == pytest.approx(evaluate(model, data).loss, rel=0.05)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InvalidArgument, match="valid: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgument, match="no CUDA device"):
            resolve_device("cuda")


def test_tensorboard_missing_is_a_clear_error(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InvalidArgument, match="pip install tensorboard"):
        open_tensorboard(str(tmp_path))


# --- checkpoints -----------------------------------------------------------------------------


def test_pruned_checkpoint_round_trip_restores_masks(tmp_path):
    model = tiny_model()
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    torch_prune.l1_unstructured(model[2], "weight", amount=0.25)
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path, metadata={"model": "tiny"})
    fresh = tiny_model(seed=1)
    metadata = load_checkpoint(fresh, path, expect={"model": "tiny"})
    assert metadata["model"] == "tiny"
    assert hasattr(fresh[0], "weight_mask") and hasattr(fresh[2], "weight_mask")
    assert torch.equal(fresh[0].weight_mask, model[0].weight_mask)
    x = torch.randn(4, 6)
    assert torch.equal(fresh(x), model(x))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_pt_checkpoints_load_with_weights_only(tmp_path):
    model = tiny_model()
    path = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    fresh = tiny_model(seed=1)
    load_checkpoint(fresh, path)
    assert torch.equal(fresh[0].weight, model[0].weight)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch EXPLOITED",))


def test_pt_checkpoint_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": _Exploit()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(tiny_model(), path)
    assert not (tmp_path / "EXPLOITED").exists()


def test_bad_checkpoints_raise_checkpoint_error(tmp_path):
    model = tiny_model()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(model, tmp_path / "nope.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(corrupt)
    other = tmp_path / "other.safetensors"
    save_checkpoint(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), other)
    with pytest.raises(CheckpointError, match=r"shape: .*0\.weight \(5, 6\) vs \(8, 6\)"):
        load_checkpoint(model, other)
    tagged = tmp_path / "tagged.safetensors"
    save_checkpoint(model, tagged, metadata={"model": "lenet5"})
    with pytest.raises(CheckpointError, match="for model 'lenet5', not 'mlp'"):
        load_checkpoint(tiny_model(), tagged, expect={"model": "mlp"})
    text = tmp_path / "model.bin"
    text.write_text("x")
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        load_checkpoint(model, text)
