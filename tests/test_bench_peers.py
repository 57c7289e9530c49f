"""benchmarks/bench_peers.py: its correctness check on tiny models (no timing)."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_peers  # noqa: E402


def test_missing_peers_names_the_extra(monkeypatch):
    monkeypatch.setattr(bench_peers, "missing_peers", lambda: ["backpack-for-pytorch"])
    with pytest.raises(SystemExit) as exc:
        bench_peers.main(["--repeats", "2"])
    assert "pip install 'curvprune[bench]'" in str(exc.value)
    assert "backpack-for-pytorch" in str(exc.value)


def _tiny_cnn(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 3, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(3))
        # non-trivial running statistics, so eval mode differs from the identity
        layers[-1].running_mean.uniform_(-0.5, 0.5)
        layers[-1].running_var.uniform_(0.5, 2.0)
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("batchnorm", [False, True], ids=["cnn", "cnn-bn"])
def test_curvprune_agrees_with_peers(batchnorm):
    pytest.importorskip("backpack")
    pytest.importorskip("curvlinops")
    x, y = torch.randn(5, 2, 6, 6), torch.randint(0, 4, (5,))
    rows = bench_peers.check(bench_peers.Peers(_tiny_cnn(batchnorm), x, y))
    assert len(rows) == 4
    for label, err, tol, ok in rows:
        assert ok, f"{label}: error {err:.2e} > {tol:.0e}"


def test_check_detects_a_wrong_fisher(monkeypatch):
    pytest.importorskip("backpack")
    pytest.importorskip("curvlinops")
    x, y = torch.randn(5, 2, 6, 6), torch.randint(0, 4, (5,))
    peers = bench_peers.Peers(_tiny_cnn(False), x, y)
    # BackPACK's raw sum of squares, without the ×N that the mean reduction needs
    real = bench_peers.Peers.backpack
    monkeypatch.setattr(
        bench_peers.Peers, "backpack", lambda self: {n: t / 5 for n, t in real(self).items()}
    )
    rows = bench_peers.check(peers)
    assert not any(ok for label, *_, ok in rows if label.startswith("EF"))
    assert all(ok for label, *_, ok in rows if label.startswith("HVP"))
