"""Pruning criteria: per-weight scores, per-channel scores, and the registry that lists both.

`CRITERIA` (in `curvprune.criteria.registry`) maps a name to a `Criterion`; `score` computes a
criterion's per-weight scores. The per-channel terms in `curvprune.criteria.channel` reuse the
per-weight terms of `curvprune.criteria.scores`.
"""

from curvprune.criteria.registry import (
    CRITERIA,
    OPTIONS,
    Criterion,
    Option,
    check_options,
    get_criterion,
    score,
)

__all__ = [
    "CRITERIA",
    "OPTIONS",
    "Criterion",
    "Option",
    "check_options",
    "get_criterion",
    "score",
]
