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


def _dense_restricted_hvp(model, batches, weights, vec_by_weight):
    """H v with v nonzero only at the prunable weights, read off there (dense H)."""
    params = dict(model.named_parameters())
    full = {n: torch.zeros_like(p) for n, p in params.items()}
    for n, w in weights.items():
        full[w.param_name] = vec_by_weight[n]
    hv = ref.unflatten(model, ref.hessian(model, batches) @ ref.flatten(full, model))
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
    hg = _dense_restricted_hvp(model, batches, weights, g)
    _close(cp.score(model, "grasp", batches), {n: t * hg[n] for n, t in theta.items()})
    h_theta = _dense_restricted_hvp(model, batches, weights, theta)
    oba = {n: (t * h_theta[n]).abs() for n, t in theta.items()}
    _close(cp.score(model, "oba", batches), oba)
    _close(
        cp.score(model, "oba", batches, normalize="max", add_magnitude=True),
        {n: s / s.max() + theta[n].abs() for n, s in oba.items()},
    )


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
    hp = cp.score(model, "hp", batches, num_probes=3, seed=9)
    for n, t in theta.items():
        assert torch.equal(hp[n], 0.5 * t * t * d[weights[n].param_name])
    g = ref.gradient(model, batches)
    hts = cp.score(model, "hts", batches, num_probes=3, seed=9)
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
    for crit in ["magnitude", "snip", "fisher", "fts", "oba", "synflow"]:
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
