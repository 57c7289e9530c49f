"""What the seed papers' official code computes, as formulas, against curvprune (issue 20).

Each reference below is a formula of what the named official file computes, written out on
tiny float64 models (dense Hessians and per-sample loops from `reference`), not its code:
GraSP's ``pruner/GraSP.py`` and the FTS/HTS repositories' ``compressors.grasp_sensitivity``;
the OBA repository's ``OBAPruner`` / ``FastOBAPruner`` and ``HessianImportance``; the FTS
repository's ``fd_taylor`` and ``fd_obs_taylor``. Batches have equal sizes where the official
code averages over batches (its mean over batches equals curvprune's mean over samples then).
"""

from __future__ import annotations

import pytest
import reference as ref
import torch
import torch.nn.functional as F
from cases import DT
from torch import nn

import curvprune as cp

RTOL, ATOL = 1e-7, 1e-12


def _close(got, want, rtol=RTOL, atol=ATOL):
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=rtol, atol=atol, msg=n)


def _batches(shape, sizes, seed=1, classes=3):
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(b, *shape, generator=gen, dtype=DT),
            torch.randint(0, classes, (b,), generator=gen),
        )
        for b in sizes
    ]


def relu_mlp(bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 8, bias=bias),
        nn.ReLU(),
        nn.Linear(8, 6, bias=bias),
        nn.ReLU(),
        nn.Linear(6, 3, bias=bias),
    ).to(DT)


def bn_cnn(seed=0):
    """3 × (Conv–BatchNorm–ReLU) with a max-pool, eval mode, non-trivial BN statistics."""
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 3),
    ).to(DT)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for bn in (m[1], m[5], m[8]):
            k = bn.num_features
            bn.running_mean.copy_(0.3 * torch.randn(k, generator=gen, dtype=DT))
            bn.running_var.copy_(0.5 + torch.rand(k, generator=gen, dtype=DT))
            bn.weight.copy_(0.5 + torch.rand(k, generator=gen, dtype=DT))
            bn.bias.copy_(0.2 * torch.randn(k, generator=gen, dtype=DT))
    return m.eval()


def _dense_product(model, batches, vector, matrix):
    """`matrix` (P×P over the trainable parameters) times `vector` (missing = 0), by name."""
    full = {n: vector.get(n, torch.zeros_like(p)) for n, p in model.named_parameters()}
    return ref.unflatten(model, matrix @ ref.flatten(full, model))


def _spearman(a, b):
    ra, rb = (t.argsort().argsort().double() for t in (a, b))
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


# ------------------------------------------------------------------------------- (1), (2) GraSP


def test_grasp_pai_code_is_the_pai_repositories_formula_over_every_parameter():
    """compressors.grasp_sensitivity: −θ ⊙ (Σ_b H_b)(Σ_b g_b), g and Hg over all parameters."""
    model = bn_cnn()
    batches = _batches((1, 6, 6), (3, 3, 3))
    m = len(batches)
    h = ref.hessian(model, batches)
    g = ref.gradient(model, batches)
    hg = _dense_product(model, batches, g, h)
    # per-batch sums of batch-mean gradients and Hessians: M·g and M·H for equal batches
    official = {n: -p.detach() * (m * m) * hg[n] for n, p in model.named_parameters()}
    got = cp.score(model, "grasp", batches, variant="pai_code")
    _close({n: m * m * s for n, s in got.items()}, {n: official[n] for n in got})
    # the restriction to the prunable weights that pai_code had before is a different ranking
    weights = {n: p.detach() for n, p in model.named_parameters() if n in got}
    restricted = _dense_product(model, batches, {n: g[n] for n in weights}, h)
    old = torch.cat([(-t * restricted[n]).flatten() for n, t in weights.items()])
    new = torch.cat([got[n].flatten() for n in weights])
    assert _spearman(old, new) < 0.999


def test_grasp_original_is_grasps_own_code_restricted_to_conv_and_linear_weights():
    """pruner/GraSP.py: g over Conv2d/Linear weights (two halves summed), H applied to that g,
    read at the same weights, logits / 200; removes the largest −θ ⊙ Hg."""
    model = bn_cnn()
    x, y = ref.data(_batches((1, 6, 6), (6,)))
    halves = [(x[:3], y[:3]), (x[3:], y[3:])]

    def cooled(out, t):
        return F.cross_entropy(out / 200, t)

    h = ref.hessian(model, halves, cooled)
    g = ref.gradient(model, halves, cooled)
    weights = [f"{n}.weight" for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    # Σ over the two halves of the half-mean gradients is 2g, and of H_half·(2g) is 4Hg
    hg = _dense_product(model, halves, {n: 2 * g[n] for n in weights}, 2 * h)
    grasp = {n: -model.get_parameter(n).detach() * hg[n] for n in weights}  # removes largest
    got = cp.score(model, "grasp", halves)
    _close({n: -4 * s for n, s in got.items()}, grasp)  # curvprune leaves the 4 out


def test_grasp_reinit_scores_a_copy_with_redrawn_linear_weights():
    """GraSP's reinit=True: every nn.Linear weight Xavier-normal before scoring, on a copy."""
    model = bn_cnn()
    batches = _batches((1, 6, 6), (3, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = cp.score(model, "grasp", batches, reinit=True, seed=5, temperature=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    clone = bn_cnn()
    clone.load_state_dict(before)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        nn.init.xavier_normal_(clone[11].weight, generator=gen)
    h, g = ref.hessian(clone, batches), ref.gradient(clone, batches)
    weights = {n: p.detach() for n, p in clone.named_parameters() if n in got}
    hg = _dense_product(clone, batches, {n: g[n] for n in weights}, h)
    _close(got, {n: t * hg[n] for n, t in weights.items()})
    plain = cp.score(model, "grasp", batches, temperature=1)
    assert not torch.allclose(plain["11.weight"], got["11.weight"])


# --------------------------------------------------------------------------- (3) scoring mode


def _bn_mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)
    ).to(DT)


def test_scores_use_eval_mode_by_default_and_train_mode_on_request():
    """The PaI code's SNIP: model.eval(), |θ ⊙ Σ_b g_b|; a freshly built model is in train mode."""
    model = _bn_mlp()  # train mode, as built
    with torch.no_grad():
        model[2].running_mean.uniform_(-0.5, 0.5)
        model[2].running_var.uniform_(0.5, 1.5)
    batches = _batches((12,), (4, 4))
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    frozen = _bn_mlp().eval()
    frozen.load_state_dict(model.state_dict())
    g = ref.gradient(frozen, batches)  # per-sample loops, BatchNorm on running statistics
    want = {n: (frozen.get_parameter(n).detach() * g[n]).abs() for n in ("1.weight", "4.weight")}
    _close(cp.score(model, "snip", batches), want)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, dict(model.named_buffers())[k]) for k, v in buffers.items())
    # mode="train": each batch with its own statistics, the batch-mean loss weighted B/N
    trained = cp.score(model, "snip", batches, mode="train")
    assert all(torch.equal(v, dict(model.named_buffers())[k]) for k, v in buffers.items())
    params = [model.get_parameter(n) for n in want]
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        for t, gb in zip(total, torch.autograd.grad(F.cross_entropy(model(x), y), params)):
            t += gb * len(x) / 8
    with torch.no_grad():
        for k, v in buffers.items():
            dict(model.named_buffers())[k].copy_(v)
    _close(trained, {n: (model.get_parameter(n).detach() * t).abs() for n, t in zip(want, total)})
    assert _spearman(trained["1.weight"].flatten(), want["1.weight"].flatten()) < 0.99
    with pytest.raises(cp.InvalidArgument, match="mode must be one of eval, train"):
        cp.score(model, "snip", batches, mode="training")
