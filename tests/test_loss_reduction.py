"""Losses that do not average over the batch are refused, not silently scaled by B."""

import pytest
import torch
import torch.nn.functional as F
from cases import CASES
from torch import nn

import curvprune as cp
from curvprune.curvature.gradient import CheckedLoss, default_loss


def _sum_ce(out, y):
    return F.cross_entropy(out, y, reduction="sum")


def test_nn_loss_with_sum_reduction_is_refused_by_name():
    model, batches = CASES[0].build()
    assert issubclass(cp.InvalidArgument, ValueError)
    with pytest.raises(ValueError, match="reduction='sum'"):
        cp.loss_gradient(model, nn.CrossEntropyLoss(reduction="sum"), batches)
    with pytest.raises(cp.InvalidArgument, match="reduction='none'"):
        cp.score(model, "fisher", batches, loss_fn=nn.MSELoss(reduction="none"))


@pytest.mark.parametrize(
    "estimator",
    [
        lambda m, loss, b: cp.loss_gradient(m, loss, b),
        lambda m, loss, b: cp.hutchinson_diag(m, loss, b, num_probes=1),
        lambda m, loss, b: cp.empirical_fisher_diag(m, loss, b),
        lambda m, loss, b: cp.score(m, "grasp", b, loss_fn=loss),
        lambda m, loss, b: cp.score(m, "oba", b, loss_fn=loss),
    ],
    ids=["gradient", "hutchinson", "fisher", "grasp", "oba"],
)
def test_callable_that_sums_over_the_batch_is_refused(estimator):
    model, batches = CASES[0].build()  # first batch has 5 samples: halves of 2
    with pytest.raises(cp.InvalidArgument, match=r"must average over the batch.*\(ratio 2;"):
        estimator(model, _sum_ce, batches)


def test_mean_callables_pass_and_single_sample_batches_are_not_checked():
    model, batches = CASES[0].build()
    want = cp.loss_gradient(model, None, batches)
    got = cp.loss_gradient(model, F.cross_entropy, batches)
    assert all(torch.allclose(got[n], want[n], rtol=1e-12) for n in want)
    x, y = batches[0]
    ones = [(x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
    cp.loss_gradient(model, _sum_ce, ones)  # a sum over one sample is its mean


def test_the_check_runs_once_per_call_on_the_first_batch_of_two_or_more():
    calls = []

    def counting(out, y):
        calls.append(out.shape[0])
        return F.cross_entropy(out, y)

    loss = default_loss(counting)
    assert isinstance(loss, CheckedLoss) and default_loss(loss) is loss
    model, batches = CASES[0].build()
    x, y = batches[0]
    cp.loss_gradient(model, loss, [(x[:1], y[:1]), (x, y), (x, y)])
    # 1 sample (unchecked), 5 samples + the check on 4 samples and two halves of 2, then 5
    assert calls == [1, 5, 4, 2, 2, 5]
    assert isinstance(default_loss(nn.CrossEntropyLoss()), nn.CrossEntropyLoss)
