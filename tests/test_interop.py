"""curvprune inside torch.nn.utils.prune: importance_scores gives prune's masks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import curvprune as cp
from curvprune.errors import InvalidArgument, InvalidType


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        # tanh: no dead units, so gradient-based scores have no exact ties (ReLU gives zeros)
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 7),
        nn.Tanh(),
        nn.Linear(7, 3),
    )


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(b, 2, 5, 5, generator=gen), torch.randint(0, 3, (b,), generator=gen))
        for b in (4, 3)
    ]


def _torch_masks(model):
    return {n: w.mask() for n, w in cp.prunable_weights(model).items()}


@pytest.mark.parametrize("sparsity", [0.1, 0.37, 0.5, 0.9])
@pytest.mark.parametrize("criterion", ["random", "snip", "fisher", "grasp"])
def test_global_unstructured_gives_prunes_masks(criterion, sparsity):
    model = _model()
    twin = copy.deepcopy(model)
    result = cp.prune(model, criterion, _batches(), sparsity=sparsity, iterations=1)
    imp = cp.importance_scores(twin, result.scores)
    torch_prune.global_unstructured(
        list(imp),
        pruning_method=torch_prune.L1Unstructured,
        importance_scores=imp,
        amount=sparsity,
    )
    theirs = _torch_masks(twin)
    assert set(theirs) == set(result.masks)
    for name, mask in result.masks.items():
        assert torch.equal(theirs[name], mask), name
    assert cp.sparsity_report(twin).sparsity == result.sparsity


def test_ties_prune_the_same_count_but_maybe_other_weights():
    model = _model()
    scores = {n: torch.zeros(w.value().shape) for n, w in cp.prunable_weights(model).items()}
    ours = cp.select_masks(scores, sparsity=0.5)
    imp = cp.importance_scores(model, scores)
    torch_prune.global_unstructured(
        list(imp), pruning_method=torch_prune.L1Unstructured, importance_scores=imp, amount=0.5
    )
    pruned_ours = sum(int((~m).sum()) for m in ours.values())
    pruned_theirs = sum(int((~m).sum()) for m in _torch_masks(model).values())
    assert pruned_ours == pruned_theirs
    # curvprune's ties go by position: all of the first tensor first
    assert not ours["0.weight"].any()


def test_negative_scores_are_shifted_keeping_their_order():
    model = _model()
    scores = {n: torch.randn(w.value().shape) - 3 for n, w in cp.prunable_weights(model).items()}
    imp = cp.importance_scores(model, scores)
    flat_in = torch.cat([s.reshape(-1).double() for s in scores.values()])
    flat_out = torch.cat([t.reshape(-1) for t in imp.values()])
    assert (flat_out >= 0).all()
    assert torch.equal(torch.argsort(flat_in, stable=True), torch.argsort(flat_out, stable=True))
    keys = list(imp)
    assert keys[0] == (model[0], "weight") and keys[-1] == (model[5], "weight")


def test_bad_scores_are_refused():
    model = _model()
    with pytest.raises(InvalidType, match="dict from weight name"):
        cp.importance_scores(model, [torch.ones(3)])
    with pytest.raises(InvalidArgument, match="not trainable weights"):
        cp.importance_scores(model, {"nope.weight": torch.ones(3)})
