"""GradualPruner: the schedule, any criterion, exact resume from state dicts, squash."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import curvprune as cp
from curvprune.errors import InvalidArgument
from curvprune.pruning.schedules import polynomial_sparsity


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))


def _data(n=6):
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen))
        for _ in range(n)
    ]


def _train_epoch(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_targets_follow_the_cubic_schedule():
    model = _model()
    pruner = cp.GradualPruner(
        model, "magnitude", _data(1), sparsity=0.8, initial_sparsity=0.1, start=1, end=4
    )
    targets, pruned = [], []
    for _ in range(7):
        pruned.append(pruner.step())
        targets.append(pruner.target)
        assert cp.sparsity_report(model).sparsity == pytest.approx(pruner.target, abs=1e-2)
    want = [0.0] + [
        polynomial_sparsity(t, initial=0.1, final=0.8, start=1, end=4) for t in range(1, 7)
    ]
    assert targets == pytest.approx(want)
    assert pruned == [False, True, True, True, True, False, False]
    assert pruner.reached == 0.8


def test_fractional_events_are_caught_up_and_explicit_times():
    model = _model()
    pruner = cp.GradualPruner(model, "magnitude", _data(1), sparsity=0.5, end=1, frequency=0.25)
    assert [p.epoch for p in pruner.plan] == [0, 0.25, 0.5, 0.75, 1]
    assert pruner.step() is False  # t = 0: s_i = 0
    assert pruner.step(0.5) and pruner.target == pytest.approx(
        polynomial_sparsity(0.5, initial=0, final=0.5, start=0, end=1)
    )
    assert pruner.step() and pruner.target == 0.5  # t = 1.5: the last event
    with pytest.raises(InvalidArgument, match="before the current time"):
        pruner.step(1.0)


@pytest.mark.parametrize("criterion", ["fisher", "woodfisher", "snip"])
def test_resume_from_state_dicts_continues_exactly(criterion):
    data = _data()
    options = {"block_size": 8} if criterion == "woodfisher" else {}

    def pruner_for(model):
        return cp.GradualPruner(
            model,
            criterion,
            lambda t: data[int(t) % 3 : int(t) % 3 + 2],
            sparsity=0.75,
            start=1,
            end=4,
            **options,
        )

    # one run of 6 epochs
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = pruner_for(model)
    for _ in range(6):
        pruner.step()
        _train_epoch(model, opt, data)
    # the same, stopped after 3 epochs and resumed on fresh objects
    first = _model()
    opt = torch.optim.SGD(first.parameters(), lr=0.1)
    p1 = pruner_for(first)
    for _ in range(3):
        p1.step()
        _train_epoch(first, opt, data)
    saved_model, saved_pruner = first.state_dict(), p1.state_dict()
    second = _model(seed=123)  # different initial weights: all must come from the state dicts
    p2 = pruner_for(second)
    p2.load_state_dict(saved_pruner)
    second.load_state_dict(saved_model)
    opt = torch.optim.SGD(second.parameters(), lr=0.1)  # plain SGD: no optimizer state
    for _ in range(3):
        p2.step()
        _train_epoch(second, opt, data)
    assert p2.time == pruner.time == 5 and p2.reached == pruner.reached == 0.75
    want, got = model.state_dict(), second.state_dict()
    assert set(want) == set(got)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    if criterion == "woodfisher":
        assert pruner.last_result is not None and pruner.last_result.sparsity == pytest.approx(
            0.75, abs=1e-2
        )


def test_state_dict_before_pruning_loads_into_a_dense_model():
    model = _model()
    pruner = cp.GradualPruner(model, "magnitude", _data(1), sparsity=0.5, start=2, end=3)
    pruner.step()
    state = pruner.state_dict()
    assert state["masks"] == {} and state["time"] == 0
    fresh = _model()
    other = cp.GradualPruner(fresh, "magnitude", _data(1), sparsity=0.5, start=2, end=3)
    other.load_state_dict(state)
    fresh.load_state_dict(model.state_dict())
    other.step(), other.step()
    assert other.reached == pytest.approx(
        polynomial_sparsity(2, initial=0, final=0.5, start=2, end=3)
    )


def test_squash_makes_masks_permanent():
    model = _model()
    pruner = cp.GradualPruner(model, "magnitude", _data(1), sparsity=0.5, end=0)
    pruner.step()
    assert sorted(pruner.squash()) == ["0.weight", "2.weight", "4.weight"]
    assert not any(n.endswith("_mask") for n, _ in model.named_buffers())
    weights = torch.cat([m.weight.reshape(-1) for m in model if isinstance(m, nn.Linear)])
    assert int((weights == 0).sum()) == round(0.5 * weights.numel())


def test_bad_arguments():
    model = _model()
    data = _data(1)
    with pytest.raises(InvalidArgument, match="unknown schedule"):
        cp.GradualPruner(model, "magnitude", data, sparsity=0.5, end=2, schedule="cosine")
    with pytest.raises(InvalidArgument, match="must not exceed"):
        cp.GradualPruner(model, "magnitude", data, sparsity=0.5, initial_sparsity=0.6, end=2)
    with pytest.raises(InvalidArgument, match="before start"):
        cp.GradualPruner(model, "magnitude", data, sparsity=0.5, start=3, end=2)
    with pytest.raises(InvalidArgument, match="frequency"):
        cp.GradualPruner(model, "magnitude", data, sparsity=0.5, end=2, frequency=0)
    with pytest.raises(InvalidArgument, match="does not take"):
        cp.GradualPruner(model, "magnitude", data, sparsity=0.5, end=2, num_probes=3)
    pruner = cp.GradualPruner(model, "magnitude", data, sparsity=0.5, end=2)
    other = cp.GradualPruner(model, "magnitude", data, sparsity=0.6, end=2)
    with pytest.raises(InvalidArgument, match="another schedule"):
        other.load_state_dict(pruner.state_dict())


def test_linear_schedule():
    model = _model()
    pruner = cp.GradualPruner(model, "magnitude", _data(1), sparsity=0.6, end=3, schedule="linear")
    assert [round(p.sparsity, 6) for p in pruner.plan] == [0.0, 0.2, 0.4, 0.6]


def test_resume_when_a_framework_loads_the_weights_before_the_pruner_state():
    """Lightning restores the module's weights before callback states: a pre-hook registers
    the masks, then the pruner's state loads onto the masked model."""
    from curvprune.checkpoint import register_masks

    data = _data()
    first = _model()
    p1 = cp.GradualPruner(first, "magnitude", data, sparsity=0.6, end=2)
    for _ in range(2):
        p1.step()
    fresh = _model(seed=5)
    p2 = cp.GradualPruner(fresh, "magnitude", data, sparsity=0.6, end=2)
    fresh.register_load_state_dict_pre_hook(lambda m, sd, *rest: register_masks(m, sd))
    fresh.load_state_dict(first.state_dict())  # strict, with weight_orig / weight_mask
    p2.load_state_dict(p1.state_dict())
    p1.step(), p2.step()
    assert p2.reached == p1.reached == 0.6
    for key, value in first.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
