"""The per-weight terms of the criteria, each formula written once.

Per-weight scores (`curvprune.criteria.scores`) apply them to the prunable weights; channel
scores (`curvprune.criteria.channel`) apply them to every trainable parameter and sum them over
each channel's weights. θ is a weight, g the loss gradient, c a curvature diagonal (the
empirical Fisher F or the Hutchinson estimate D), Hθ a Hessian-vector product. All shapes are
the weight's.
"""

from __future__ import annotations

from torch import Tensor


def first_order(theta: Tensor, grad: Tensor) -> Tensor:
    """θ ⊙ g: the first-order change of the loss when θ is removed (up to sign)."""
    return theta * grad


def obd(theta: Tensor, curvature: Tensor) -> Tensor:
    """½ θ² ⊙ c: Optimal Brain Damage's second-order term with a diagonal curvature."""
    return 0.5 * theta * theta * curvature


def taylor_sensitivity(theta: Tensor, grad: Tensor, curvature: Tensor) -> Tensor:
    """|θ ⊙ g + ½ θ² ⊙ c|: the second-order Taylor change (FTS with F, HTS with D)."""
    return (first_order(theta, grad) + obd(theta, curvature)).abs()


def hessian_term(theta: Tensor, h_theta: Tensor) -> Tensor:
    """θ ⊙ (Hθ): OBA's second-order term, with the cross terms to every other weight."""
    return theta * h_theta


__all__ = ["first_order", "hessian_term", "obd", "taylor_sensitivity"]
