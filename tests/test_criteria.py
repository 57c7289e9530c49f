"""Every criterion against its formula, with references from brute force."""

import pytest
import reference as ref
import torch
from cases import CASE_IDS, CASES, DT
from torch import nn

import curvprune as cp
from curvprune._core.params import prunable_weights

RTOL, ATOL = 1e-7, 1e-12


def _setup(case):
    model, batches = case.build()
    weights = prunable_weights(model)
    theta = {n: w.value() for n, w in weights.items()}
    return model, batches, weights, theta


def _close(got, want):
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=RTOL, atol=ATOL, msg=n)


def _dense_restricted_hvp(model, batches, weights, vec_by_weight, matrix=None):
    """H v (or `matrix` v) with v nonzero only at the prunable weights, read off there."""
    params = dict(model.named_parameters())
    full = {n: torch.zeros_like(p) for n, p in params.items()}
    for n, w in weights.items():
        full[w.param_name] = vec_by_weight[n]
    matrix = ref.hessian(model, batches) if matrix is None else matrix
    hv = ref.unflatten(model, matrix @ ref.flatten(full, model))
    return {n: hv[w.param_name] for n, w in weights.items()}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_first_and_second_order_criteria(case):
    model, batches, weights, theta = _setup(case)
    g_all = ref.gradient(model, batches)
    g = {n: g_all[w.param_name] for n, w in weights.items()}
    f_all = ref.fisher_diag(model, batches)
    f = {n: f_all[w.param_name] for n, w in weights.items()}

    _close(cp.score(model, "magnitude", batches), {n: t.abs() for n, t in theta.items()})
    _close(cp.score(model, "snip", batches), {n: (t * g[n]).abs() for n, t in theta.items()})
    _close(cp.score(model, "fisher", batches), {n: 0.5 * t * t * f[n] for n, t in theta.items()})
    _close(
        cp.score(model, "fts", batches),
        {n: (t * g[n] + 0.5 * t * t * f[n]).abs() for n, t in theta.items()},
    )
    h = ref.hessian(model, batches)
    hg = _dense_restricted_hvp(model, batches, weights, g, h)
    want = {n: t * hg[n] for n, t in theta.items()}
    _close(cp.score(model, "grasp", batches, temperature=1), want)
    # the PaI repositories' GraSP: g and the product over every parameter, no temperature
    h_g_all = ref.unflatten(model, h @ ref.flatten(g_all, model))
    pai = {n: -t * h_g_all[weights[n].param_name] for n, t in theta.items()}
    _close(cp.score(model, "grasp", batches, temperature=1, variant="pai_code"), pai)
    _close(cp.score(model, "grasp", batches, variant="pai_code"), pai)
    # OBA: (H − G)θ, G = Jᵀ(∇²ℓ)J from explicit Jacobians; oba_full: the full H
    h_theta = _dense_restricted_hvp(model, batches, weights, theta, h)
    r_theta = _dense_restricted_hvp(
        model, batches, weights, theta, h - ref.gauss_newton(model, batches)
    )
    for name, product in (("oba", r_theta), ("oba_full", h_theta)):
        raw = {n: (t * product[n]).abs() for n, t in theta.items()}
        _close(cp.score(model, name, batches, normalize="none", add_magnitude=False), raw)
        _close(  # the defaults: per-tensor max normalisation, + |θ|
            cp.score(model, name, batches),
            {n: s / s.max() + theta[n].abs() for n, s in raw.items()},
        )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fts_table_baselines_against_per_sample_loops(case):
    """GradNorm |g|, Fisher Diagonal F and FBSS ((F+λ)/2)(θ − g/(F+λ))² from per-sample loops."""
    model, batches, weights, theta = _setup(case)
    g_all, f_all = ref.gradient(model, batches), ref.fisher_diag(model, batches)
    g = {n: g_all[w.param_name] for n, w in weights.items()}
    f = {n: f_all[w.param_name] for n, w in weights.items()}
    _close(cp.score(model, "gradnorm", batches), {n: g[n].abs() for n in theta})
    _close(cp.score(model, "fisher_diag", batches), f)
    for lam in (1e-8, 0.3):
        opts = {} if lam == 1e-8 else {"dampening": lam}
        want = {n: 0.5 * (f[n] + lam) * (t - g[n] / (f[n] + lam)) ** 2 for n, t in theta.items()}
        _close(cp.score(model, "fbss", batches, **opts), want)


def test_fbss_dampening_must_be_positive_and_keeps_pruned_weights_finite():
    model, batches, *_ = _setup(CASES[-1])  # pruned_mlp: F = g = 0 at pruned weights
    s = cp.score(model, "fbss", batches)
    mask = model[1].weight_mask.bool()
    assert torch.all(s["1.weight"][~mask] == 0)
    with pytest.raises(cp.InvalidArgument, match="dampening must be"):
        cp.score(model, "fbss", batches, dampening=0)


def test_grasp_and_synflow_variants_are_checked():
    model, batches, *_ = _setup(CASES[0])
    for crit in ("grasp", "synflow"):
        with pytest.raises(cp.InvalidArgument, match="variant must be one of original, pai_code"):
            cp.score(model, crit, batches, variant="paper")
    a = cp.score(model, "synflow", batches)
    b = cp.score(model, "synflow", batches, variant="pai_code")
    assert all(torch.equal(a[n], b[n]) for n in a)  # the variant changes only the schedule


def test_fisher_batch_size_option_uses_chunk_gradients():
    model, batches, weights, theta = _setup(CASES[0])
    f = ref.fisher_diag(model, batches, chunk=4)
    _close(
        cp.score(model, "fisher", batches, fisher_batch_size=4),
        {n: 0.5 * t * t * f[weights[n].param_name] for n, t in theta.items()},
    )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_hp_is_exactly_half_theta_squared_times_hutchinson(case):
    model, batches, weights, theta = _setup(case)
    d = cp.hutchinson_diag(model, None, batches, num_probes=3, seed=9)
    hp = cp.score(model, "hp", batches, num_probes=3, seed=9, temperature=1)
    for n, t in theta.items():
        assert torch.equal(hp[n], 0.5 * t * t * d[weights[n].param_name])
    g = ref.gradient(model, batches)
    hts = cp.score(model, "hts", batches, num_probes=3, seed=9, temperature=1)
    _close(
        hts,
        {
            n: (t * g[weights[n].param_name] + 0.5 * t * t * d[weights[n].param_name]).abs()
            for n, t in theta.items()
        },
    )


def test_temperature_divides_the_logits():
    model, batches, weights, theta = _setup(CASES[1])
    t_ = 200.0

    def cooled(out, y):
        return nn.functional.cross_entropy(out / t_, y)

    d = cp.hutchinson_diag(model, cooled, batches, num_probes=2, seed=0)
    hp = cp.score(model, "hp", batches, num_probes=2, seed=0, temperature=t_)
    for n, t in theta.items():
        assert torch.equal(hp[n], 0.5 * t * t * d[weights[n].param_name])
    with pytest.raises(cp.InvalidArgument, match="temperature"):
        cp.score(model, "hp", batches, temperature=0)


def test_default_temperature_200_against_references_on_logits_over_200():
    """hp, hts and grasp default to T = 200: g, D and Hg of the cross-entropy of logits / 200."""
    model, batches, weights, theta = _setup(CASES[2])  # cnn_bn_eval

    def cooled(out, y):
        return nn.functional.cross_entropy(out / 200, y)

    g_all = ref.gradient(model, batches, cooled)
    g = {n: g_all[w.param_name] for n, w in weights.items()}
    h = ref.hessian(model, batches, cooled)
    hg = _dense_restricted_hvp(model, batches, weights, g, h)
    _close(cp.score(model, "grasp", batches), {n: t * hg[n] for n, t in theta.items()})
    d = cp.hutchinson_diag(model, cooled, batches, num_probes=2, seed=0)
    d = {n: d[w.param_name] for n, w in weights.items()}
    _close(
        cp.score(model, "hts", batches, num_probes=2),
        {n: (t * g[n] + 0.5 * t * t * d[n]).abs() for n, t in theta.items()},
    )
    _close(
        cp.score(model, "hp", batches, num_probes=2),
        {n: 0.5 * t * t * d[n] for n, t in theta.items()},
    )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_synflow_matches_manual_computation(case):
    model, batches, weights, theta = _setup(case)
    # brute force: a copy with |θ| (masks folded in), float64, eval, summed output of ones
    clone = case.model().to(DT)
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in clone.parameters():
            p.abs_()
        for b in clone.buffers():
            if b.is_floating_point():
                b.abs_()
    clone.eval()
    out = clone(torch.ones(1, *case.input_shape, dtype=DT)).sum()
    params = dict(clone.named_parameters())
    grads = torch.autograd.grad(out, [params[w.param_name] for w in weights.values()])
    want = {n: t.abs() * g for (n, t), g in zip(theta.items(), grads)}
    _close(cp.score(model, "synflow", batches), want)


def test_random_is_seeded():
    model, batches, *_ = _setup(CASES[0])
    a, b = cp.score(model, "random", batches), cp.score(model, "random", batches, seed=0)
    c = cp.score(model, "random", batches, seed=1)
    assert all(torch.equal(a[n], b[n]) for n in a) and not torch.equal(a["1.weight"], c["1.weight"])


def test_scores_of_pruned_model_are_keyed_by_weight_name_and_zero_where_pruned():
    model, batches, weights, _ = _setup(CASES[-1])  # pruned_mlp
    mask = model[1].weight_mask.bool()
    for crit in ["magnitude", "snip", "fisher", "fts", "oba", "oba_full", "synflow", "gradnorm"]:
        s = cp.score(model, crit, batches)
        assert set(s) == {"1.weight", "3.weight"}
        assert torch.all(s["1.weight"][~mask] == 0), crit


def test_prunable_selection_by_names_and_predicate():
    model, batches, *_ = _setup(CASES[2])  # cnn_bn_eval
    assert set(cp.score(model, "magnitude", batches)) == {"0.weight", "5.weight"}
    only = cp.score(model, "magnitude", batches, prunable=["1.weight"])
    assert set(only) == {"1.weight"}  # a BatchNorm weight, chosen by name
    conv = cp.score(
        model,
        "magnitude",
        batches,
        prunable=lambda name, m: isinstance(m, nn.Conv2d) and name.endswith("weight"),
    )
    assert set(conv) == {"0.weight"}


def test_one_shot_generator_batches_work_for_two_pass_criteria():
    model, batches, *_ = _setup(CASES[0])
    a = cp.score(model, "fts", iter(batches))
    b = cp.score(model, "fts", batches)
    assert all(torch.allclose(a[n], b[n]) for n in a)


def test_criteria_with_a_variant_option_list_their_variants_and_accept_each():
    from curvprune.criteria.registry import CRITERIA

    model, batches, *_ = _setup(CASES[0])
    for name, crit in CRITERIA.items():
        takes = "variant" in crit.options or "variant" in crit.channel_options
        assert bool(crit.variants) == takes, name
        assert not crit.variants or crit.variants[0] == "original", name
        for variant in crit.variants if crit.unstructured else ():
            cp.score(model, name, batches, variant=variant)
