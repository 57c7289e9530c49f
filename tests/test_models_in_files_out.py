"""Models in (pretrained torchvision weights from the cache), files out (export, bool masks)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

import curvprune as cp
from curvprune.checkpoint import fold_masks, load_checkpoint, read_checkpoint, save_checkpoint
from curvprune.cli import main
from curvprune.errors import InvalidArgument
from curvprune.experiments.config import RunConfig
from curvprune.models import build_model

torchvision = pytest.importorskip("torchvision")

SPEC = {"model": "lenet5", "in_channels": 1, "num_classes": 10, "image_size": 12}


def _masked_checkpoint(path):
    model = build_model(**{k: v for k, v in SPEC.items() if k != "model"}, name="lenet5", seed=0)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(6, 1, 12, 12, generator=gen), torch.randint(0, 10, (6,), generator=gen))
    ]
    cp.prune(model, "snip", batches, sparsity=0.7)
    save_checkpoint(
        model, path, metadata={**{k: str(v) for k, v in SPEC.items()}, "format": "curvprune"}
    )
    return model.eval(), batches[0][0]


def test_masks_are_stored_as_bool_and_float_masks_still_load(tmp_path):
    model, x = _masked_checkpoint(tmp_path / "m.safetensors")
    state, _ = read_checkpoint(tmp_path / "m.safetensors")
    masks = [k for k in state if k.endswith("_mask")]
    assert masks and all(state[k].dtype == torch.bool for k in masks)
    fresh = build_model("lenet5", in_channels=1, num_classes=10, image_size=12)
    load_checkpoint(fresh, tmp_path / "m.safetensors")
    torch.testing.assert_close(fresh.eval()(x), model(x))
    # a checkpoint from before: float masks
    from safetensors.torch import save_file

    old = {k: v.float() if k in masks else v for k, v in state.items()}
    save_file(old, str(tmp_path / "old.safetensors"))
    again = build_model("lenet5", in_channels=1, num_classes=10, image_size=12)
    load_checkpoint(again, tmp_path / "old.safetensors")
    torch.testing.assert_close(again.eval()(x), model(x))
    assert set(fold_masks(old)) == set(fold_masks(state))


def test_export_safetensors_loads_strictly_into_a_fresh_model(tmp_path, capsys):
    model, x = _masked_checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "plain.safetensors"
    assert main(["export", str(tmp_path / "m.safetensors"), "--out", str(out)]) == 0
    assert "5 masks folded" in capsys.readouterr().out
    state, metadata = read_checkpoint(out)
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    assert metadata["model"] == "lenet5"
    fresh = build_model("lenet5", in_channels=1, num_classes=10, image_size=12)
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(fresh.eval()(x), model(x))
    zeros = sum(
        int((v == 0).sum()) for k, v in state.items() if k.endswith("weight") and v.dim() > 1
    )
    assert zeros >= round(
        0.7 * sum(v.numel() for k, v in state.items() if k.endswith("weight") and v.dim() > 1)
    )


@pytest.mark.slow  # torch.export + onnxruntime: ~7 s
def test_export_onnx(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    _masked_checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["export", str(tmp_path / "m.safetensors"), "--out", str(out)]) == 0
    assert out.is_file() and "onnxruntime matches" in capsys.readouterr().out


def test_export_errors(tmp_path, capsys):
    assert (
        main(
            ["export", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "x.safetensors")]
        )
        == 2
    )
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["export", "a", "--out", "b", "--format", "pt"]) == 2
    model = nn.Sequential(nn.Linear(3, 2))
    save_checkpoint(model, tmp_path / "bare.safetensors")
    assert (
        main(["export", str(tmp_path / "bare.safetensors"), "--out", str(tmp_path / "b.onnx")]) == 2
    )
    assert "records no model" in capsys.readouterr().err


def test_save_pruned_works_for_your_own_torchvision_model(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    small = cp.prune_channels(
        model, "l1", None, sparsity=0.5, example_inputs=torch.randn(1, 3, 32, 32)
    )
    cp.save_pruned(small, tmp_path / "small.safetensors")
    back = cp.load_pruned(
        tmp_path / "small.safetensors", factory=lambda: torchvision.models.resnet18(num_classes=10)
    )
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(back(x), small(x))
    assert back.layer1[0].conv1.out_channels == small.layer1[0].conv1.out_channels < 64


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _cache(name, cache_dir, seed=1):
    """Weights in torchvision's cache layout: $TORCH_HOME/hub/checkpoints/<file of the URL>."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    torch.manual_seed(seed)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache_dir / weights.url.rsplit("/", 1)[1])
    return state


@pytest.mark.parametrize(
    "name, head", [("mobilenet_v3_small", "classifier.3"), ("squeezenet1_1", "classifier.1")]
)
def test_pretrained_torchvision_from_the_cache(torch_home, name, head):
    saved = _cache(name, torch_home)
    same = build_model(
        f"torchvision:{name}", in_channels=3, num_classes=1000, image_size=64, pretrained=True
    )
    for k, v in same.state_dict().items():
        torch.testing.assert_close(v, saved[k], msg=k)
    other = build_model(
        f"torchvision:{name}", in_channels=3, num_classes=7, image_size=64, pretrained=True
    )
    state = other.state_dict()
    heads = {k for k in saved if k.startswith(head + ".")}
    assert heads and all(state[k].shape[0] == 7 for k in heads)  # a new head for 7 classes
    for k in set(saved) - heads:
        torch.testing.assert_close(state[k], saved[k], msg=k)
    assert other.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_pretrained_offline_names_the_file(torch_home):
    with pytest.raises(InvalidArgument, match=r"put it at .*mobilenet_v3_small-047dcff4\.pth"):
        build_model(
            "torchvision:mobilenet_v3_small",
            in_channels=3,
            num_classes=10,
            image_size=32,
            pretrained=True,
        )
    with pytest.raises(InvalidArgument, match="torchvision:NAME and timm:NAME"):
        build_model("resnet18", in_channels=3, num_classes=10, image_size=32, pretrained=True)


def test_pretrained_is_part_of_the_run_id_only_when_on():
    plain = RunConfig(model="torchvision:resnet18")
    on = RunConfig(model="torchvision:resnet18", pretrained=True)
    assert plain.run_id() != on.run_id()
    with pytest.raises(InvalidArgument, match="--pretrained loads"):
        RunConfig(model="mlp", pretrained=True).validate()
    RunConfig(
        model="torchvision:resnet18", pretrained=True, at="trained", dataset="digits"
    ).validate()


def test_cli_pretrained_flag_is_checked(capsys):
    assert main(["prune", "--model", "mlp", "--pretrained", "--epochs", "0"]) == 2
    assert "--pretrained loads torchvision:NAME or timm:NAME" in capsys.readouterr().err
