"""Cost numbers: MACs of attention (against hand counts), effective MACs of masked models,
latency statistics, and peak memory relative to a baseline."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from curvprune.errors import InvalidArgument
from curvprune.structured import (
    Latency,
    count_params_and_macs,
    effective_macs,
    macs_by_weight,
    measure_latency,
)
from curvprune.structured.run import structured_run


class _Attention(nn.Module):
    """Tokens -> MHA -> linear head, as a toy transformer layer."""

    def __init__(self, dim=64, heads=4, batch_first=True, **kwargs):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first, **kwargs)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        out, _ = self.attn(x, x, x, need_weights=False)
        return self.head(out)


def _mha_hand_count(batch, length, source, dim, kdim=None, vdim=None, extra_keys=0):
    kdim, vdim = kdim or dim, vdim or dim
    projections = batch * (length * dim * dim + source * kdim * dim + source * vdim * dim)
    products = 2 * batch * length * (source + extra_keys) * dim  # QKᵀ and AV, all heads
    return projections + products + batch * length * dim * dim  # + out-projection


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_macs_match_hand_count(batch_first):
    model = _Attention(batch_first=batch_first)
    x = torch.zeros(2, 20, 64) if batch_first else torch.zeros(20, 2, 64)
    _, macs = count_params_and_macs(model, x)
    # B = 2, N = 20, E = 64: 4·B·N·E² + 2·B·N²·E = 757,760, plus the head B·N·E·10.
    assert macs == _mha_hand_count(2, 20, 20, 64) + 2 * 20 * 64 * 10 == 783_360


def test_mha_with_separate_key_value_widths_bias_k_and_zero_attn():
    mha = nn.MultiheadAttention(32, 2, kdim=16, vdim=8, add_bias_kv=True, add_zero_attn=True)
    q, k, v = torch.zeros(5, 3, 32), torch.zeros(7, 3, 16), torch.zeros(7, 3, 8)

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, q, k, v):
            return self.mha(q, key=k, value=v)[0]  # key and value as keywords

    by_weight = macs_by_weight(Cross(), (q, k, v))
    assert by_weight == {
        "mha.q_proj_weight": 3 * 5 * 32 * 32,
        "mha.k_proj_weight": 3 * 7 * 16 * 32,
        "mha.v_proj_weight": 3 * 7 * 8 * 32,
        "mha.<attention>": 2 * 3 * 5 * (7 + 2) * 32,
        "mha.out_proj.weight": 3 * 5 * 32 * 32,
    }
    assert sum(by_weight.values()) == _mha_hand_count(3, 5, 7, 32, 16, 8, extra_keys=2)


def test_torchvision_vit_encoder_block_macs():
    from torchvision.models.vision_transformer import EncoderBlock

    block = EncoderBlock(num_heads=3, hidden_dim=48, mlp_dim=96, dropout=0.0, attention_dropout=0.0)
    n, e = 17, 48  # 16 patches and the class token
    _, macs = count_params_and_macs(block, torch.zeros(1, n, e))
    assert macs == _mha_hand_count(1, n, n, e) + 2 * n * e * 96


def test_macs_by_weight_sums_to_the_count_and_names_weights():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    x = torch.zeros(1, 3, 4, 4)
    by_weight = macs_by_weight(model, x)
    assert by_weight == {"0.weight": 8 * 16 * 3 * 9, "2.weight": 5 * 128}
    assert sum(by_weight.values()) == count_params_and_macs(model, x)[1]


def test_effective_macs_weight_each_layer_by_its_density():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 4))
    x = torch.zeros(1, 10)
    assert effective_macs(model, x) == (10 * 20 + 20 * 4, 10 * 20 + 20 * 4)
    torch_prune.l1_unstructured(model[0], "weight", amount=150)  # 50 of 200 kept
    torch_prune.l1_unstructured(model[2], "weight", amount=20)  # 60 of 80 kept
    dense, effective = effective_macs(model, x)
    assert (dense, effective) == (280, 50 + 60)
    # The same from a result's layer_density, and the model's masks are untouched.
    assert effective_macs(model, x, {"0.weight": 0.25, "2.weight": 0.75}) == (280, 110)
    assert int(model[0].weight_mask.sum()) == 50


def test_effective_macs_of_a_masked_attention_layer():
    model = _Attention(dim=16, heads=2)
    x = torch.zeros(1, 6, 16)
    torch_prune.random_unstructured(model.attn, "in_proj_weight", amount=0.5)
    by_weight = macs_by_weight(model, x)
    dense, effective = effective_macs(model, x)
    assert dense == sum(by_weight.values())
    assert effective == dense - by_weight["attn.in_proj_weight"] // 2


def test_latency_reports_median_iqr_device_and_threads():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).train()
    latency = measure_latency(model, torch.zeros(1, 8), batch_sizes=(1, 4), repeats=5, warmup=1)
    assert isinstance(latency, Latency) and set(latency) == {1, 4}
    assert all(t > 0 for t in latency.values())
    assert set(latency.iqr_ms) == {1, 4} and all(v >= 0 for v in latency.iqr_ms.values())
    assert latency.device == "cpu" and latency.threads == torch.get_num_threads()
    d = latency.to_dict()
    assert d["median_ms"]["1"] == latency[1] and d["repeats"] == 5 and d["warmup"] == 1
    assert model.training  # mode restored
    with pytest.raises(InvalidArgument, match="warmup"):
        measure_latency(model, torch.zeros(1, 8), warmup=-1)


def test_structured_costs_carry_latency_spread_and_device():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 5))  # fmt: skip
    result = structured_run(
        model, "l1", None, example_inputs=torch.zeros(1, 3, 4, 4), channel_sparsity=0.5,
        latency_batch_sizes=(1,), latency_repeats=3,
    )  # fmt: skip
    d = result.to_dict()
    assert set(d["latency_iqr_ms"]["pruned"]) == {"1"}
    assert d["latency_device"] == "cpu" and d["latency_threads"] >= 1


def test_peak_memory_since_a_baseline_excludes_what_came_before():
    from curvprune._core.memory import memory_baseline, peak_memory_bytes, peak_memory_since

    baseline = memory_baseline("cpu")
    before = peak_memory_since(baseline)
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    block += 1
    del block
    grown = peak_memory_since(baseline)
    assert grown - before >= 60 * 2**20
    if baseline.peak_reset:  # Linux: far below the process's peak (the torch import)
        assert grown < peak_memory_bytes() - 200 * 2**20
