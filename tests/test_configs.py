"""Every committed sweep configuration loads, expands and validates (on the CPU here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from curvprune._core.params import Excluding, prunable_weights
from curvprune.data import DATASETS
from curvprune.experiments.sweep import expand_grid, load_sweep_file
from curvprune.models import build_model

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_expands_to_valid_runs(path, tmp_path):
    spec = {k: v for k, v in load_sweep_file(path).items() if k not in ("out", "quiet")}
    configs = expand_grid(spec)
    assert configs
    dummy = tmp_path / "dense.safetensors"
    dummy.write_bytes(b"")
    checked = set()
    for cfg in configs:
        local = {"device": "cpu"}
        if cfg.at in ("trained", "gradual") and not cfg.pretrain_epochs:
            local["checkpoint"] = str(dummy)  # made by run_experiments.py, or given on the CLI
        dataclasses.replace(cfg, **local).validate(strict=False)
        if cfg.exclude and (cfg.model, cfg.exclude) not in checked:
            checked.add((cfg.model, cfg.exclude))
            info = DATASETS[cfg.dataset]
            model = build_model(
                cfg.model,
                in_channels=info.in_channels,
                num_classes=info.num_classes,
                image_size=info.image_size,
            )
            prunable_weights(model, Excluding(cfg.exclude))  # every pattern names a weight
