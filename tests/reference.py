"""Brute-force float64 references: per-sample loops and dense Hessians.

Slow and obviously right: parameters are flattened into one vector θ, the objective is the mean
per-sample loss over all samples, and every quantity comes from `torch.autograd` one sample (or
one chunk) at a time, or from `torch.autograd.functional.hessian`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call


def trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def unflatten(model, vec):
    out, i = {}, 0
    for n, p in trainable(model).items():
        out[n] = vec[i : i + p.numel()].reshape(p.shape)
        i += p.numel()
    return out


def flatten(d, model):
    return torch.cat([d[n].reshape(-1) for n in trainable(model)])


def data(batches):
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def objective(model, batches, loss=F.cross_entropy):
    """θ ↦ L(θ): mean per-sample loss over all samples (one sample at a time)."""
    x, y = data(batches)
    buffers = dict(model.named_buffers())

    def f(vec):
        params = unflatten(model, vec)
        total = 0.0
        for i in range(x.shape[0]):
            out = functional_call(model, {**params, **buffers}, (x[i : i + 1],))
            total = total + loss(out, y[i : i + 1])
        return total / x.shape[0]

    return f


def theta(model):
    return torch.cat([p.detach().reshape(-1) for p in trainable(model).values()])


def gradient(model, batches, loss=F.cross_entropy):
    vec = theta(model).requires_grad_(True)
    (g,) = torch.autograd.grad(objective(model, batches, loss)(vec), vec)
    return unflatten(model, g)


def hessian(model, batches, loss=F.cross_entropy):
    """Dense H of L, P×P."""
    return torch.autograd.functional.hessian(
        objective(model, batches, loss), theta(model), vectorize=True
    )


def chunk_gradients(model, batches, chunk, loss=F.cross_entropy):
    """Gradients of the mean loss over consecutive chunks of `chunk` samples, P-vectors."""
    x, y = data(batches)
    out = []
    for i in range(0, x.shape[0], chunk):
        vec = theta(model).requires_grad_(True)
        params = unflatten(model, vec)
        o = functional_call(model, {**params, **dict(model.named_buffers())}, (x[i : i + chunk],))
        (g,) = torch.autograd.grad(loss(o, y[i : i + chunk]), vec)
        out.append(g)
    return torch.stack(out)


def fisher_diag(model, batches, chunk=1):
    g = chunk_gradients(model, batches, chunk)
    return unflatten(model, (g * g).mean(0))


def outputs(model, batches):
    """θ ↦ every sample's outputs, one sample at a time, concatenated along dim 0."""
    x, _ = data(batches)
    buffers = dict(model.named_buffers())

    def f(vec):
        params = unflatten(model, vec)
        return torch.cat(
            [functional_call(model, {**params, **buffers}, (x[i : i + 1],)) for i in range(len(x))]
        )

    return f


def gauss_newton(model, batches, loss=F.cross_entropy):
    """Dense G = Jᵀ (∇²_f L) J, P×P: J the explicit Jacobian of all outputs f w.r.t. θ, ∇²_f L
    the Hessian of L (mean per-sample loss) with respect to those outputs."""
    _, y = data(batches)
    f = outputs(model, batches)
    vec = theta(model)
    jac = torch.autograd.functional.jacobian(f, vec, vectorize=True)  # (N, *out, P)
    out = f(vec).detach()

    def loss_of_outputs(o):
        return sum(loss(o[i : i + 1], y[i : i + 1]) for i in range(len(o))) / len(o)

    h_out = torch.autograd.functional.hessian(loss_of_outputs, out, vectorize=True)
    j = jac.reshape(out.numel(), -1)
    return j.T @ h_out.reshape(out.numel(), out.numel()) @ j
