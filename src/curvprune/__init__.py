"""curvprune: curvature-based neural-network pruning for PyTorch.

The public API, by layer (each layer imports only the ones above it in this list):

- curvature: `empirical_fisher_diag`, `hutchinson_diag`, `hessian_vector_product`,
  `gauss_newton_vector_product`, `oba_curvature_product`, `loss_gradient`, and
  WoodFisher's `inverse_fisher_blocks` / `InverseFisherBlocks` / `obs_update`;
- criteria: `CRITERIA`, `Criterion`, `OPTIONS`, `score`;
- pruning: `prune`, `PruneResult`, `select_masks`, `sparsity_report`, `make_permanent`,
  `bn_warmup`, `prunable_weights`, `Excluding`, `importance_scores` (for
  `torch.nn.utils.prune`), `GradualPruner` (gradual pruning in the user's own training loop);
- structured: `prune_channels`, `prune_to_macs`, `channel_scores`, `save_pruned`,
  `load_pruned`, `export_onnx`, `count_params_and_macs`, `measure_latency`, and
  `CurvatureImportance` (a Torch-Pruning importance).

Structured names load Torch-Pruning on first use, so ``import curvprune`` stays light.

Example:
    >>> import torch
    >>> from torch import nn
    >>> import curvprune as cp
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> batches = [(torch.randn(16, 4), torch.randint(0, 2, (16,)))]
    >>> result = cp.prune(model, "snip", batches, sparsity=0.5)
    >>> result.sparsity
    0.5
"""

import importlib

from curvprune._core.params import Excluding, prunable_weights
from curvprune._core.state import SCORING_MODES
from curvprune._version import __version__
from curvprune.criteria import CRITERIA, OPTIONS, Criterion, score
from curvprune.curvature import (
    empirical_fisher_diag,
    gauss_newton_vector_product,
    hessian_vector_product,
    hutchinson_diag,
    loss_gradient,
    oba_curvature_product,
)
from curvprune.curvature.woodfisher import InverseFisherBlocks, inverse_fisher_blocks, obs_update
from curvprune.errors import (
    CheckpointError,
    CurvpruneError,
    DataError,
    InvalidArgument,
    InvalidType,
)
from curvprune.pruning import (
    GradualPruner,
    PruneResult,
    bn_warmup,
    importance_scores,
    make_permanent,
    prune,
    select_masks,
    sparsity_report,
)

#: Structured names: public name -> module; imported on first access (PEP 562).
_LAZY = {
    "CurvatureImportance": "curvprune.structured.importance",
    "channel_scores": "curvprune.structured.prune",
    "count_params_and_macs": "curvprune.structured.measure",
    "export_onnx": "curvprune.structured.export",
    "load_pruned": "curvprune.models.pruned",
    "measure_latency": "curvprune.structured.measure",
    "prune_channels": "curvprune.structured.prune",
    "prune_to_macs": "curvprune.structured.prune",
    "save_pruned": "curvprune.structured.serialize",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'curvprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "__version__",
    # errors
    "CheckpointError",
    "CurvpruneError",
    "DataError",
    "InvalidArgument",
    "InvalidType",
    # curvature
    "InverseFisherBlocks",
    "empirical_fisher_diag",
    "gauss_newton_vector_product",
    "hessian_vector_product",
    "hutchinson_diag",
    "inverse_fisher_blocks",
    "loss_gradient",
    "oba_curvature_product",
    "obs_update",
    # criteria
    "CRITERIA",
    "OPTIONS",
    "SCORING_MODES",
    "Criterion",
    "score",
    # pruning
    "Excluding",
    "GradualPruner",
    "PruneResult",
    "bn_warmup",
    "importance_scores",
    "make_permanent",
    "prunable_weights",
    "prune",
    "select_masks",
    "sparsity_report",
    # structured (lazy)
    "CurvatureImportance",
    "channel_scores",
    "count_params_and_macs",
    "export_onnx",
    "load_pruned",
    "measure_latency",
    "prune_channels",
    "prune_to_macs",
    "save_pruned",
]
