"""Structured pruning: remove whole channels and attention heads, then save, reload, export.

Torch-Pruning finds the dependency groups and does the tensor surgery; curvprune supplies the
channel importance from the same criteria registry as the unstructured scores.

- `prune_channels` / `prune_to_macs`: a physically smaller copy of the model.
- `channel_scores`: the per-channel scores that get ranked.
- `CurvatureImportance`: the same scores as an importance for any Torch-Pruning pruner.
- `save_pruned` / `load_pruned`: safetensors plus a plain-data architecture, no pickle.
- `export_onnx`: ONNX file checked with onnxruntime.
- `count_params_and_macs`, `measure_latency`: what the pruning bought.

Layout: ``groups`` (Torch-Pruning importance, layer floors, tracing), ``prune``,
``serialize``, ``export``, ``measure``, ``run``; the channel criteria themselves are in
`curvprune.criteria.channel`. Torch-Pruning is imported on first use of a name that needs it
(PEP 562 lazy attributes), so ``import curvprune`` stays light.
"""

import importlib

#: Public name -> submodule that defines it; imported on first access.
_LAZY = {
    "CurvatureImportance": "importance",
    "channel_scores": "prune",
    "Latency": "measure",
    "count_params_and_macs": "measure",
    "effective_macs": "measure",
    "macs_by_weight": "measure",
    "export_onnx": "export",
    # compatibility re-export: the spec-building `load_pruned` lives with the models, so that
    # no module of this package imports one (`serialize.load_pruned` takes a builder)
    "load_pruned": "curvprune.models.pruned",
    "measure_latency": "measure",
    "prune_channels": "prune",
    "prune_to_macs": "prune",
    "save_pruned": "serialize",
}


def __getattr__(name: str):
    if name in _LAZY:
        where = _LAZY[name]
        module = importlib.import_module(where if "." in where else f"curvprune.structured.{where}")
        return getattr(module, name)
    raise AttributeError(f"module 'curvprune.structured' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(_LAZY)
