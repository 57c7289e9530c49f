"""Curvature estimators against brute-force float64 references on the case table."""

import functools
import math

import pytest
import reference as ref
import torch
from cases import CASE_IDS, CASES, DT
from torch import nn

import curvprune as cp

RTOL, ATOL = 1e-7, 1e-11


@functools.cache
def dense_hessian(case_name):
    """The reference Hessian of a case, computed once per session."""
    model, batches = CASES[CASE_IDS.index(case_name)].build()
    return ref.hessian(model, batches)


def assert_dicts_close(got, want, rtol=RTOL, atol=ATOL):
    assert set(got) == set(want)
    for n in want:
        assert got[n].shape == want[n].shape, n
        torch.testing.assert_close(got[n], want[n], rtol=rtol, atol=atol, msg=n)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_empirical_fisher_matches_per_chunk_loop(case, chunk):
    model, batches = case.build()
    got = cp.empirical_fisher_diag(model, None, batches, fisher_batch_size=chunk)
    assert_dicts_close(got, ref.fisher_diag(model, batches, chunk))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradient_matches_reference(case):
    model, batches = case.build()
    assert_dicts_close(cp.loss_gradient(model, None, batches), ref.gradient(model, batches))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_hessian_vector_product_matches_dense_hessian(case):
    model, batches = case.build()
    gen = torch.Generator().manual_seed(3)
    v = {n: torch.randn(p.shape, generator=gen, dtype=DT) for n, p in model.named_parameters()}
    want = ref.unflatten(model, dense_hessian(case.name) @ ref.flatten(v, model))
    assert_dicts_close(cp.hessian_vector_product(model, None, batches, v), want)


def test_hessian_vector_product_treats_missing_keys_as_zero():
    model, batches = CASES[0].build()
    v = {"1.weight": torch.ones(6, 12, dtype=DT)}
    full = {n: torch.zeros_like(p) for n, p in model.named_parameters()} | v
    assert_dicts_close(
        cp.hessian_vector_product(model, None, batches, v),
        cp.hessian_vector_product(model, None, batches, full),
    )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_hutchinson_within_five_standard_errors(case):
    """z⊙H_b z has mean (H_b)_ii and variance Σ_{j≠i} (H_b)_ij²; every batch b (weight w_b =
    B_b/N) draws its own k probes, so Var D_i = Σ_b w_b² Σ_{j≠i} (H_b)_ij² / k: within 5 SE."""
    model, batches = case.build()
    k = 200
    h = dense_hessian(case.name)
    n = sum(len(b[0]) for b in batches)
    var = 0
    for batch in batches:
        hb = ref.hessian(model, [batch])
        var = var + (len(batch[0]) / n) ** 2 * ((hb * hb).sum(1) - hb.diagonal() ** 2) / k
    se = torch.sqrt(var)
    got = ref.flatten(cp.hutchinson_diag(model, None, batches, num_probes=k, seed=1), model)
    assert torch.all((got - h.diagonal()).abs() <= 5 * se + 1e-12)


def test_hutchinson_error_falls_like_one_over_sqrt_probes():
    model, batches = CASES[0].build()
    exact = dense_hessian(CASES[0].name).diagonal()

    def rms_error(k):
        errs = []
        for seed in range(3):
            d = cp.hutchinson_diag(model, None, batches, num_probes=k, seed=seed)
            errs.append(((ref.flatten(d, model) - exact) ** 2).mean())
        return math.sqrt(sum(errs) / len(errs))

    small, large = rms_error(16), rms_error(256)
    # 16x the probes: error / 4 in expectation; allow a factor 2 of Monte-Carlo slack
    assert large < small / 2


def test_hutchinson_exact_on_quadratic_with_diagonal_hessian():
    """L = mean ½(wᵀx − y)² with one-hot x has diagonal H, so one probe is exact."""
    model = nn.Linear(5, 1, bias=False).to(DT)
    x = torch.eye(5, dtype=DT).repeat(2, 1)[:7]
    y = torch.randn(7, 1, dtype=DT)

    def loss(out, target):
        return 0.5 * ((out - target) ** 2).mean()

    d = cp.hutchinson_diag(model, loss, [(x, y)], num_probes=1, seed=5)["weight"]
    counts = torch.tensor([2, 2, 1, 1, 1], dtype=DT) / 7
    torch.testing.assert_close(d, counts.reshape(1, 5), rtol=1e-12, atol=1e-14)


def test_hutchinson_same_seed_same_result():
    model, batches = CASES[1].build()
    a = cp.hutchinson_diag(model, None, batches, num_probes=3, seed=4)
    b = cp.hutchinson_diag(model, None, batches, num_probes=3, seed=4)
    c = cp.hutchinson_diag(model, None, batches, num_probes=3, seed=5)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def _snapshot(model):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: b.detach().clone() for n, b in model.named_buffers()},
        [m.training for m in model.modules()],
    )


def _train_mode_bn_model():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 3)
    ).to(DT)
    return m.train()


@pytest.mark.parametrize(
    "estimator",
    [
        lambda m, b: cp.empirical_fisher_diag(m, None, b, fisher_batch_size=2),
        lambda m, b: cp.loss_gradient(m, None, b),
        lambda m, b: cp.hutchinson_diag(m, None, b, num_probes=2),
        lambda m, b: cp.hessian_vector_product(
            m, None, b, {n: torch.ones_like(p) for n, p in m.named_parameters()}
        ),
        lambda m, b: cp.score(m, "synflow", b),
        lambda m, b: cp.score(m, "woodfisher", b, fisher_batch_size=2),
    ],
    ids=["fisher", "gradient", "hutchinson", "hvp", "synflow", "woodfisher"],
)
def test_estimators_leave_model_untouched(estimator):
    """Parameters, BatchNorm running statistics and train/eval flags survive; no .grad."""
    model = _train_mode_bn_model()
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 2, 5, 5, generator=gen, dtype=DT), torch.tensor([0, 1, 2, 0]))]
    params, buffers, modes = _snapshot(model)
    estimator(model, batches)
    after = _snapshot(model)
    assert all(torch.equal(params[n], after[0][n]) for n in params)
    assert all(torch.equal(buffers[n], after[1][n]) for n in buffers)
    assert modes == after[2]
    assert all(p.grad is None for p in model.parameters())


def test_train_mode_batchnorm_per_sample_fisher_is_refused():
    model = _train_mode_bn_model()
    batches = [(torch.randn(4, 2, 5, 5, dtype=DT), torch.tensor([0, 1, 2, 0]))]
    with pytest.raises(cp.InvalidArgument, match="model.eval"):
        cp.empirical_fisher_diag(model, None, batches)


def test_train_mode_batchnorm_chunks_use_their_own_statistics():
    model = _train_mode_bn_model()
    gen = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(n, 2, 5, 5, generator=gen, dtype=DT), torch.randint(0, 3, (n,), generator=gen))
        for n in (3, 5)
    ]
    x, y = ref.data(batches)
    params = dict(model.named_parameters())
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    saved = {n: b.clone() for n, b in model.named_buffers()}
    for i in range(0, 8, 4):
        loss = nn.functional.cross_entropy(model(x[i : i + 4]), y[i : i + 4])
        for (n, _), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            want[n] += g * g / 2
    for n, b in model.named_buffers():
        b.copy_(saved[n])
    assert_dicts_close(cp.empirical_fisher_diag(model, None, batches, fisher_batch_size=4), want)


class TiedModel(nn.Module):
    """The first layer's weight is reused outside its forward: closed forms must not be used."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h @ self.a.weight)


def test_weight_used_outside_its_layer_falls_back_to_vmap():
    torch.manual_seed(0)
    model = TiedModel().to(DT)
    gen = torch.Generator().manual_seed(2)
    batches = [
        (torch.randn(5, 4, generator=gen, dtype=DT), torch.randint(0, 3, (5,), generator=gen))
    ]
    assert_dicts_close(
        cp.empirical_fisher_diag(model, None, batches), ref.fisher_diag(model, batches)
    )


def test_inplace_relu_after_conv_is_handled():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(18, 2)
    ).to(DT)
    batches = [(torch.randn(4, 1, 5, 5, dtype=DT), torch.tensor([0, 1, 1, 0]))]
    assert_dicts_close(
        cp.empirical_fisher_diag(model, None, batches), ref.fisher_diag(model, batches)
    )


def test_fisher_of_one_shot_generator_and_names_subset():
    model, batches = CASES[0].build()
    got = cp.empirical_fisher_diag(model, None, iter(batches), names=["3.weight"])
    assert list(got) == ["3.weight"]
    torch.testing.assert_close(got["3.weight"], ref.fisher_diag(model, batches)["3.weight"])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_chunked_per_sample_gradients_equal_unchunked(case, chunk_size):
    model, batches = case.build()
    whole = cp.empirical_fisher_diag(model, None, batches, fisher_batch_size=2)
    parts = cp.empirical_fisher_diag(
        model, None, batches, fisher_batch_size=2, chunk_size=chunk_size
    )
    assert_dicts_close(parts, whole)


def test_memory_budget_chooses_a_chunk_size_and_sizes_parse():
    from curvprune._core.memory import auto_chunk_size, parse_memory, per_sample_bytes

    model, batches = CASES[1].build()
    x = batches[0][0]
    one = per_sample_bytes(model, x)
    assert auto_chunk_size(model, x, 3 * one) == 3 and auto_chunk_size(model, x, 1) == 1
    assert parse_memory("2GiB") == 2 * 2**30 and parse_memory("512MB") == 512 * 10**6
    with pytest.raises(cp.InvalidArgument, match="memory size"):
        parse_memory("lots")
    got = cp.empirical_fisher_diag(model, None, batches, max_memory=2 * one)
    assert_dicts_close(got, cp.empirical_fisher_diag(model, None, batches))


def test_woodfisher_refuses_what_would_not_fit_with_an_estimate():
    model, batches = CASES[0].build()
    with pytest.raises(cp.InvalidArgument, match=r"WoodFisher needs about .* GiB for 12 grad"):
        cp.score(model, "woodfisher", batches, max_memory="1KiB")
