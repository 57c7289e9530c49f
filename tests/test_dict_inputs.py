"""Batches whose inputs are dicts of tensors (model(**inputs)) and forward= callables.

The model takes two keyword inputs, like a transformers model takes input_ids and
attention_mask; every estimator must give what the same model gives on tensor inputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import curvprune as cp
from curvprune.curvature import empirical_fisher_diag, hutchinson_diag, loss_gradient
from curvprune.curvature.gauss_newton import oba_curvature_product
from curvprune.errors import InvalidArgument, InvalidType

DT = torch.float64


class TwoInputs(nn.Module):
    """forward(features, scale): a Linear on features * scale, then LayerNorm, tanh, Linear."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, features, scale):
        return self.fc2(torch.tanh(self.norm(self.fc1(features * scale))))


class OneInput(nn.Module):
    """The same network on one tensor input (features and scale side by side)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x[:, :4], x[:, 4:])


def _case():
    torch.manual_seed(0)
    model = TwoInputs().to(DT)
    gen = torch.Generator().manual_seed(1)
    dict_batches, tensor_batches = [], []
    for b in (3, 2, 4):
        f = torch.randn(b, 4, generator=gen, dtype=DT)
        s = torch.rand(b, 1, generator=gen, dtype=DT) + 0.5
        y = torch.randint(0, 3, (b,), generator=gen)
        dict_batches.append(({"features": f, "scale": s}, y))
        tensor_batches.append((torch.cat([f, s], 1), y))
    return model, dict_batches, tensor_batches


def _same(a, b):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-10, atol=1e-14, msg=k)


def _strip(d):
    return {k.removeprefix("inner."): v for k, v in d.items()}


@pytest.mark.parametrize("fisher_batch_size", [1, 2])
def test_estimators_equal_tensor_inputs(fisher_batch_size):
    model, dicts, tensors = _case()
    wrapped = OneInput(model)
    _same(loss_gradient(model, None, dicts), _strip(loss_gradient(wrapped, None, tensors)))
    _same(
        empirical_fisher_diag(model, None, dicts, fisher_batch_size=fisher_batch_size),
        _strip(empirical_fisher_diag(wrapped, None, tensors, fisher_batch_size=fisher_batch_size)),
    )
    _same(
        hutchinson_diag(model, None, dicts, num_probes=3, seed=0),
        _strip(hutchinson_diag(wrapped, None, tensors, num_probes=3, seed=0)),
    )
    theta = {n: p.detach() for n, p in model.named_parameters()}
    _same(
        oba_curvature_product(model, None, dicts, theta),
        _strip(
            oba_curvature_product(
                wrapped, None, tensors, {"inner." + k: v for k, v in theta.items()}
            )
        ),
    )


@pytest.mark.parametrize("criterion", ["fisher", "hts", "oba", "snip", "woodfisher", "fts"])
def test_scores_equal_tensor_inputs(criterion):
    model, dicts, tensors = _case()
    _same(cp.score(model, criterion, dicts), _strip(cp.score(OneInput(model), criterion, tensors)))


def test_forward_callable_is_used_everywhere():
    model, dicts, tensors = _case()
    calls = []

    def forward(m, x):
        calls.append(1)
        return m(x["features"], scale=x["scale"])

    for criterion in ("fisher", "hts", "oba"):
        calls.clear()
        got = cp.score(model, criterion, dicts, forward=forward)
        _same(got, cp.score(model, criterion, dicts))
        assert calls, criterion
    result = cp.prune(model, "fisher", dicts, sparsity=0.5, forward=forward)
    assert result.sparsity == 0.5
    from curvprune._core.inputs import _FORWARDS

    assert model not in _FORWARDS  # the forward applies to that call only


def test_output_objects_reach_the_loss_and_temperature_scales_their_logits():
    model, dicts, _ = _case()

    class Output(dict):
        pass

    def forward(m, x):
        return Output(logits=m(**x))

    def loss(out, y):
        return F.cross_entropy(out["logits"], y)

    for criterion in ("fisher", "hts", "snip"):
        _same(
            cp.score(model, criterion, dicts, forward=forward, loss_fn=loss),
            cp.score(model, criterion, dicts),
        )
    with pytest.raises(InvalidArgument, match="one tensor"):
        cp.score(model, "oba", dicts, forward=forward, loss_fn=loss)


def test_bad_dict_batches():
    model, dicts, _ = _case()
    x, y = dicts[0]
    with pytest.raises(InvalidArgument, match="share their first"):
        cp.score(model, "snip", [({"features": x["features"], "scale": x["scale"][:1]}, y)])
    with pytest.raises(InvalidType, match="argument names to tensors"):
        cp.score(model, "snip", [({"features": x["features"], "scale": 2.0}, y)])
    with pytest.raises(InvalidArgument, match="inputs but"):
        cp.score(model, "snip", [(x, y[:1])])
    with pytest.raises(InvalidArgument, match="synflow needs tensor inputs"):
        cp.score(model, "synflow", dicts)
    with pytest.raises(InvalidType, match="forward must be a callable"):
        cp.score(model, "snip", dicts, forward="model")
