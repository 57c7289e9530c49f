"""Masks and the pruning loop: select masks from scores, prune in rounds, schedules, BatchNorm.

`prune` scores a model with a criterion from `curvprune.criteria`, selects keep-masks
(`select_masks`: one global threshold or one per layer) and applies them with
`torch.nn.utils.prune`; `make_permanent` folds the masks into the weights.
"""

from curvprune.pruning.batchnorm import bn_warmup
from curvprune.pruning.gradual import GradualPruner
from curvprune.pruning.interop import importance_scores
from curvprune.pruning.masks import make_permanent, select_masks, sparsity_report
from curvprune.pruning.oneshot import SCHEDULES, PruneResult, prune, round_sparsities

__all__ = [
    "GradualPruner",
    "SCHEDULES",
    "PruneResult",
    "bn_warmup",
    "importance_scores",
    "make_permanent",
    "prune",
    "round_sparsities",
    "select_masks",
    "sparsity_report",
]
