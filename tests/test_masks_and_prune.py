"""Mask selection, prune's schedule, torch.nn.utils.prune integration, bn_warmup, bad input."""

import math

import pytest
import torch
from cases import CASES, DT
from torch import nn
from torch.nn.utils import prune as torch_prune

import curvprune as cp
from curvprune.pruning.oneshot import round_sparsities


def _scores():
    gen = torch.Generator().manual_seed(0)
    return {"a": torch.randn(7, 5, generator=gen), "b": torch.randn(13, generator=gen)}


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.77, 0.999])
def test_global_masks_prune_exactly_round_sparsity_n_lowest(sparsity):
    scores = _scores()
    masks = cp.select_masks(scores, sparsity=sparsity)
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(sparsity * 48)
    kept = torch.cat([scores[n][masks[n]] for n in scores])
    dropped = torch.cat([scores[n][~masks[n]] for n in scores])
    if len(kept) and len(dropped):
        assert dropped.max() <= kept.min()


def test_layerwise_masks_prune_each_tensor_to_sparsity():
    masks = cp.select_masks(_scores(), sparsity=0.6, scope="layerwise")
    assert int((~masks["a"]).sum()) == round(0.6 * 35)
    assert int((~masks["b"]).sum()) == round(0.6 * 13)


def test_ties_are_broken_by_position_deterministically():
    scores = {"a": torch.zeros(4), "b": torch.zeros(4)}
    masks = cp.select_masks(scores, sparsity=0.5)
    assert masks["a"].tolist() == [False] * 4 and masks["b"].tolist() == [True] * 4


def test_min_density_keeps_a_floor_in_every_tensor():
    scores = {"a": torch.arange(10.0), "b": torch.arange(100.0, 110.0)}
    masks = cp.select_masks(scores, sparsity=0.5, min_density=0.3)
    assert int(masks["a"].sum()) == 3 and masks["a"][-3:].all()
    with pytest.raises(cp.InvalidArgument, match="min_density"):
        cp.select_masks(scores, sparsity=0.9, min_density=0.3)


def test_existing_masks_only_grow():
    scores = {"a": torch.arange(10.0)}
    existing = {"a": torch.tensor([True] * 9 + [False])}  # the best weight is already gone
    masks = cp.select_masks(scores, sparsity=0.3, existing=existing)
    assert not masks["a"][9] and int((~masks["a"]).sum()) == 3
    with pytest.raises(cp.InvalidArgument, match="pruned already"):
        cp.select_masks(scores, sparsity=0.0, existing=existing)


@pytest.mark.parametrize("bad", [1.0, -0.1, math.nan, 1.5, "0.5", True, None])
def test_bad_sparsity_is_rejected_by_name(bad):
    model, batches = CASES[0].build()
    with pytest.raises(ValueError, match="sparsity"):
        cp.prune(model, "magnitude", batches, sparsity=bad)
    assert not hasattr(model[1], "weight_mask")


def test_round_sparsities_follow_the_kept_fraction_power_law():
    steps = round_sparsities(0.9, 4)
    assert steps[-1] == 0.9
    for t, s in enumerate(steps, 1):
        assert 1 - s == pytest.approx(0.1 ** (t / 4))


def test_prune_uses_torch_prune_and_reports():
    model, batches = CASES[0].build()
    result = cp.prune(model, "snip", batches, sparsity=0.75)
    assert torch_prune.is_pruned(model)
    assert set(result.masks) == {"1.weight", "3.weight"}
    n = sum(m.numel() for m in result.masks.values())
    assert sum(int((~m).sum()) for m in result.masks.values()) == round(0.75 * n)
    assert result.sparsity == pytest.approx(round(0.75 * n) / n)
    for name, mask in result.masks.items():
        assert result.layer_density[name] == pytest.approx(mask.float().mean().item())
        assert torch.equal(model.get_submodule(name[:-7]).weight_mask.bool(), mask)
    torch_prune.remove(model[1], "weight")
    assert torch.all(model[1].weight[~result.masks["1.weight"]] == 0)


def test_pruned_weights_stay_zero_through_training():
    model, batches = CASES[1].build()  # cnn
    result = cp.prune(model, "magnitude", batches, sparsity=0.6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(5):
        for x, y in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for name, mask in result.masks.items():
        w = model.get_submodule(name.rpartition(".")[0]).weight
        assert torch.all(w[~mask] == 0) and torch.any(w[mask] != 0)


def test_gradual_calls_accumulate_and_collapse_is_reported():
    model, batches = CASES[0].build()
    first = cp.prune(model, "magnitude", batches, sparsity=0.5)
    second = cp.prune(model, "magnitude", batches, sparsity=0.8)
    assert torch.all(second.masks["1.weight"] <= first.masks["1.weight"])
    assert second.sparsity == pytest.approx(round(0.8 * 90) / 90)
    tiny = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2)).to(DT)
    with torch.no_grad():
        tiny[1].weight.fill_(1e-6)
    res = cp.prune(
        tiny, "magnitude", [(torch.randn(2, 4, dtype=DT), torch.tensor([0, 1]))], sparsity=0.3
    )
    assert res.collapsed == ["1.weight"] and res.layer_density["1.weight"] == 0


def test_synflow_runs_100_rounds_by_default_and_iterations_override():
    model, batches = CASES[0].build()
    assert cp.prune(model, "synflow", batches, sparsity=0.5).rounds == 100
    model, batches = CASES[0].build()
    assert cp.prune(model, "synflow", batches, sparsity=0.5, iterations=3).rounds == 3


def test_bn_warmup_reestimates_statistics_and_leaves_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Dropout(0.5), nn.Linear(3, 2)).to(DT).eval()
    before = {n: p.clone() for n, p in model.named_parameters()}
    batches = [
        (torch.randn(n, 3, dtype=DT) * 2 + 5, torch.zeros(n, dtype=torch.long)) for n in (4, 6)
    ]
    assert cp.bn_warmup(model, batches) is model
    bn = model[0]
    want_mean = torch.stack([x.mean(0) for x, _ in batches]).mean(0)
    want_var = torch.stack([x.var(0) for x, _ in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, want_mean)
    torch.testing.assert_close(bn.running_var, want_var)
    assert bn.momentum == 0.1 and not model.training and not bn.training
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    with pytest.raises(cp.InvalidArgument, match="at least one batch"):
        cp.bn_warmup(model, [])
    torch.testing.assert_close(bn.running_mean, want_mean)  # untouched by the failed call


def test_unknown_criterion_lists_known_ones():
    model, batches = CASES[0].build()
    with pytest.raises(cp.InvalidArgument, match="known criteria: random, magnitude"):
        cp.score(model, "obd", batches)


def test_unknown_option_names_the_valid_ones():
    model, batches = CASES[0].build()
    with pytest.raises(cp.InvalidArgument, match="it takes: num_probes, seed, temperature"):
        cp.prune(model, "hp", batches, sparsity=0.5, dampening=1e-3)
    with pytest.raises(
        cp.InvalidArgument, match=r"criteria with a weight update \(woodfisher, woodtaylor\)"
    ):
        cp.prune(model, "snip", batches, sparsity=0.5, update_weights=True)


def test_list_where_dict_expected_is_a_type_error():
    model, batches = CASES[0].build()
    with pytest.raises(TypeError, match="dict from parameter name"):
        cp.hessian_vector_product(model, None, batches, list(model.parameters()))
    with pytest.raises(TypeError, match="wrap it in a list"):
        cp.loss_gradient(model, None, batches[0])


def test_model_without_prunable_weights_is_a_clear_error():
    model = nn.Sequential(nn.BatchNorm1d(3)).to(DT)
    with pytest.raises(cp.InvalidArgument, match="no prunable weights"):
        cp.score(model, "magnitude", [(torch.randn(2, 3, dtype=DT), torch.tensor([0, 1]))])


def test_non_finite_scores_name_the_tensor():
    model, batches = CASES[0].build()
    with torch.no_grad():
        model[3].weight[0, 0] = math.nan
    with pytest.raises(cp.InvalidArgument, match="'3.weight'"):
        cp.score(model, "magnitude", batches)


def test_bad_numeric_options_are_rejected():
    model, batches = CASES[0].build()
    for kwargs in ({"num_probes": 0}, {"num_probes": 1.5}):
        with pytest.raises(cp.InvalidArgument, match="num_probes"):
            cp.score(model, "hp", batches, **kwargs)
    for kwargs in ({"dampening": -1.0}, {"block_size": 0}, {"num_grads": 0}):
        with pytest.raises(cp.InvalidArgument, match=next(iter(kwargs))):
            cp.score(model, "woodfisher", batches, **kwargs)
    with pytest.raises(cp.InvalidArgument, match="fisher_batch_size"):
        cp.score(model, "fisher", batches, fisher_batch_size=0)
    with pytest.raises(cp.InvalidArgument, match="scope"):
        cp.prune(model, "magnitude", batches, sparsity=0.5, scope="per-layer")
    with pytest.raises(cp.InvalidArgument, match="iterations"):
        cp.prune(model, "magnitude", batches, sparsity=0.5, iterations=0)


def test_make_permanent_folds_masks_into_plain_weights():
    from curvprune.pruning.masks import make_permanent

    model, batches = CASES[0].build()
    result = cp.prune(model, "magnitude", batches, sparsity=0.5)
    assert sorted(make_permanent(model)) == ["1.weight", "3.weight"]
    assert not torch_prune.is_pruned(model)
    assert {n for n, _ in model.named_parameters()} == {"1.weight", "1.bias", "3.weight", "3.bias"}
    assert torch.all(model[1].weight[~result.masks["1.weight"]] == 0)
