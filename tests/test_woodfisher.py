"""WoodFisher: block inverse Fisher vs torch.linalg.inv, the OBS update vs its dense formula."""

import copy

import pytest
import reference as ref
import torch
from cases import CASES, DT
from torch import nn

import curvprune as cp
from curvprune._core.params import prunable_weights
from curvprune.curvature.woodfisher import inverse_fisher_blocks, obs_update


def dense_blocks(model, batches, names, block_size, lam, num_grads=None):
    """Per tensor, the list of dense F⁻¹ blocks from per-sample gradients (brute force)."""
    g = ref.chunk_gradients(model, batches, 1)[:num_grads]
    per = {n: t for n, t in ref.unflatten(model, torch.zeros(g.shape[1], dtype=DT)).items()}
    offsets, i = {}, 0
    for n, t in per.items():
        offsets[n] = (i, i + t.numel())
        i += t.numel()
    out = {}
    for n in names:
        a, b = offsets[n]
        gn = g[:, a:b]
        blocks = []
        for s in range(0, b - a, block_size):
            gb = gn[:, s : s + block_size]
            f = lam * torch.eye(gb.shape[1], dtype=DT) + gb.T @ gb / gb.shape[0]
            blocks.append(torch.linalg.inv(f))
        out[n] = blocks
    return out


@pytest.mark.parametrize("block_size", [5, 7, 40, 200])  # N=12 < d and N >= d; ragged blocks
def test_diag_and_solve_match_dense_inverse(block_size):
    model, batches = CASES[0].build()  # mlp, 12 samples
    names = ["1.weight", "3.weight", "3.bias"]
    lam = 1e-3
    blocks = inverse_fisher_blocks(
        model, None, batches, names, dampening=lam, block_size=block_size
    )
    dense = dense_blocks(model, batches, names, block_size, lam)
    diag = blocks.diag()
    gen = torch.Generator().manual_seed(0)
    u = {n: torch.randn(blocks.shapes[n], generator=gen, dtype=DT) for n in names}
    solved = blocks.solve(u)
    for n in names:
        want_diag = torch.cat([b.diagonal() for b in dense[n]])
        torch.testing.assert_close(diag[n].reshape(-1), want_diag, rtol=1e-8, atol=0)
        flat, parts, s = u[n].reshape(-1), [], 0
        for b in dense[n]:
            parts.append(b @ flat[s : s + b.shape[0]])
            s += b.shape[0]
        torch.testing.assert_close(solved[n].reshape(-1), torch.cat(parts), rtol=1e-8, atol=1e-10)


def test_scores_and_num_grads():
    model, batches = CASES[0].build()
    theta = {n: w.value() for n, w in prunable_weights(model).items()}
    lam, bs = 1e-4, 30
    dense = dense_blocks(model, batches, list(theta), bs, lam, num_grads=8)
    got = cp.score(model, "woodfisher", batches, dampening=lam, block_size=bs, num_grads=8)
    for n, t in theta.items():
        diag = torch.cat([b.diagonal() for b in dense[n]]).reshape(t.shape)
        torch.testing.assert_close(got[n], t * t / (2 * diag), rtol=1e-8, atol=1e-14)
    with pytest.raises(cp.InvalidArgument, match="num_grads=99"):
        cp.score(model, "woodfisher", batches, num_grads=99)


def test_single_weight_obs_update_matches_dense_formula():
    model, batches = CASES[0].build()
    name, lam, bs = "1.weight", 1e-3, 24
    blocks = inverse_fisher_blocks(model, None, batches, [name], dampening=lam, block_size=bs)
    theta = {name: model[1].weight.detach()}
    q = 29  # in the second block, not aligned to a row
    keep = torch.ones(72, dtype=torch.bool)
    keep[q] = False
    delta = obs_update(blocks, theta, {name: keep.reshape(6, 12)})[name].reshape(-1)
    finv = dense_blocks(model, batches, [name], bs, lam)[name][1]
    qb = q - bs
    want = torch.zeros(72, dtype=DT)
    want[bs : 2 * bs] = -finv[:, qb] * theta[name].reshape(-1)[q] / finv[qb, qb]
    torch.testing.assert_close(delta, want, rtol=1e-8, atol=1e-12)
    # the update zeroes the pruned weight by itself
    assert abs(theta[name].reshape(-1)[q] + delta[q]) < 1e-10


def test_prune_applies_the_update_only_when_asked():
    model, batches = CASES[0].build()
    plain = copy.deepcopy(model)
    cp.prune(model, "woodfisher", batches, sparsity=0.3)
    cp.prune(plain, "woodfisher", batches, sparsity=0.3, update_weights=False)
    kept = model[1].weight_mask.bool()
    assert torch.equal(kept, plain[1].weight_mask.bool())
    original = CASES[0].build()[0][1].weight.detach()
    assert torch.equal(plain[1].weight_orig, original)
    assert not torch.allclose(model[1].weight_orig[kept], original[kept])


def _trained_tiny_model():
    torch.manual_seed(0)
    x = torch.randn(64, 6, dtype=DT)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + 1e-3 * sum(
            (p * p).sum() for p in model.parameters()
        )
        loss.backward()
        return loss

    opt.step(closure)
    return model, [(x[:32], y[:32]), (x[32:], y[32:])]


@pytest.mark.parametrize("sparsity", [0.02, 0.05, 0.1])
def test_obs_update_never_worse_than_masking_alone(sparsity):
    model, batches = _trained_tiny_model()
    x, y = ref.data(batches)
    losses = {}
    for update in (True, False):
        m = copy.deepcopy(model)
        cp.prune(m, "woodfisher", batches, sparsity=sparsity, dampening=1e-4, update_weights=update)
        with torch.no_grad():
            losses[update] = nn.functional.cross_entropy(m(x), y).item()
    assert losses[True] <= losses[False]


def test_iterated_woodfisher_recomputes_and_keeps_pruned_weights_out():
    model, batches = CASES[0].build()
    result = cp.prune(model, "woodfisher", batches, sparsity=0.5, iterations=3, dampening=1e-3)
    assert result.rounds == 3 and result.sparsity == pytest.approx(0.5, abs=1 / 90)
    effective = model[1].weight
    assert torch.all(effective[~model[1].weight_mask.bool()] == 0)


def test_memory_refusal_also_for_streams_of_unknown_length():
    model, batches = CASES[0].build()
    with pytest.raises(cp.InvalidArgument, match="WoodFisher needs about"):
        inverse_fisher_blocks(model, None, iter(batches), ["1.weight"], max_memory="1KiB")


def test_renamed_blocks_keep_their_factors_for_the_update():
    model, batches = CASES[0].build()
    blocks = inverse_fisher_blocks(model, None, batches, ["1.weight"], block_size=30)
    diag = blocks.diag()
    assert blocks._cache  # factors from diag are kept
    moved = blocks.renamed({"1.weight": "w"})
    assert set(k[0] for k in moved._cache) == {"w"}
    u = {"w": torch.ones(6, 12, dtype=DT)}
    torch.testing.assert_close(moved.solve(u)["w"], blocks.solve({"1.weight": u["w"]})["1.weight"])
    torch.testing.assert_close(moved.diag()["w"], diag["1.weight"])
