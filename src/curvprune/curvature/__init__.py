"""Curvature estimators: gradients, Hessian products, Fisher diagonals, inverse Fisher blocks."""

from curvprune.curvature.fisher import empirical_fisher_diag
from curvprune.curvature.gradient import loss_gradient
from curvprune.curvature.hessian import hessian_vector_product, hutchinson_diag

__all__ = [
    "empirical_fisher_diag",
    "hessian_vector_product",
    "hutchinson_diag",
    "loss_gradient",
]
