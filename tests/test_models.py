"""Tests of `curvprune.models`: shapes, parameter counts, seeding and the registry's errors."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import nn

from curvprune.errors import InvalidArgument
from curvprune.models import MODELS, Attention, ModelInfo, build_model

# name, in_channels, image_size, num_classes, exact parameter count.
LIGHT = [
    ("mlp", 1, 8, 10, 17_226),
    ("lenet300", 1, 28, 10, 266_610),
    ("lenet5", 1, 28, 10, 61_706),
    ("lenet5", 3, 32, 10, 62_006),
    ("lenet5_bn", 1, 28, 10, 61_932),
    # Option-B (1x1 conv + BN) shortcuts; option A (zero padding) would be 269,722.
    ("resnet20", 3, 32, 10, 272_474),
    ("resnet20", 1, 28, 10, 272_186),
    ("mobilenet_v1", 3, 32, 10, 3_217_226),
]
HEAVY = [
    ("resnet32", 3, 32, 10, 466_906),
    ("resnet56", 3, 32, 100, 861_620),
    ("vgg16_bn", 3, 32, 10, 14_724_042),
    ("vgg19_bn", 3, 32, 100, 20_081_188),
    ("resnet18", 3, 32, 10, 11_173_962),
    ("resnet50", 3, 32, 10, 23_520_842),
    ("vit_tiny", 3, 32, 10, 5_362_762),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of 2 gain nothing from threads, and on a busy 2-core machine threads that wait
    for each other make these tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "channels", "size", "classes", "count"), LIGHT)
def test_forward_backward_and_parameter_count(name, channels, size, classes, count):
    model = build_model(name, in_channels=channels, num_classes=classes, image_size=size, seed=0)
    assert num_params(model) == count
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("name", "channels", "size", "classes", "count"), HEAVY)
def test_heavy_models_forward_and_parameter_count(name, channels, size, classes, count):
    model = build_model(name, in_channels=channels, num_classes=classes, image_size=size, seed=0)
    assert num_params(model) == count
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes) and torch.isfinite(out).all()


def test_every_registered_model_is_covered():
    assert {case[0] for case in LIGHT + HEAVY} == set(MODELS)
    for name, info in MODELS.items():
        assert isinstance(info, ModelInfo) and info.name == name
        assert info.description and "\n" not in info.description


def test_resnet20_is_close_to_the_published_size():
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32)
    assert abs(num_params(model) - 272_474) / 272_474 < 0.02
    shortcuts = [m for n, m in model.named_modules() if "shortcut.0" in n]
    assert [tuple(m.weight.shape) for m in shortcuts] == [(32, 16, 1, 1), (64, 32, 1, 1)]


@pytest.mark.parametrize("name", ["lenet5_bn", "resnet20", "mobilenet_v1"])
def test_same_seed_same_weights(name):
    def build(seed):
        return build_model(name, in_channels=3, num_classes=10, image_size=32, seed=seed)

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = build(0), build(0), build(1)
    assert torch.equal(torch.random.get_rng_state(), before)  # seed= leaves global RNG alone
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), key
    assert any(not torch.equal(x, z) for x, z in zip(a.parameters(), c.parameters(), strict=True))


def test_global_seed_is_used_without_seed_argument():
    torch.manual_seed(5)
    a = build_model("lenet300", in_channels=1, num_classes=10, image_size=28)
    torch.manual_seed(5)
    b = build_model("lenet300", in_channels=1, num_classes=10, image_size=28)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("name", ["mlp", "lenet5_bn", "resnet20", "mobilenet_v1", "resnet18"])
def test_no_inplace_activations(name):
    model = build_model(name, in_channels=3, num_classes=10, image_size=32)
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]


def test_small_image_stems():
    small = build_model("resnet18", in_channels=3, num_classes=10, image_size=32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    large = build_model("resnet18", in_channels=1, num_classes=10, image_size=224)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.in_channels == 1
    mobile = build_model("mobilenet_v1", in_channels=3, num_classes=10, image_size=224)
    assert mobile.features[0][0].stride == (2, 2)


def test_vgg_skips_pools_that_would_empty_the_map():
    def pools(size):
        model = build_model("vgg16_bn", in_channels=1, num_classes=10, image_size=size)
        return sum(isinstance(m, nn.MaxPool2d) for m in model.modules())

    assert (pools(32), pools(28), pools(8)) == (5, 4, 3)


def test_lenet5_rejects_tiny_images():
    with pytest.raises(InvalidArgument, match="image_size >= 12"):
        build_model("lenet5", in_channels=1, num_classes=10, image_size=8)


def test_attention_matches_reference_and_survives_head_pruning():
    torch.manual_seed(0)
    attn = Attention(dim=12, num_heads=3).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    q, k, v = attn.qkv(x).split(12, dim=-1)

    def heads(t, h, d):
        return t.reshape(2, 5, h, d).transpose(1, 2)

    def reference(q, k, v, h, d):
        scores = heads(q, h, d) @ heads(k, h, d).transpose(-1, -2) / math.sqrt(d)
        out = scores.softmax(-1) @ heads(v, h, d)
        return attn.proj(out.transpose(1, 2).reshape(2, 5, h * d))

    torch.testing.assert_close(attn(x), reference(q, k, v, 3, 4), rtol=1e-10, atol=1e-12)
    # Remove head 1 the way Torch-Pruning does: slice qkv rows, proj columns, update num_heads.
    keep = torch.tensor([0, 1, 2, 3, 8, 9, 10, 11])
    rows = torch.cat([keep, keep + 12, keep + 24])
    pruned_qkv, pruned_proj = nn.Linear(12, 24).double(), nn.Linear(8, 12).double()
    with torch.no_grad():
        pruned_qkv.weight.copy_(attn.qkv.weight[rows])
        pruned_qkv.bias.copy_(attn.qkv.bias[rows])
        pruned_proj.weight.copy_(attn.proj.weight[:, keep])
        pruned_proj.bias.copy_(attn.proj.bias)
    attn.qkv, attn.proj, attn.num_heads = pruned_qkv, pruned_proj, 2
    out = attn(x)
    assert out.shape == (2, 5, 12)
    q, k, v = pruned_qkv(x).split(8, dim=-1)
    torch.testing.assert_close(out, reference(q, k, v, 2, 4), rtol=1e-10, atol=1e-12)


def test_vit_attention_layout():
    model = build_model("vit_tiny", in_channels=3, num_classes=10, image_size=32)
    blocks = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(blocks) == 12
    assert all((a.num_heads, a.head_dim, a.qkv.out_features) == (3, 64, 576) for a in blocks)
    assert model.pos_embed.shape == (1, 65, 192)


def test_torchvision_models_adapt_channels_and_classes():
    model = build_model(
        "torchvision:mobilenet_v3_small", in_channels=1, num_classes=7, image_size=32
    )
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(InvalidArgument, match="unknown model 'resnet21'") as err:
        build_model("resnet21", in_channels=3, num_classes=10, image_size=32)
    assert all(name in str(err.value) for name in MODELS)
    assert "torchvision:NAME" in str(err.value)
    with pytest.raises(InvalidArgument, match="did you mean resnet18"):
        build_model("torchvision:resnet181", in_channels=3, num_classes=10, image_size=32)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_without_timm_says_how_to_install():
    with pytest.raises(InvalidArgument, match="pip install timm"):
        build_model("timm:resnet18", in_channels=3, num_classes=10, image_size=32)


@pytest.mark.parametrize("field", ["in_channels", "num_classes", "image_size"])
@pytest.mark.parametrize("value", [0, -1, 2.0, True])
def test_bad_sizes_are_rejected(field, value):
    sizes = {"in_channels": 1, "num_classes": 10, "image_size": 28, field: value}
    with pytest.raises(InvalidArgument, match=field):
        build_model("lenet300", **sizes)


def test_cli_accepts_torchvision_names(tmp_path):
    """`--model torchvision:NAME` reaches build_model instead of failing the registry check."""
    from curvprune.cli import main

    out = tmp_path / "run"
    argv = [
        "train",
        "--model",
        "torchvision:resnet18",
        "--dataset",
        "digits",
        "--epochs",
        "0",
        "--threads",
        "1",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert (out / "result.json").is_file()
