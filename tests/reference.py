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


def _surrogate(layer, x, weight, bias=None):
    """The layer's linear map with `weight` (and `bias`): the OBA code's surrogate forward."""
    if isinstance(layer, torch.nn.Linear):
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def oba_code_terms(model, batches, *, tangent_masks=False):
    """What the OBA code's unstructured pass computes per parameter (``OBAPruner``, delta 0).

    For a Sequential of Linear/Conv2d, BatchNorm2d (eval), ReLU, MaxPool2d and Flatten, with
    θ the weights and biases of the Linear/Conv layers (BatchNorm is not perturbed), per batch
    (batch-mean cross-entropy), G_l = ∂L/∂Y_l the output gradient of layer l held fixed:

    - upward: θ_p ⊙ ∂/∂p Σ_l <G_l, X_l(p) θ_lᵀ>, X_l the input of layer l as a function of
      the earlier parameters p (through the real ReLU masks and max-pool indices);
    - downward: θ_W ⊙ ∂/∂W <G_l, W T_l>, T_l the tangent of X_l along θ, propagated
      forward: T ↦ X θ_Wᵀ + θ_b + T Wᵀ at a layer, T·γ/√(var+ε) at BatchNorm, T·1[s > 0] at
      ReLU, T at the max positions of s at max-pooling, where s is the forward activation, or,
      with ``tangent_masks=True``, the tangent itself (the code as shipped: its
      ``input_forward`` is built with ``obtain_feature``, which returns the tangent).

    Returns the sum over batches divided by their count, keyed by parameter name.
    """
    layers = list(model)
    names = {m: n for n, m in model.named_modules()}
    scored = [m for m in layers if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    total = {}
    for x, y in batches:
        # the real forward, keeping each scored layer's input X_l and output Y_l
        inputs, outputs, a = {}, {}, x
        for m in layers:
            if m in scored:
                inputs[m] = a
                a = m(a)
                outputs[m] = a
            else:
                a = m(a)
        loss = F.cross_entropy(a, y)
        grads = torch.autograd.grad(loss, [outputs[m] for m in scored], retain_graph=True)
        g_out = dict(zip(scored, [g.detach() for g in grads]))
        params = [p for m in scored for p in m.parameters(recurse=False)]
        # upward: the later layers' inputs differentiated with respect to earlier parameters
        surrogate = sum(
            (g_out[m] * _surrogate(m, inputs[m], m.weight.detach())).sum()
            for m in scored
            if inputs[m].requires_grad
        )
        up = torch.autograd.grad(surrogate, params, allow_unused=True)
        up = {id(p): torch.zeros_like(p) if u is None else u for p, u in zip(params, up)}
        # downward: forward tangent propagation
        terms = {}
        act, tan = x.detach(), torch.zeros_like(x)
        for m in layers:
            if m in scored:
                w = m.weight.detach().clone().requires_grad_(True)
                (dw,) = torch.autograd.grad(_surrogate(m, tan, w), w, g_out[m])
                theta_b = None if m.bias is None else m.bias.detach()
                terms[m] = {"weight": m.weight.detach() * (up[id(m.weight)] + dw)}
                if m.bias is not None:
                    terms[m]["bias"] = m.bias.detach() * up[id(m.bias)]
                with torch.no_grad():
                    tan = _surrogate(m, act, m.weight, theta_b) + _surrogate(m, tan, m.weight)
                    act = m(act)
            elif isinstance(m, torch.nn.BatchNorm2d):
                with torch.no_grad():
                    scale = m.weight / torch.sqrt(m.running_var + m.eps)
                    tan, act = tan * scale.view(1, -1, 1, 1), m(act)
            elif isinstance(m, torch.nn.ReLU):
                source = tan if tangent_masks else act
                tan, act = tan * (source > 0), F.relu(act)
            elif isinstance(m, torch.nn.MaxPool2d):
                source = tan if tangent_masks else act
                _, idx = F.max_pool2d(
                    source, m.kernel_size, m.stride, m.padding, return_indices=True
                )
                tan = tan.flatten(2).gather(2, idx.flatten(2)).view_as(idx)
                act = m(act)
            else:  # Flatten
                tan, act = m(tan), m(act)
        for m, per in terms.items():
            for attr, t in per.items():
                key = f"{names[m]}.{attr}"
                total[key] = total.get(key, 0) + t
    return {n: t / len(batches) for n, t in total.items()}
