"""curvprune: curvature-based neural-network pruning for PyTorch.

Curvature estimators (`empirical_fisher_diag`, `hutchinson_diag`, `hessian_vector_product`),
pruning scores from a registry of criteria (`CRITERIA`, `score`), masks applied with
`torch.nn.utils.prune` (`prune`), BatchNorm re-estimation (`bn_warmup`), and structured
pruning that physically removes channels and heads (`prune_channels`, `save_pruned`, ...).
"""

from curvprune._version import __version__
from curvprune.criteria import CRITERIA, Criterion, score
from curvprune.curvature import (
    empirical_fisher_diag,
    hessian_vector_product,
    hutchinson_diag,
    loss_gradient,
)
from curvprune.errors import (
    CheckpointError,
    CurvpruneError,
    DataError,
    InvalidArgument,
    InvalidType,
)
from curvprune.pruning.batchnorm import bn_warmup
from curvprune.pruning.masks import select_masks, sparsity_report
from curvprune.pruning.oneshot import PruneResult, prune
from curvprune.structured import (
    channel_scores,
    count_params_and_macs,
    export_onnx,
    load_pruned,
    measure_latency,
    prune_channels,
    prune_to_macs,
    save_pruned,
    structured_run,
)

__all__ = [
    "CRITERIA",
    "CheckpointError",
    "Criterion",
    "CurvpruneError",
    "DataError",
    "InvalidArgument",
    "InvalidType",
    "PruneResult",
    "__version__",
    "bn_warmup",
    "channel_scores",
    "count_params_and_macs",
    "export_onnx",
    "load_pruned",
    "measure_latency",
    "prune_channels",
    "prune_to_macs",
    "save_pruned",
    "structured_run",
    "empirical_fisher_diag",
    "hessian_vector_product",
    "hutchinson_diag",
    "loss_gradient",
    "prune",
    "score",
    "select_masks",
    "sparsity_report",
]
