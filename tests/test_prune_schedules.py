"""prune's round schedules, the criteria's default schedules and the seed-code variants."""

import copy

import pytest
import torch
from cases import CASES

import curvprune as cp
from curvprune._core.params import prunable_weights
from curvprune.pruning.oneshot import SCHEDULES, round_sparsities


def test_round_sparsities_of_every_schedule():
    s, k = 0.9, 4
    assert round_sparsities(s, k) == round_sparsities(s, k, "exponential")  # the old call
    for t, got in enumerate(round_sparsities(s, k, "exponential"), 1):
        assert 1 - got == pytest.approx((1 - s) ** (t / k))
    assert round_sparsities(s, k, "linear") == pytest.approx([0.225, 0.45, 0.675, 0.9])
    pruned = round_sparsities(s, k, "exponential_pruned")
    assert pruned == pytest.approx([s ** (t / k) for t in range(1, k + 1)])
    assert all(r[-1] == s for r in (round_sparsities(s, k, x) for x in SCHEDULES))
    # the HTS repository's SynFlow loop: the first of 100 rounds to 0.9 prunes 99.9%
    assert round_sparsities(0.9, 100, "exponential_pruned")[0] > 0.998
    with pytest.raises(cp.InvalidArgument, match="valid schedules: linear, exponential, "):
        round_sparsities(s, k, "cubic")


def test_default_schedules_come_from_the_registry():
    crit = cp.CRITERIA
    assert crit["woodfisher"].default_schedule == crit["woodtaylor"].default_schedule == "linear"
    assert crit["oba"].default_iterations == crit["oba_full"].default_iterations == 49
    assert crit["synflow"].schedule_for({}) == "exponential"
    assert crit["synflow"].schedule_for({"variant": "pai_code"}) == "exponential_pruned"
    others = {n for n, c in crit.items() if c.default_schedule != "exponential"}
    assert others == {"woodfisher", "woodtaylor"}


def _fraction(masks):
    return sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def test_linear_schedule_is_woodfishers_default_and_rounds_are_reported():
    model, batches = CASES[0].build()  # 90 prunable weights
    result = cp.prune(model, "woodfisher", batches, sparsity=0.6, iterations=3, dampening=1e-3)
    assert result.schedule == "linear" and result.rounds == 3
    assert result.round_sparsities == pytest.approx([0.2, 0.4, 0.6], abs=0.5 / 90)
    model, batches = CASES[0].build()
    result = cp.prune(model, "magnitude", batches, sparsity=0.6, iterations=3, schedule="linear")
    assert result.round_sparsities == pytest.approx([0.2, 0.4, 0.6], abs=0.5 / 90)
    model, batches = CASES[0].build()
    result = cp.prune(model, "magnitude", batches, sparsity=0.6, iterations=3)
    want = round_sparsities(0.6, 3)
    assert result.schedule == "exponential"
    assert result.round_sparsities == pytest.approx(want, abs=0.5 / 90)
    with pytest.raises(cp.InvalidArgument, match="unknown schedule 'cubic'"):
        cp.prune(model, "magnitude", batches, sparsity=0.7, schedule="cubic")


def _hts_synflow_loop(model, batches, sparsity, rounds):
    """The HTS repository's prune_loop: mask afresh each round at sparsity^(t/k) from the
    scores of the masked model; the weights keep losing entries; the final mask is returned."""
    work = copy.deepcopy(model)
    weights = prunable_weights(work)
    original = {n: w.value().clone() for n, w in weights.items()}
    live = {n: torch.ones_like(t, dtype=torch.bool) for n, t in original.items()}
    for t in range(1, rounds + 1):
        with torch.no_grad():
            for n, w in weights.items():
                getattr(w.module, w.attr).copy_(original[n] * live[n])
        masks = cp.select_masks(
            cp.score(work, "synflow", batches), sparsity=sparsity ** (t / rounds)
        )
        live = {n: live[n] & masks[n] for n in live}
    return masks, live


def test_synflow_pai_code_reproduces_the_hts_loop():
    model, batches = CASES[1].build()  # cnn, 210 prunable weights
    want, live = _hts_synflow_loop(model, batches, 0.5, 5)
    result = cp.prune(model, "synflow", batches, sparsity=0.5, iterations=5, variant="pai_code")
    assert result.schedule == "exponential_pruned"
    assert result.round_sparsities == pytest.approx(
        round_sparsities(0.5, 5, "exponential_pruned"), abs=0.5 / 210
    )
    assert result.round_sparsities[0] > 0.85  # the first round prunes 0.5^(1/5) = 87%
    for n, m in want.items():
        assert torch.equal(result.masks[n], m), n
    # weights pruned in round 1 come back with their original values, as in the HTS code
    assert _fraction(live) > 0.85 and result.sparsity == pytest.approx(0.5, abs=0.5 / 210)
    original = CASES[1].build()[0]
    for n, w in prunable_weights(model).items():
        orig = dict(original.named_parameters())[n]
        torch.testing.assert_close(w.value(), orig.detach() * result.masks[n])


def test_regrowing_schedule_refuses_a_weight_update():
    model, batches = CASES[0].build()
    with pytest.raises(cp.InvalidArgument, match="brings pruned weights back"):
        cp.prune(
            model, "woodfisher", batches, sparsity=0.5, iterations=2, schedule="exponential_pruned"
        )
