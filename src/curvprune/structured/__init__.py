"""Structured pruning: remove whole channels and attention heads, then save, reload, export.

Torch-Pruning finds the dependency groups and does the tensor surgery; curvprune supplies the
channel importance from the same criteria registry as the unstructured scores.

- `prune_channels` / `prune_to_macs`: a physically smaller copy of the model.
- `channel_scores`: the per-channel scores that get ranked.
- `save_pruned` / `load_pruned`: safetensors plus a plain-data architecture, no pickle.
- `export_onnx`: ONNX file checked with onnxruntime.
- `count_params_and_macs`, `measure_latency`, `structured_run`: what the pruning bought.

Layout: ``importance`` (per-weight terms of each criterion), ``groups`` (Torch-Pruning
importance, layer floors, tracing), ``prune``, ``serialize``, ``export``, ``measure``, ``run``.
"""

from curvprune.structured.export import export_onnx
from curvprune.structured.measure import (
    Latency,
    count_params_and_macs,
    effective_macs,
    macs_by_weight,
    measure_latency,
)
from curvprune.structured.prune import channel_scores, prune_channels, prune_to_macs
from curvprune.structured.run import ModelCost, StructuredResult, model_cost, structured_run
from curvprune.structured.serialize import load_pruned, save_pruned

__all__ = [
    "Latency",
    "ModelCost",
    "StructuredResult",
    "channel_scores",
    "count_params_and_macs",
    "effective_macs",
    "export_onnx",
    "load_pruned",
    "macs_by_weight",
    "measure_latency",
    "model_cost",
    "prune_channels",
    "prune_to_macs",
    "save_pruned",
    "structured_run",
]
