"""Gauss-Newton-vector products G·v and the residual curvature (H − G)·v.

With f(θ) the model's outputs on a batch and ℓ the batch-mean loss of those outputs, the
Hessian of the loss splits into

    H = Jᵀ (∇²ℓ) J + Σ_k (∂ℓ/∂f_k) ∇²f_k = G + (H − G),

J = ∂f/∂θ the Jacobian of the outputs with respect to the trainable parameters. G, the
Gauss-Newton matrix, is positive semi-definite for a convex loss; H − G holds the second
derivatives of the network itself, weighted by the output gradient. For a network that is
piecewise linear in each layer's weights (Linear/Conv layers, ReLU, max-pooling, BatchNorm in
eval mode, residual sums) ∇²f_k has no block within one layer, so neither has H − G: only
the cross terms between layers remain. This is the curvature that Optimal Brain Apoptosis
computes (see `curvprune.criteria.scores.oba_scores`).

Conventions as in `curvprune.curvature.hessian`: L is the mean per-sample loss over every
sample of every batch, a batch of B samples out of N weighs B/N, the sums are combined over
ranks under `torch.distributed`, vectors and results are dicts keyed by
``named_parameters()`` names (missing = zero), and the model is left as found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from curvprune._core import distributed
from curvprune._core.batches import iter_batches
from curvprune._core.inputs import call_model, num_samples
from curvprune._core.params import check_param_dict, trainable_parameters
from curvprune._core.state import preserved
from curvprune.curvature.gradient import LossFn, default_loss, output_loss
from curvprune.errors import InvalidArgument


def _gauss_newton_batch(out: Tensor, y: Tensor, loss_fn, plist, live, v) -> tuple:
    """Jᵀ (∇²ℓ) J v on one batch: one jvp (double-vjp trick), the loss HVP, one vjp."""
    # J v: u ↦ Jᵀu is linear in u, so differentiating <Jᵀu, v> with respect to u gives J v
    u = torch.zeros_like(out, requires_grad=True)
    jt_u = torch.autograd.grad(out, plist, grad_outputs=u, create_graph=True, allow_unused=True)
    pairs = [(jt_u[i], v[i]) for i in live if jt_u[i] is not None and jt_u[i].requires_grad]
    if not pairs:
        return (None,) * len(plist)
    (jv,) = torch.autograd.grad(
        [p for p, _ in pairs], u, grad_outputs=[w for _, w in pairs], allow_unused=True
    )
    if jv is None:
        return (None,) * len(plist)
    # (∇²ℓ) J v: the loss's Hessian with respect to the outputs, applied to J v
    leaf = out.detach().requires_grad_(True)
    (grad_out,) = torch.autograd.grad(output_loss(loss_fn, leaf, y), leaf, create_graph=True)
    if not grad_out.requires_grad:  # the loss is linear in the outputs
        return (None,) * len(plist)
    (hjv,) = torch.autograd.grad(grad_out, leaf, grad_outputs=jv, allow_unused=True)
    if hjv is None:
        return (None,) * len(plist)
    return torch.autograd.grad(out, plist, grad_outputs=hjv, allow_unused=True)


def _residual_batch(out: Tensor, y: Tensor, loss_fn, plist, live, v) -> tuple:
    """Σ_k r_k ∇²f_k v on one batch, r = ∂ℓ/∂f held constant: one double backward."""
    leaf = out.detach().requires_grad_(True)
    (r,) = torch.autograd.grad(output_loss(loss_fn, leaf, y), leaf)
    jt_r = torch.autograd.grad(out, plist, grad_outputs=r, create_graph=True, allow_unused=True)
    pairs = [(jt_r[i], v[i]) for i in live if jt_r[i] is not None and jt_r[i].requires_grad]
    if not pairs:  # the network is linear in every parameter
        return (None,) * len(plist)
    return torch.autograd.grad(
        [p for p, _ in pairs], plist, grad_outputs=[w for _, w in pairs], allow_unused=True
    )


def _product_pass(model, loss_fn, batches, vector, per_batch) -> dict[str, Tensor]:
    params = trainable_parameters(model)
    names, plist = list(params), list(params.values())
    v = check_param_dict(vector, model, "vector")
    v = [v[n].detach() if n in v else None for n in names]
    live = [i for i, t in enumerate(v) if t is not None]
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    loss_fn = default_loss(loss_fn)
    with preserved(model):
        for x, y in iter_batches(batches, model):
            b = num_samples(x)
            out = call_model(model, x)
            if not isinstance(out, Tensor):
                raise InvalidArgument(
                    f"Gauss-Newton and OBA products need the model's outputs as one tensor, got "
                    f"{type(out).__name__}; pass forward=lambda model, x: model(**x).logits"
                )
            products = per_batch(out, y, loss_fn, plist, live, v)
            for n, h in zip(names, products):
                if h is not None:
                    total[n].add_(h.detach(), alpha=b)
            count += b
    return distributed.mean_over_samples(count, total)[0]


def gauss_newton_vector_product(
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable,
    vector: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """Exact G·v, G = Σ_batches (B/N) Jᵀ (∇²ℓ) J the Gauss-Newton matrix of L.

    Per batch: J v by one Jacobian-vector product (the double-vjp trick), then the Hessian of
    the batch-mean loss with respect to the outputs applied to it, then one vector-Jacobian
    product.

    Args:
        model: the network; its parameters, modes and buffers are left unchanged.
        loss_fn: batch-mean loss ``loss_fn(outputs, targets)``; None for cross-entropy.
        batches: iterable of ``(inputs, targets)``.
        vector: dict keyed by ``named_parameters()`` names; missing parameters count as zero.

    Returns:
        dict with one tensor per trainable parameter, shaped like it.
    """
    return _product_pass(model, loss_fn, batches, vector, _gauss_newton_batch)


def oba_curvature_product(
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable,
    vector: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """Exact (H − G)·v = Σ_batches (B/N) Σ_k (∂ℓ/∂f_k) ∇²f_k v, the network's own curvature.

    Computed in one double backward per batch with the output gradient ∂ℓ/∂f held constant,
    as the Optimal Brain Apoptosis code does; equal to `hessian_vector_product` minus
    `gauss_newton_vector_product`. For a piecewise-linear network its blocks within one
    layer's parameters are zero. Arguments and result as `gauss_newton_vector_product`.
    """
    return _product_pass(model, loss_fn, batches, vector, _residual_batch)


__all__ = ["gauss_newton_vector_product", "oba_curvature_product"]
