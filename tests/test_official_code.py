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


def test_every_entry_point_scores_in_eval_mode_and_restores_the_flags():
    """cp.prune, GradualPruner, prune_channels / channel_scores and CurvatureImportance."""
    from curvprune.structured import CurvatureImportance, channel_scores

    batches = _batches((12,), (4, 4))
    x = batches[0][0][:1]

    def pair():
        model = _bn_mlp()
        with torch.no_grad():
            model[2].running_mean.uniform_(-0.5, 0.5)
        frozen = _bn_mlp()
        frozen.load_state_dict(model.state_dict())
        return model, frozen.eval()  # as built (train mode), and an eval-mode copy

    model, frozen = pair()
    a = cp.prune(model, "fisher", batches, sparsity=0.5)
    b = cp.prune(frozen, "fisher", batches, sparsity=0.5)
    assert model.training and all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    model, frozen = pair()
    pruner = cp.GradualPruner(model, "snip", batches, sparsity=0.5, end=0)
    pruner.step()
    assert model.training
    assert torch.equal(
        pruner.masks()["1.weight"],
        cp.prune(frozen, "snip", batches, sparsity=0.5).masks["1.weight"],
    )
    model, frozen = pair()
    got = channel_scores(model, "fts", batches, example_inputs=x)
    want = channel_scores(frozen, "fts", batches, example_inputs=x)
    assert model.training and all(torch.equal(got[k], want[k]) for k in want)
    trained = channel_scores(model, "taylor", batches, example_inputs=x, mode="train")
    assert not torch.allclose(
        trained["1"], channel_scores(frozen, "taylor", batches, example_inputs=x)["1"]
    )
    imp = CurvatureImportance("fisher", batches)
    got, want = imp.terms(model).per_weight, imp.terms(frozen).per_weight
    assert model.training and all(torch.equal(got[k], want[k]) for k in want)


# ------------------------------------------------------------------------------ (4), (5) OBA


def _oba_code_importance(terms, model, eps=1e-6):
    """OBAPruner.unstructured_prune: |terms| / (max + 1e-6) + |θ|, weights and biases apart."""
    return {
        n: t.abs() / (t.abs().max() + eps) + model.get_parameter(n).detach().abs()
        for n, t in terms.items()
    }


def _relative(a, b):
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float((a - b).norm())


def test_oba_code_variant_is_the_official_unstructured_pass_with_the_forward_activations():
    """With ReLU masks and max-pool indices from the forward activation, the OBA code's terms
    are θ ⊙ ((H − G)θ) over every Linear/Conv weight and bias; `variant="oba_code"` scores and
    thresholds exactly those tensors, normalised as the code does."""
    cases = [
        (relu_mlp(), _batches((12,), (4, 4)), "train"),  # no BatchNorm: the mode is immaterial
        (bn_cnn(), _batches((1, 6, 6), (4, 4)), "eval"),  # BatchNorm in eval mode
    ]
    for model, batches, mode in cases:
        fixed = ref.oba_code_terms(model, batches)
        assert set(fixed) == {n for n, _ in model.named_parameters() if not _is_bn(model, n)}
        # the formula: (H − G) θ with θ zero on BatchNorm
        h_minus_g = ref.hessian(model, batches) - ref.gauss_newton(model, batches)
        theta = {n: model.get_parameter(n).detach() for n in fixed}
        product = _dense_product(model, batches, theta, h_minus_g)
        _close(fixed, {n: t * product[n] for n, t in theta.items()}, atol=1e-15)
        got = cp.score(model, "oba", batches, variant="oba_code", mode=mode)
        _close(got, _oba_code_importance(fixed, model))


def _is_bn(model, name):
    return isinstance(model.get_submodule(name.rsplit(".", 1)[0]), nn.BatchNorm2d)


def test_the_official_oba_code_as_shipped_differs_where_the_tangent_is_not_the_activation():
    """Issue 20 (5): the code's ReLU masks and max-pool indices come from the stored tangent.

    On a bias-free ReLU MLP the tangent along θ is a positive multiple of each layer's output
    (the network is positively homogeneous), so the shipped code is right there; with biases
    or BatchNorm it is not (per-layer relative differences printed by ``-s``)."""
    bias_free = relu_mlp(bias=False)
    batches = _batches((12,), (4, 4))
    shipped = ref.oba_code_terms(bias_free, batches, tangent_masks=True)
    _close(shipped, ref.oba_code_terms(bias_free, batches), atol=1e-15)
    got = cp.score(bias_free, "oba", batches, variant="oba_code")
    _close(got, _oba_code_importance(shipped, bias_free))
    differences = {}
    for name, model, shape in (("mlp", relu_mlp(), (12,)), ("cnn", bn_cnn(), (1, 6, 6))):
        batches = _batches(shape, (4, 4))
        fixed = ref.oba_code_terms(model, batches)
        shipped = ref.oba_code_terms(model, batches, tangent_masks=True)
        differences[name] = {n: _relative(shipped[n], fixed[n]) for n in fixed}
        print(name, {n: round(d, 3) for n, d in differences[name].items()})
    assert max(differences["mlp"].values()) > 0.01
    assert max(differences["cnn"].values()) > 0.1
    assert differences["cnn"]["0.weight"] < 1e-12  # the first layer sees no tangent


def test_oba_code_prunes_weights_and_biases_under_one_threshold():
    model, batches = relu_mlp(), _batches((12,), (4, 4))
    importance = _oba_code_importance(ref.oba_code_terms(model, batches), model)
    flat = torch.cat([t.flatten() for t in importance.values()])
    kept = round(0.3 * flat.numel())
    threshold = flat.topk(kept).values[-1]
    result = cp.prune(model, "oba", batches, sparsity=0.7, variant="oba_code", iterations=1)
    assert set(result.masks) == set(importance)  # biases are scored and masked too
    for n, t in importance.items():
        assert torch.equal(result.masks[n], t >= threshold), n
    assert cp.sparsity_report(model, list(importance)).sparsity == result.sparsity
    assert all(hasattr(model[i], "bias_mask") for i in (1, 3, 5))


def test_oba_variant_settings_can_be_overridden_one_by_one():
    model, batches = relu_mlp(), _batches((12,), (4, 4))
    weights_only = cp.score(model, "oba", batches, variant="oba_code", biases=False)
    assert set(weights_only) == {"1.weight", "3.weight", "5.weight"}
    plain = cp.score(model, "oba", batches)
    assert set(plain) == set(weights_only)
    # the default reads θ over the prunable weights only: the biases' cross terms are left out
    assert not torch.allclose(plain["3.weight"], weights_only["3.weight"])
    with_biases = cp.score(model, "oba", batches, biases=True)
    assert set(with_biases) == set(cp.score(model, "oba", batches, variant="oba_code"))


def test_oba_full_code_variant_is_fastoba_over_every_parameter():
    """FastOBAPruner (order 2, one batch): s = θ ⊙ Hθ with θ every parameter; weights and
    biases of Linear/Conv scored as |s| / max|s| + |θ| / max over all parameters of |θ|."""
    model, batches = bn_cnn(), _batches((1, 6, 6), (6,))
    h = ref.hessian(model, batches)
    theta = {n: p.detach() for n, p in model.named_parameters()}
    hv = _dense_product(model, batches, theta, h)
    largest = max(t.abs().max() for t in theta.values())
    scored = [n for n in theta if not _is_bn(model, n)]
    s = {n: (theta[n] * hv[n]).abs() for n in scored}
    want = {n: s[n] / s[n].max() + theta[n].abs() / largest for n in scored}
    _close(cp.score(model, "oba_full", batches, variant="oba_code", mode="eval"), want)


def test_oba_code_channel_scores_give_batchnorm_zero_importance():
    """HessianImportance (multivariable, group mean, max): per coupled Linear/Conv layer
    |Σ slice θ ⊙ ((H − G)θ)|, θ zero on BatchNorm and BatchNorm layers zero, averaged over the
    group's layers with a non-zero slice, ÷ (max + 1e-6)."""
    from test_structured import _slices, tiny

    from curvprune.structured import channel_scores

    model, batches = tiny()
    x = batches[0][0][:1]
    theta = {n: (torch.zeros_like(p) if n.startswith("bn") else p.detach())
             for n, p in model.named_parameters()}  # fmt: skip
    h_minus_g = ref.hessian(model, batches) - ref.gauss_newton(model, batches)
    product = _dense_product(model, batches, theta, h_minus_g)
    terms = {n: t * product[n] for n, t in theta.items()}
    got = channel_scores(model, "oba", batches, example_inputs=x, variant="oba_code", mode="eval")
    for root, layers in _slices().items():
        per_layer = [f(terms).abs() for f in layers]
        count = sum(bool((p != 0).any()) for p in per_layer)
        assert count == len(layers) - (root == "conv1")  # the BatchNorm slice is zero
        s = sum(per_layer) / count
        torch.testing.assert_close(got[root], s / (s.max() + 1e-6), rtol=RTOL, atol=ATOL)
    # norm_layers=True keeps curvprune's default: BatchNorm in θ and as a layer
    default = channel_scores(model, "oba", batches, example_inputs=x)
    mixed = channel_scores(
        model, "oba", batches, example_inputs=x, variant="oba_code", norm_layers=True, mode="eval"
    )
    assert not torch.allclose(default["conv1"], got["conv1"])
    assert not torch.allclose(mixed["conv1"], got["conv1"])


# --------------------------------------------------------------------------- (6), (7) FTS, FBSS


def test_fts_v1_multiplies_the_batch_fisher_by_the_mask_batch_size():
    """fd_taylor: |θ ḡ + ½ θ² (B · mean_b g_b²)|, g_b the gradient of the batch-mean loss."""
    model = relu_mlp()
    b = 3
    batches = _batches((12,), (b, b, b))
    theta = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}
    per_batch = ref.chunk_gradients(model, batches, b)
    f = ref.unflatten(model, (per_batch * per_batch).mean(0))
    g = ref.unflatten(model, per_batch.mean(0))
    want = {n: (t * g[n] + 0.5 * t * t * b * f[n]).abs() for n, t in theta.items()}
    _close(cp.score(model, "fts", batches, variant="fts_v1", fisher_batch_size=b), want)
    v2 = {n: (t * g[n] + 0.5 * t * t * f[n]).abs() for n, t in theta.items()}
    _close(cp.score(model, "fts", batches, fisher_batch_size=b), v2)
    # at B = 1 the two are one
    one = _batches((12,), (1,) * 5)
    a = cp.score(model, "fts", one, variant="fts_v1")
    _close(a, cp.score(model, "fts", one))


def test_fbss_official_ranks_weights_without_gradient_first_curvprune_last():
    """fd_obs_taylor divides by F with no damping: where F = 0 (and g = 0) the score is
    0 · (θ − ∞·0)² = NaN, and torch.topk puts NaN above every number, so those weights are
    the first kept; curvprune's λ = 1e-8 scores them (λ/2)θ², near zero, so they go first."""
    model = relu_mlp()
    with torch.no_grad():
        model[1].bias[:3] = -100.0  # three dead hidden units: their rows and columns get no g
    batches = _batches((12,), (1,) * 6)
    g, f = ref.gradient(model, batches), ref.fisher_diag(model, batches)
    theta = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}
    with torch.no_grad():
        official = {n: (f[n] / 2) * (t - g[n] / f[n]) ** 2 for n, t in theta.items()}
    flat = torch.cat([s.flatten() for s in official.values()])
    dead = torch.cat([(f[n] == 0).flatten() for n in theta])
    assert flat[dead].isnan().all() and not flat[~dead].isnan().any()
    assert dead.sum() >= 3 * 12 + 3 * 6
    kept = dead.sum().item()  # a sparsity that keeps as many weights as never get a gradient
    assert dead[flat.topk(kept).indices].all()  # the official kept set: only dead weights
    mine = relu_mlp()
    with torch.no_grad():
        mine[1].bias[:3] = -100.0
    ours = torch.cat([s.flatten() for s in cp.score(mine, "fbss", batches).values()])
    assert ours.isfinite().all()
    assert not dead[ours.topk(kept).indices].any()  # curvprune keeps none of them first
    assert dead[(-ours).topk(kept).indices].all()  # and prunes them first
