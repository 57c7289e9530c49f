"""Curvature estimators: gradients, Hessian products, Fisher diagonals, inverse Fisher blocks."""

from curvprune.curvature.fisher import empirical_fisher_diag
from curvprune.curvature.gauss_newton import gauss_newton_vector_product, oba_curvature_product
from curvprune.curvature.gradient import loss_gradient
from curvprune.curvature.hessian import hessian_vector_product, hutchinson_diag

__all__ = [
    "empirical_fisher_diag",
    "gauss_newton_vector_product",
    "hessian_vector_product",
    "hutchinson_diag",
    "loss_gradient",
    "oba_curvature_product",
]
