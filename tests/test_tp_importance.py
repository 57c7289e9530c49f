"""CurvatureImportance: curvprune's channel criteria inside Torch-Pruning's own pruners."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from torch import nn

tp = pytest.importorskip("torch_pruning")

from curvprune.criteria import CRITERIA  # noqa: E402
from curvprune.errors import InvalidArgument  # noqa: E402
from curvprune.structured import CurvatureImportance, channel_scores  # noqa: E402
from curvprune.structured.groups import ChannelImportance  # noqa: E402

DT = torch.float64
STRUCTURED = [n for n, c in CRITERIA.items() if c.structured]


class Net(nn.Module):
    """conv1 → bn1 → tanh (+ 1x1 shortcut) → conv2 → pool → fc: a residual group and a plain one."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.short = nn.Conv2d(2, 4, 1, bias=False)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = torch.tanh(self.bn1(self.conv1(x)) + self.short(x))
        return self.fc(torch.tanh(self.conv2(h)).mean((2, 3)))


def _case(seed=0):
    torch.manual_seed(seed)
    model = Net().to(DT)
    with torch.no_grad():
        model.bn1.running_var.copy_(torch.tensor([0.5, 1.5, 2.0, 1.0]))
        model.bn1.weight.copy_(torch.tensor([1.2, 0.8, 1.1, 0.9]))
    gen = torch.Generator().manual_seed(seed + 1)
    batches = [
        (torch.randn(b, 2, 4, 4, generator=gen, dtype=DT), torch.randint(0, 3, (b,), generator=gen))
        for b in (3, 2)
    ]
    return model.eval(), batches


def _groups(model, example):
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    return list(graph.get_all_groups(ignored_layers=[model.fc]))


@pytest.mark.parametrize("criterion", STRUCTURED)
def test_scores_equal_channel_scores(criterion):
    model, batches = _case()
    example = batches[0][0][:1]
    want = channel_scores(model, criterion, batches, example_inputs=example)
    imp = CurvatureImportance(criterion, batches)
    namer = ChannelImportance(model)
    got = {namer.group_name(g): imp(g) for g in _groups(model, example)}
    got = {k: v for k, v in got.items() if v is not None}
    assert set(got) == set(want) == {"conv1", "conv2"}
    for name, scores in want.items():
        torch.testing.assert_close(got[name], scores, rtol=1e-12, atol=0)
    assert imp.steps == 1  # one computation of the terms for all groups of a step


def test_terms_are_recomputed_once_per_pruner_step_and_after_training():
    model, batches = _case()
    imp = CurvatureImportance("fisher", batches)
    pruner = tp.pruner.MetaPruner(
        model,
        batches[0][0][:1],
        importance=imp,
        pruning_ratio=0.5,
        iterative_steps=2,
        ignored_layers=[model.fc],
    )
    pruner.step()
    assert imp.steps == 1
    first = model.conv1.out_channels + model.conv2.out_channels
    assert first < 7 and model.bn1.num_features == model.conv1.out_channels
    with torch.no_grad():
        model.conv2.weight.mul_(1.5)  # an optimizer step bumps the version
    pruner.step()
    assert imp.steps == 2
    assert model.conv1.out_channels + model.conv2.out_channels < first
    assert model(batches[0][0]).shape == (3, 3)


def test_callable_batches_are_drawn_once_per_step():
    model, batches = _case()
    calls = []

    def draw():
        calls.append(1)
        return batches

    imp = CurvatureImportance("taylor", draw)
    tp.pruner.MetaPruner(
        model, batches[0][0][:1], importance=imp, pruning_ratio=0.5, ignored_layers=[model.fc]
    ).step()
    assert len(calls) == 1 and imp.steps == 1


def test_errors_name_the_problem():
    with pytest.raises(InvalidArgument, match="unstructured only"):
        CurvatureImportance("snip", [])
    with pytest.raises(InvalidArgument, match="does not take"):
        CurvatureImportance("fisher", [], num_probes=3)
    with pytest.raises(InvalidArgument, match="needs batches"):
        model, batches = _case()
        CurvatureImportance("fisher", None)(_groups(model, batches[0][0][:1])[0])


def test_metapruner_halves_torchvision_resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    dense = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(4, 3, 32, 32, generator=gen), torch.randint(0, 10, (4,), generator=gen))
    ]
    imp = CurvatureImportance("oba", batches)
    pruner = tp.pruner.MetaPruner(
        model,
        torch.randn(1, 3, 32, 32),
        importance=imp,
        pruning_ratio=0.5,
        ignored_layers=[model.fc],
    )
    start = time.perf_counter()
    pruner.step()
    elapsed = time.perf_counter() - start
    assert imp.steps == 1
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    before = dict((n, m) for n, m in dense.named_modules() if isinstance(m, nn.Conv2d))
    kept = sum(m.out_channels for _, m in convs) / sum(before[n].out_channels for n, _ in convs)
    assert 0.45 <= kept <= 0.55, kept
    assert model.fc.in_features == 256 and model.fc.out_features == 10
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    print(f"resnet18 oba MetaPruner step: {elapsed:.2f} s, kept {kept:.3f} of conv channels")
