"""Gauss-Newton products and (H − G) products against dense float64 references."""

import functools

import pytest
import reference as ref
import torch
from cases import CASE_IDS, CASES, DT
from torch import nn

import curvprune as cp
from curvprune.curvature import gauss_newton_vector_product, oba_curvature_product

RTOL, ATOL = 1e-7, 1e-11


@functools.cache
def dense(case_name):
    """(H, G) of a case, computed once per session."""
    model, batches = CASES[CASE_IDS.index(case_name)].build()
    return ref.hessian(model, batches), ref.gauss_newton(model, batches)


def _close(got, want):
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=RTOL, atol=ATOL, msg=n)


def _random_vector(model, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(p.shape, generator=gen, dtype=DT)
        for n, p in model.named_parameters()
        if p.requires_grad
    }


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gauss_newton_and_residual_products_match_dense_matrices(case):
    model, batches = case.build()
    h, g = dense(case.name)
    v = _random_vector(model)
    flat = ref.flatten(v, model)
    _close(gauss_newton_vector_product(model, None, batches, v), ref.unflatten(model, g @ flat))
    _close(oba_curvature_product(model, None, batches, v), ref.unflatten(model, (h - g) @ flat))


def test_gauss_newton_is_symmetric_positive_semidefinite_for_cross_entropy():
    _, g = dense("cnn_bn_eval")
    torch.testing.assert_close(g, g.T, rtol=1e-10, atol=1e-12)
    assert torch.linalg.eigvalsh(g).min() > -1e-10


def test_missing_keys_count_as_zero_and_lists_are_refused():
    model, batches = CASES[0].build()
    v = {"1.weight": torch.ones(6, 12, dtype=DT)}
    full = {n: torch.zeros_like(p) for n, p in model.named_parameters()} | v
    for fn in (gauss_newton_vector_product, oba_curvature_product):
        _close(fn(model, None, batches, v), fn(model, None, batches, full))
    with pytest.raises(cp.InvalidType, match="dict from parameter name"):
        gauss_newton_vector_product(model, None, batches, list(full.values()))


def _relu_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)
    ).to(DT)
    gen = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(b, 5, generator=gen, dtype=DT), torch.randint(0, 3, (b,), generator=gen))
        for b in (4, 3)
    ]
    return model, batches


def test_piecewise_linear_network_has_no_intra_layer_block_in_h_minus_g():
    """ReLU MLP: (H − G) restricted to one Linear layer's weight is zero; cross terms are not."""
    model, batches = _relu_mlp()
    for layer in ("0", "2", "4"):
        name = f"{layer}.weight"
        shape = dict(model.named_parameters())[name].shape
        for k in range(shape.numel()):  # every column of the block
            e = torch.zeros(shape.numel(), dtype=DT)
            e[k] = 1
            hv = oba_curvature_product(model, None, batches, {name: e.reshape(shape)})
            assert hv[name].abs().max() < 1e-12, (name, k)
    # the dense reference agrees, and the inter-layer blocks do not vanish
    h, g = ref.hessian(model, batches), ref.gauss_newton(model, batches)
    r = h - g
    sizes = [p.numel() for p in model.parameters()]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for i, size in zip(starts[::2], sizes[::2]):  # the weights (biases sit between them)
        assert r[i : i + size, i : i + size].abs().max() < 1e-12
    assert r[starts[0] : starts[0] + sizes[0], starts[2] : starts[2] + sizes[2]].abs().max() > 1e-3
