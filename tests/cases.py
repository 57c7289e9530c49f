"""The table of tiny float64 cases that every numerical test runs over.

Each case: a model factory and a data factory. Batches have unequal sizes, and the cases
cover Linear (with and without token dimensions), Conv1d/Conv2d (grouped, strided, reflect
padding), BatchNorm in eval mode, LayerNorm, a layer with no closed form (the vmap path), and a
model already pruned with torch.nn.utils.prune.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

DT = torch.float64


class Scale(nn.Module):
    """A layer with no closed-form per-sample gradient: x ⊙ s."""

    def __init__(self, n):
        super().__init__()
        self.s = nn.Parameter(torch.linspace(0.5, 1.5, n, dtype=DT))

    def forward(self, x):
        return x * self.s


class TokenMean(nn.Module):
    def forward(self, x):
        return x.mean(1)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3))


def cnn():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 2, 3, stride=2, groups=2, bias=False),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def cnn_bn_eval():
    m = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 3),
    )
    bn = m[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_var.copy_(torch.tensor([0.5, 1.5, 2.0]))
        bn.weight.copy_(torch.tensor([1.2, 0.8, 1.1]))
        bn.bias.copy_(torch.tensor([0.1, 0.0, -0.1]))
    return m.eval()


def conv1d_layernorm():
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, stride=2, padding=1, padding_mode="reflect"),
        nn.LayerNorm([3, 4]),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(12, 3),
    )


def tokens():
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), Scale(5), TokenMean(), nn.Linear(5, 3))


def pruned_mlp():
    m = mlp()
    gen = torch.Generator().manual_seed(7)
    torch_prune.custom_from_mask(m[1], "weight", torch.rand(6, 12, generator=gen) > 0.3)
    return m


@dataclass(frozen=True)
class Case:
    name: str
    model: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    classes: int = 3

    def build(self, seed: int = 0):
        """(model, batches) in float64, deterministic in `seed`."""
        torch.manual_seed(seed)
        model = self.model().to(DT)
        gen = torch.Generator().manual_seed(seed + 1)
        batches = [
            (
                torch.randn(b, *self.input_shape, generator=gen, dtype=DT),
                torch.randint(0, self.classes, (b,), generator=gen),
            )
            for b in self.batch_sizes
        ]
        return model, batches


CASES = [
    Case("mlp", mlp, (12,), (5, 3, 4)),
    Case("cnn", cnn, (2, 5, 5), (4, 2, 3)),
    Case("cnn_bn_eval", cnn_bn_eval, (2, 5, 5), (3, 5, 2)),
    Case("conv1d_layernorm", conv1d_layernorm, (2, 8), (4, 3)),
    Case("tokens", tokens, (3, 4), (2, 5)),
    Case("pruned_mlp", pruned_mlp, (12,), (6, 3)),
]
CASE_IDS = [c.name for c in CASES]
