"""WoodTaylor: scores and update against dense F⁻¹ (torch.linalg.inv), and its loss ordering."""

import copy

import pytest
import reference as ref
import torch
from cases import CASES, DT
from test_woodfisher import dense_blocks
from torch import nn

import curvprune as cp
from curvprune._core.params import prunable_weights
from curvprune.curvature.woodfisher import inverse_fisher_blocks, woodtaylor_update


def _blockwise(blocks, u):
    """Apply a list of dense blocks to a flat vector."""
    parts, s = [], 0
    for b in blocks:
        parts.append(b @ u[s : s + b.shape[0]])
        s += b.shape[0]
    return torch.cat(parts)


@pytest.mark.parametrize("absolute", [False, True])
def test_scores_match_dense_inverse_and_mean_gradient(absolute):
    """The official per-tensor statistic: ½(θ−h)²/[F⁻¹]qq − ½ḡᵀF⁻¹ḡ (|·|), minus its min."""
    model, batches = CASES[0].build()  # 12 samples: per-sample gradients, ḡ = ∇L
    lam, bs = 1e-3, 30
    got = cp.score(
        model, "woodtaylor", batches, dampening=lam, block_size=bs, woodtaylor_abs=absolute
    )
    g = ref.gradient(model, batches)
    differs = False
    for n, w in prunable_weights(model).items():
        finv = dense_blocks(model, batches, [w.param_name], bs, lam)[w.param_name]
        theta = w.value().reshape(-1)
        gbar = g[w.param_name].reshape(-1)
        h = _blockwise(finv, gbar)
        diag = torch.cat([b.diagonal() for b in finv])
        stat = 0.5 * (theta - h) ** 2 / diag - 0.5 * gbar.dot(h)
        stat = stat.abs() if absolute else stat
        want = (stat - stat.min()).reshape(w.value().shape)
        torch.testing.assert_close(got[n], want, rtol=1e-8, atol=1e-12)
        assert got[n].min() == 0  # shifted by the tensor's own minimum
        plain = 0.5 * (theta - h) ** 2 / diag
        differs |= not torch.allclose(want.reshape(-1), plain - plain.min())
    assert differs == absolute  # |·| of the statistic with its −½ḡᵀF⁻¹ḡ changes the order


def test_normalize_update_bounds_each_tensors_step_by_its_weights_norm():
    model, batches = CASES[0].build()
    theta = {n: w.value().clone() for n, w in prunable_weights(model).items()}
    kw = {"sparsity": 0.3, "dampening": 1e-6, "block_size": 30}  # tiny λ: a huge −h step
    free, bound = copy.deepcopy(model), copy.deepcopy(model)
    cp.prune(free, "woodtaylor", batches, **kw)
    cp.prune(bound, "woodtaylor", batches, normalize_update=0.5, **kw)
    for n, w in prunable_weights(bound).items():
        step = w.value() - theta[n]
        free_step = prunable_weights(free)[n].value() - theta[n]
        assert free_step.norm() > theta[n].norm()  # the bound applies to this tensor
        # δ has norm 0.5‖θ‖, then the mask zeroes the pruned weights' part of θ + δ
        keep = w.value() != 0
        assert step[keep].norm() <= 0.5 * theta[n].norm() * (1 + 1e-6)
    with pytest.raises(cp.InvalidArgument, match="normalize_update must be > 0, got 0"):
        cp.score(model, "woodtaylor", batches, normalize_update=0)


def test_single_weight_update_matches_dense_formula():
    model, batches = CASES[0].build()
    name, lam, bs = "1.weight", 1e-3, 24
    blocks = inverse_fisher_blocks(model, None, batches, [name], dampening=lam, block_size=bs)
    theta = {name: model[1].weight.detach()}
    q = 29  # in the second of three blocks
    keep = torch.ones(72, dtype=torch.bool)
    keep[q] = False
    delta = woodtaylor_update(blocks, theta, {name: keep.reshape(6, 12)})[name].reshape(-1)
    finv = dense_blocks(model, batches, [name], bs, lam)[name]
    g = ref.gradient(model, batches)[name].reshape(-1)
    h = _blockwise(finv, g)  # F⁻¹ḡ, block by block
    w = theta[name].reshape(-1)
    s = torch.zeros(72, dtype=DT)
    s[q] = -(w[q] - h[q]) / finv[1][q - bs, q - bs]
    want = _blockwise(finv, s) - h
    torch.testing.assert_close(delta, want, rtol=1e-8, atol=1e-12)
    assert abs(w[q] + delta[q]) < 1e-10  # the update zeroes the pruned weight by itself


def _quadratic_problem(seed):
    """Least squares ½ mean (xᵀθ − y)², unit noise (so F ≈ H), θ near but not at the optimum."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2000, 10, generator=gen, dtype=DT)
    x[:, :5] *= 2  # unequal curvature
    w_true = torch.randn(10, generator=gen, dtype=DT)
    y = x @ w_true + torch.randn(2000, generator=gen, dtype=DT)
    model = nn.Linear(10, 1, bias=False).to(DT)
    best = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.reshape(1, 10)
    with torch.no_grad():
        model.weight.copy_(best + 0.05 * torch.randn(1, 10, generator=gen, dtype=DT))

    def loss(out, target):
        return 0.5 * ((out.squeeze(1) - target) ** 2).mean()

    return model, [(x[:1000], y[:1000]), (x[1000:], y[1000:])], loss


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sparsity", [0.1, 0.2])
def test_update_never_worse_than_masking_alone_on_a_quadratic(seed, sparsity):
    model, batches, loss = _quadratic_problem(seed)
    x, y = ref.data(batches)
    losses = {}
    for update in (True, False):
        m = copy.deepcopy(model)
        cp.prune(m, "woodtaylor", batches, sparsity=sparsity, loss_fn=loss, update_weights=update)
        with torch.no_grad():
            losses[update] = loss(m(x), y).item()
    assert losses[True] <= losses[False]


def test_prune_applies_the_woodtaylor_update_and_keeps_masks():
    model, batches = CASES[0].build()
    plain = copy.deepcopy(model)
    cp.prune(model, "woodtaylor", batches, sparsity=0.3, dampening=1e-2)
    cp.prune(plain, "woodtaylor", batches, sparsity=0.3, dampening=1e-2, update_weights=False)
    kept = model[1].weight_mask.bool()
    assert torch.equal(kept, plain[1].weight_mask.bool())
    original = CASES[0].build()[0][1].weight.detach()
    assert torch.equal(plain[1].weight_orig, original)
    assert not torch.allclose(model[1].weight_orig[kept], original[kept])
    assert torch.all(model[1].weight[~kept] == 0)
