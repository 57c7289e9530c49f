"""Structured pruning: channel scores vs brute force, physical removal, save/load, ONNX, errors.

The numerical tests run a tiny float64 CNN whose dependency groups cover a residual sum, a
BatchNorm, a concatenation and a flatten into a linear layer, and compare every channel
criterion with sums written out by hand over a dense Hessian / per-sample references.
"""

from __future__ import annotations

import math
import warnings

import pytest
import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

import curvprune as cp
from curvprune.criteria import CRITERIA
from curvprune.curvature import hutchinson_diag, loss_gradient
from curvprune.errors import CheckpointError, InvalidArgument, InvalidType
from curvprune.models import build_model
from curvprune.models.pruned import load_pruned
from curvprune.models.vit import VisionTransformer
from curvprune.structured import (
    channel_scores,
    count_params_and_macs,
    export_onnx,
    prune_channels,
    prune_to_macs,
    save_pruned,
)
from curvprune.structured.run import structured_run

DT = torch.float64
RTOL, ATOL = 1e-7, 1e-12


class TinyNet(nn.Module):
    """h = tanh(bn1(conv1(x)) + shortcut(x)); conv4(cat([h, tanh(conv3(h))])) → pool → fc.

    Groups: A = conv1 out, bn1, shortcut out, conv3 in, conv4 in (concat channels 0..3);
    B = conv3 out, conv4 in (concat channels 4..5); C = conv4 out, fc in (flattened, 4 columns
    per channel). fc's outputs are the model's output and are never pruned.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.shortcut = nn.Conv2d(2, 4, 1, bias=False)
        self.conv3 = nn.Conv2d(4, 2, 3, padding=1)
        self.conv4 = nn.Conv2d(6, 3, 1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(3 * 2 * 2, 3)

    def forward(self, x):
        h = torch.tanh(self.bn1(self.conv1(x)) + self.shortcut(x))
        out = torch.cat([h, torch.tanh(self.conv3(h))], dim=1)
        return self.fc(self.pool(torch.tanh(self.conv4(out))).flatten(1))


def tiny(seed=0):
    """(model in eval mode with non-trivial BN statistics, batches of unequal size), float64."""
    torch.manual_seed(seed)
    model = TinyNet().to(DT)
    with torch.no_grad():
        model.bn1.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        model.bn1.running_var.copy_(torch.tensor([0.5, 1.5, 2.0, 1.0]))
        model.bn1.weight.copy_(torch.tensor([1.2, 0.8, 1.1, 0.9]))
        model.bn1.bias.copy_(torch.tensor([0.1, 0.0, -0.1, 0.2]))
    gen = torch.Generator().manual_seed(seed + 1)
    batches = [
        (torch.randn(b, 2, 4, 4, generator=gen, dtype=DT), torch.randint(0, 3, (b,), generator=gen))
        for b in (3, 2, 4)
    ]
    return model.eval(), batches


def _slices():
    """Per group, per layer: term dict -> per-channel sums, written out by hand."""

    def rows(name, dim=0):
        return lambda t: t[name].movedim(dim, 0).reshape(t[name].shape[dim], -1).sum(1)

    def conv4_cols(first, count):
        return lambda t: t["conv4.weight"][:, first : first + count].sum((0, 2, 3))

    return {
        "conv1": [
            lambda t: rows("conv1.weight")(t) + t["conv1.bias"],
            lambda t: t["bn1.weight"] + t["bn1.bias"],
            rows("shortcut.weight"),
            rows("conv3.weight", dim=1),
            conv4_cols(0, 4),
        ],
        "conv3": [lambda t: rows("conv3.weight")(t) + t["conv3.bias"], conv4_cols(4, 2)],
        "conv4": [
            lambda t: rows("conv4.weight")(t) + t["conv4.bias"],
            # fc reads the flattened (3, 2, 2) map: channel k owns columns 4k .. 4k+3
            lambda t: t["fc.weight"].reshape(3, 3, 4).sum((0, 2)),
        ],
    }


def _expected(terms, reduction, normalize):
    out = {}
    for root, layers in _slices().items():
        per_layer = [f(terms) for f in layers]
        if reduction == "layer_abs":
            s = sum(p.abs() for p in per_layer)
        elif reduction == "abs":
            s = sum(per_layer).abs()
        else:
            s = sum(per_layer)
        out[root] = s / s.max() if normalize == "max" else s
    return out


def _references(model, batches):
    theta = {n: p.detach() for n, p in model.named_parameters()}
    g = ref.gradient(model, batches)
    h = ref.hessian(model, batches)
    h_theta = ref.unflatten(model, h @ ref.theta(model))
    # OBA: the network's own curvature H − G, G = Jᵀ(∇²ℓ)J from explicit Jacobians
    r_theta = ref.unflatten(model, (h - ref.gauss_newton(model, batches)) @ ref.theta(model))
    f = ref.fisher_diag(model, batches)
    return {
        "oba": ({n: t * r_theta[n] for n, t in theta.items()}, "layer_abs", "max"),
        "oba_full": ({n: t * h_theta[n] for n, t in theta.items()}, "layer_abs", "max"),
        "taylor": ({n: t * g[n] for n, t in theta.items()}, "abs", "none"),
        "l1": ({n: t.abs() for n, t in theta.items()}, "sum", "none"),
        "fisher": ({n: 0.5 * t * t * f[n] for n, t in theta.items()}, "sum", "none"),
        "fts": (
            {n: (t * g[n] + 0.5 * t * t * f[n]).abs() for n, t in theta.items()},
            "sum",
            "none",
        ),
    }


def test_channel_scores_match_brute_force_sums():
    model, batches = tiny()
    x = batches[0][0][:1]
    for name, (terms, reduction, normalize) in _references(model, batches).items():
        got = channel_scores(model, name, batches, example_inputs=x)
        want = _expected(terms, reduction, normalize)
        assert set(got) == set(want), name
        for root in want:
            torch.testing.assert_close(got[root], want[root], rtol=RTOL, atol=ATOL, msg=name)
    # the OBA repository's baselines: no bias or β terms (Torch-Pruning's bias=False), Taylor
    # per layer, both ÷ the group max
    references = _references(model, batches)
    for name, reduction in (("taylor", "layer_abs"), ("l1", "sum")):
        terms = {
            n: torch.zeros_like(t) if n.endswith("bias") else t
            for n, t in references[name][0].items()
        }
        got = channel_scores(model, name, batches, example_inputs=x, variant="oba_code")
        for root, want in _expected(terms, reduction, "max").items():
            torch.testing.assert_close(got[root], want, rtol=RTOL, atol=ATOL, msg=name)
        with_biases = _expected(references[name][0], reduction, "max")
        assert not all(torch.allclose(got[r], with_biases[r]) for r in got), name
        raw = channel_scores(
            model, name, batches, example_inputs=x, variant="oba_code", normalize="none"
        )
        for root, want in _expected(terms, reduction, "none").items():
            torch.testing.assert_close(raw[root], want, rtol=RTOL, atol=ATOL, msg=name)
        with pytest.raises(InvalidArgument, match="variant must be one of original, oba_code"):
            channel_scores(model, name, batches, example_inputs=x, variant="pai_code")
    # HTS: the same sums over |θg + ½θ²D| with the library's own Hutchinson diagonal
    theta = {n: p.detach() for n, p in model.named_parameters()}
    d = hutchinson_diag(model, None, batches, num_probes=3, seed=5)
    g = loss_gradient(model, None, batches)
    terms = {n: (t * g[n] + 0.5 * t * t * d[n]).abs() for n, t in theta.items()}
    got = channel_scores(
        model, "hts", batches, example_inputs=x, num_probes=3, seed=5, temperature=1
    )
    for root, want in _expected(terms, "sum", "none").items():
        torch.testing.assert_close(got[root], want, rtol=RTOL, atol=ATOL)
    # the default temperature is the HTS code's T = 200
    default = channel_scores(model, "hts", batches, example_inputs=x, num_probes=3, seed=5)
    cooled = channel_scores(
        model, "hts", batches, example_inputs=x, num_probes=3, seed=5, temperature=200
    )
    assert all(torch.equal(default[k], cooled[k]) for k in cooled)
    assert not all(torch.allclose(default[k], got[k]) for k in got)


def test_random_channel_scores_are_reproducible_and_uniform():
    model, batches = tiny()
    x = batches[0][0][:1]
    a = channel_scores(model, "random", None, example_inputs=x, seed=3)
    b = channel_scores(model, "random", None, example_inputs=x, seed=3)
    c = channel_scores(model, "random", None, example_inputs=x, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert all(((v >= 0) & (v < 1)).all() for v in a.values())


# ---------------------------------------------------------------- physical removal on real models


def _expected_params(model):
    """Parameter count implied by each layer's attributes (catches tensors out of sync)."""
    total = 0
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if isinstance(m, nn.Conv2d):
            total += m.out_channels * (m.in_channels // m.groups) * math.prod(m.kernel_size)
            total += m.out_channels if m.bias is not None else 0
        elif isinstance(m, nn.Linear):
            total += m.out_features * m.in_features + (m.out_features if m.bias is not None else 0)
        elif isinstance(m, nn.BatchNorm2d):
            total += 2 * m.num_features
        elif isinstance(m, nn.LayerNorm):
            total += 2 * math.prod(m.normalized_shape)
        else:
            total += sum(p.numel() for p in own)
    return total


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _check_removal(name, criterion, *, image_size, sparsity=0.5, batch=2):
    model = build_model(name, in_channels=3, num_classes=10, image_size=image_size, seed=0)
    model.eval()
    before = _state(model)
    dense_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    pruned = prune_channels(model, criterion, [(x, y)], sparsity=sparsity, example_inputs=x[:1])
    # the model passed in is untouched
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    # smaller, consistent, same outputs shape, trainable
    params = sum(p.numel() for p in pruned.parameters())
    assert params == _expected_params(pruned)
    assert params < 0.8 * dense_params
    out = pruned(x)
    assert out.shape == (batch, 10)
    F.cross_entropy(out, y).backward()
    assert all(p.grad is not None for p in pruned.parameters())
    return model, pruned


def test_resnet20_oba_removes_channels_and_fine_tunes():
    model, pruned = _check_removal("resnet20", "oba", image_size=16, batch=8)
    convs = lambda m: [c for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    dense = sum(c.out_channels for c in convs(model))
    kept = sum(c.out_channels for c in convs(pruned))
    assert kept < dense
    assert pruned.fc.out_features == 10
    # fine-tuning: a few SGD steps on one batch lower its loss
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 16, 16, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    pruned.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.cross_entropy(pruned(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_mobilenet_v1_depthwise_groups_stay_consistent():
    _, pruned = _check_removal("mobilenet_v1", "l1", image_size=8)
    for block in pruned.features[1:]:
        dw = block.depthwise[0]
        assert dw.groups == dw.in_channels == dw.out_channels


@pytest.mark.parametrize("name", ["resnet18", "vgg16_bn"])
def test_large_cnns_shrink(name):
    _check_removal(name, "l1", image_size=8)


def test_vit_tiny_loses_whole_heads():
    model, pruned = _check_removal("vit_tiny", "l1", image_size=8)
    heads = [b.attn.num_heads for b in pruned.blocks]
    assert sum(heads) == 36 - 18 and min(heads) >= 1
    for b in pruned.blocks:
        assert b.attn.head_dim == 64
        assert b.attn.qkv.out_features == 3 * b.attn.num_heads * 64
        assert b.attn.proj.in_features == b.attn.num_heads * 64


def _small_vit():
    torch.manual_seed(0)
    kw = dict(in_channels=1, num_classes=3, image_size=8, patch_size=4)
    return VisionTransformer(**kw, dim=12, depth=2, num_heads=3, mlp_dim=16).double().eval()


def test_small_vit_oba_prunes_heads_and_mlp():
    model = _small_vit()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 8, 8, generator=gen, dtype=DT)
    y = torch.randint(0, 3, (6,), generator=gen)
    pruned = prune_channels(model, "oba", [(x, y)], sparsity=0.5, example_inputs=x[:1])
    heads = [b.attn.num_heads for b in pruned.blocks]
    assert sum(heads) == 3 and min(heads) >= 1
    assert all(b.mlp.fc1.out_features < 16 for b in pruned.blocks)
    assert pruned(x).shape == (6, 3)
    assert sum(p.numel() for p in pruned.parameters()) == _expected_params(pruned)


# ---------------------------------------------------------------- options


def _resnet20():
    model = build_model("resnet20", in_channels=1, num_classes=4, image_size=8, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, generator=gen)
    return model, [(x, torch.randint(0, 4, (4,), generator=gen))], x[:1]


def _block_convs(model):
    return [m for n, m in model.named_modules() if n.endswith("conv1") and "layer" in n]


def _channels(model):
    """resnet20's prunable channels: three residual streams and nine block-internal widths."""
    streams = [stage[0].conv2.out_channels for stage in (model.layer1, model.layer2, model.layer3)]
    return sum(streams) + sum(c.out_channels for c in _block_convs(model))


def test_sparsity_is_the_fraction_of_channels_removed():
    model, batches, x = _resnet20()
    assert _channels(model) == 448
    for sparsity in (0.25, 0.5):
        pruned = prune_channels(model, "random", None, sparsity=sparsity, example_inputs=x)
        assert _channels(pruned) == int(448 * (1 - sparsity))


def test_local_pruning_halves_every_block_and_round_to_rounds():
    model, batches, x = _resnet20()
    local = prune_channels(model, "l1", None, sparsity=0.5, example_inputs=x, global_pruning=False)
    for dense, pruned in zip(_block_convs(model), _block_convs(local)):
        assert pruned.out_channels == dense.out_channels // 2
    rounded = prune_channels(model, "random", None, sparsity=0.4, example_inputs=x, round_to=4)
    assert all(c.out_channels % 4 == 0 for c in rounded.modules() if isinstance(c, nn.Conv2d))


def test_max_layer_sparsity_and_ignored_layers_are_honored():
    model, batches, x = _resnet20()
    pruned = prune_channels(
        model,
        "random",
        None,
        sparsity=0.55,
        example_inputs=x,
        max_layer_sparsity=0.6,
        ignored_layers=["conv1"],
    )
    for dense, small in zip(_block_convs(model), _block_convs(pruned)):
        assert small.out_channels >= math.ceil(0.4 * dense.out_channels)
    # conv1 is in the first stage's residual group: ignoring it keeps that whole group
    assert pruned.conv1.out_channels == 16 and pruned.layer1[0].conv2.out_channels == 16


def test_iterative_steps_and_macs_target():
    model, batches, x = _resnet20()
    stepped = prune_channels(
        model, "taylor", batches, sparsity=0.5, example_inputs=x, iterative_steps=2
    )
    assert stepped(x).shape == (1, 4)
    _, dense_macs = count_params_and_macs(model, x)
    pruned = prune_to_macs(
        model,
        "taylor",
        batches,
        macs_target=0.5,
        example_inputs=x,
        iterative_steps=2,
        tolerance=0.05,
    )
    kept = count_params_and_macs(pruned, x)[1] / dense_macs
    assert 0.5 * 0.9 <= kept <= 0.5


def test_structured_run_reports_costs():
    model, batches, x = _resnet20()
    result = structured_run(
        model,
        "l1",
        None,
        example_inputs=x,
        channel_sparsity=0.5,
        latency_batch_sizes=(1, 4),
        latency_repeats=2,
    )
    d = result.to_dict()
    assert d["params"]["dense"] == sum(p.numel() for p in model.parameters())
    assert d["params"]["pruned"] < d["params"]["dense"]
    assert d["macs"]["pruned"] < d["macs"]["dense"]
    assert set(d["latency_ms"]["dense"]) == set(d["speedup"]) == {"1", "4"}
    assert all(t > 0 for t in d["latency_ms"]["pruned"].values())


def test_counts_match_hand_computation():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    params, macs = count_params_and_macs(model, torch.zeros(1, 3, 4, 4))
    assert params == 3 * 8 * 9 + 8 + 128 * 5 + 5
    assert macs == 8 * 16 * 3 * 9 + 5 * 128


# ---------------------------------------------------------------- save / load / ONNX


def test_save_load_round_trip(tmp_path):
    model, batches, x = _resnet20()
    pruned = prune_channels(model, "l1", None, sparsity=0.5, example_inputs=x)
    spec = {"model": "resnet20", "in_channels": 1, "num_classes": 4, "image_size": 8}
    save_pruned(pruned, tmp_path / "p.safetensors", spec=spec)
    loaded = load_pruned(tmp_path / "p.safetensors")
    assert loaded.training == pruned.training
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    assert [p.shape for p in loaded.parameters()] == [p.shape for p in pruned.parameters()]
    # the file holds no pickle: only tensors and a JSON string
    assert b"pickle" not in (tmp_path / "p.safetensors").read_bytes()[:4096]


def test_save_load_custom_model_and_heads(tmp_path):
    model = _small_vit()
    x = torch.randn(1, 1, 8, 8, dtype=DT)
    pruned = prune_channels(model, "random", None, sparsity=0.5, example_inputs=x)
    save_pruned(pruned, tmp_path / "vit.safetensors")
    with pytest.raises(CheckpointError, match="factory"):
        load_pruned(tmp_path / "vit.safetensors")
    loaded = load_pruned(tmp_path / "vit.safetensors", factory=_small_vit)
    assert [b.attn.num_heads for b in loaded.blocks] == [b.attn.num_heads for b in pruned.blocks]
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    with pytest.raises(CheckpointError, match="does not match"):
        load_pruned(tmp_path / "vit.safetensors", factory=lambda: TinyNet())


def test_load_pruned_refuses_plain_checkpoints(tmp_path):
    from curvprune.checkpoint import save_checkpoint

    save_checkpoint(TinyNet(), tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="save_pruned"):
        load_pruned(tmp_path / "plain.safetensors")


@pytest.mark.slow
def test_onnx_round_trip(tmp_path):
    pytest.importorskip("onnxruntime")
    model, batches, x = _resnet20()
    pruned = prune_channels(model, "l1", None, sparsity=0.5, example_inputs=x)
    err = export_onnx(pruned, x, tmp_path / "p.onnx")
    assert err < 1e-4 and (tmp_path / "p.onnx").is_file()
    assert not pruned.training  # eval mode restored as it was


# ---------------------------------------------------------------- registry and bad input


def test_registry_lists_structured_criteria():
    structured = {n for n, c in CRITERIA.items() if c.structured}
    assert structured == {"oba", "oba_full", "taylor", "l1", "fisher", "fts", "hts", "random"}
    assert not CRITERIA["taylor"].unstructured
    assert CRITERIA["taylor"].options == ("normalize", "variant")
    assert "fisher_batch_size" in CRITERIA["fisher"].channel_options
    model, batches = tiny()
    with pytest.raises(InvalidArgument, match="structured only; use prune_channels"):
        cp.score(model, "taylor", batches)
    with pytest.raises(InvalidArgument, match="structured only; use prune_channels"):
        cp.prune(model, "l1", batches, sparsity=0.5)


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv1(x).detach()  # the graph Torch-Pruning follows ends here
        return self.fc(self.conv2(h).mean((2, 3)))


class HardCoded(nn.Module):
    """A head that reshapes to a fixed width: pruning its input breaks it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = Reshape8()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.head(self.conv(x)))


class Reshape8(nn.Module):
    def forward(self, x):
        return x.mean((2, 3)).reshape(x.shape[0], 8)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sparsity=1.0), InvalidArgument, r"sparsity must be a number in \[0, 1\)"),
        (dict(sparsity=-0.1), InvalidArgument, "sparsity"),
        (dict(sparsity=float("nan")), InvalidArgument, "sparsity"),
        (dict(sparsity="0.5"), InvalidArgument, "sparsity"),
        (dict(example_inputs=None), InvalidArgument, "example_inputs is required"),
        (dict(example_inputs=[1, 2]), InvalidType, "example_inputs must be a tensor"),
        (dict(example_inputs=torch.zeros(1, 3, 4, 4)), InvalidArgument, "at layer 'conv1'"),
        (dict(criterion="woodfisher"), InvalidArgument, "unstructured only; structured criteria"),
        (dict(criterion="magnitude"), InvalidArgument, "use 'l1'"),
        (dict(criterion="nope"), InvalidArgument, "unknown criterion"),
        (dict(criterion="oba", batches=None), InvalidArgument, "needs data"),
        (dict(add_magnitude=True), InvalidArgument, "does not take add_magnitude"),
        (dict(normalize="median"), InvalidArgument, "normalize must be one of"),
        (dict(max_layer_sparsity=0.0), InvalidArgument, "max_layer_sparsity"),
        (dict(sparsity=0.9, max_layer_sparsity=0.8), InvalidArgument, "exceeds"),
        (dict(iterative_steps=0), InvalidArgument, "iterative_steps"),
        (dict(round_to=0), InvalidArgument, "round_to"),
        (dict(ignored_layers=["conv9"]), InvalidArgument, "unknown module 'conv9'"),
        (dict(ignored_layers=[nn.Linear(2, 2)]), InvalidArgument, "not part of the model"),
        (dict(model=Detached()), InvalidArgument, "cannot trace layer 'conv1'"),
        (dict(model=HardCoded()), InvalidArgument, "at layer 'head' \\(Reshape8\\)"),
    ],
)
def test_bad_input_is_refused_and_model_left_unchanged(kwargs, error, match):
    model = kwargs.pop("model", None)
    if model is None:
        model = build_model("resnet20", in_channels=1, num_classes=4, image_size=8, seed=0)
    model.eval()
    before = _state(model)
    shapes = [p.shape for p in model.parameters()]
    args = dict(
        criterion="oba",
        batches=[(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))],
        sparsity=0.5,
        example_inputs=torch.zeros(1, 1, 8, 8),
    )
    args.update(kwargs)
    with pytest.raises(error, match=match):
        prune_channels(model, args.pop("criterion"), args.pop("batches"), **args)
    assert [p.shape for p in model.parameters()] == shapes
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_works_under_no_grad_and_keeps_frozen_layers_frozen():
    model, batches, x = _resnet20()
    model.conv1.weight.requires_grad_(False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        pruned = prune_channels(model, "l1", None, sparsity=0.3, example_inputs=x)
    assert not pruned.conv1.weight.requires_grad
    assert pruned.layer1[0].conv1.weight.requires_grad


def test_latency_timer_import_logs_nothing():
    """torch.utils.benchmark's cpp_extension import warns on CUDA builds without a CUDA runtime."""
    import subprocess
    import sys

    code = "from curvprune.structured.measure import _torch_benchmark; _torch_benchmark()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == ""
