"""Per-weight pruning scores: higher score = keep.

Each function takes ``(model, weights, batches, loss_fn, **options)``, with `weights` the
prunable weights (`curvprune._core.params.PrunableWeight` by name), and returns ``{name: score}``
shaped like each weight. θ is the effective weight (zero where already pruned), g = ∇L,
F the empirical Fisher diagonal, D the Hutchinson diagonal, H the Hessian of L. In Hg and Hθ,
g and θ are the prunable weights' parts, zero on every other parameter (the perturbation that
pruning makes), and the product is read off at the prunable weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.func import functional_call

from curvprune._core.batches import first_batch
from curvprune.criteria.terms import first_order, hessian_term, obd, taylor_sensitivity
from curvprune.curvature.fisher import empirical_fisher_diag
from curvprune.curvature.gradient import loss_gradient
from curvprune.curvature.hessian import _hutchinson, hessian_vector_product
from curvprune.curvature.woodfisher import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_DAMPENING,
    InverseFisherBlocks,
    inverse_fisher_blocks,
)
from curvprune.errors import InvalidArgument

Weights = dict  # name -> PrunableWeight


def _theta(weights: Weights) -> dict[str, Tensor]:
    return {n: w.value() for n, w in weights.items()}


def _at(weights: Weights, per_param: dict[str, Tensor]) -> dict[str, Tensor]:
    """Read a per-parameter dict off at the prunable weights."""
    return {n: per_param[w.param_name] for n, w in weights.items()}


def with_temperature(loss_fn, temperature: float):
    """`loss_fn` applied to logits / T (T = 1: unchanged)."""
    if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise InvalidArgument(f"temperature must be a positive number, got {temperature!r}")
    if temperature == 1:
        return loss_fn
    return lambda out, y: loss_fn(out / temperature, y)


def random_scores(model, weights, batches, loss_fn, *, seed: int = 0):
    """Uniform random scores in [0, 1), reproducible from `seed`."""
    gen = torch.Generator().manual_seed(int(seed))
    return {
        n: torch.rand(w.value().shape, generator=gen, dtype=torch.float64).to(w.value())
        for n, w in weights.items()
    }


def magnitude_scores(model, weights, batches, loss_fn):
    """|θ|."""
    return {n: t.abs() for n, t in _theta(weights).items()}


def snip_scores(model, weights, batches, loss_fn):
    """|θ ⊙ g| (SNIP's connection sensitivity)."""
    g = _at(weights, loss_gradient(model, loss_fn, batches))
    return {n: first_order(t, g[n]).abs() for n, t in _theta(weights).items()}


def _restricted_hvp(model, weights, batches, loss_fn, vector: dict[str, Tensor]):
    v = {weights[n].param_name: t for n, t in vector.items()}
    return _at(weights, hessian_vector_product(model, loss_fn, batches, v))


def grasp_scores(model, weights, batches, loss_fn):
    """θ ⊙ (Hg); GraSP's S = −θ ⊙ Hg removes the largest S, i.e. keeps the largest θ ⊙ Hg."""
    g = _at(weights, loss_gradient(model, loss_fn, batches))
    hg = _restricted_hvp(model, weights, batches, loss_fn, g)
    return {n: t * hg[n] for n, t in _theta(weights).items()}


def synflow_scores(model, weights, batches, loss_fn):
    """|θ| ⊙ ∂R/∂|θ|, R the summed output for one all-ones input, |parameters|, float64.

    Data-free: `batches` gives only the input shape. Runs the model functionally in eval mode
    with every parameter and floating buffer replaced by its absolute value in float64, so the
    model itself is untouched.
    """
    x, _ = first_batch(batches, model)
    params = {
        n: p.detach().abs().double().requires_grad_(n in _param_names(weights))
        for n, p in model.named_parameters()
    }
    buffers = {
        n: b.detach().abs().double() if b.is_floating_point() else b
        for n, b in model.named_buffers()
    }
    model.eval()  # the caller's `preserved` context restores the mode
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    out = functional_call(model, {**params, **buffers}, (ones,))
    wanted = [params[w.param_name] for w in weights.values()]
    grads = torch.autograd.grad(out.sum(), wanted, allow_unused=True)
    result = {}
    for (n, w), g in zip(weights.items(), grads):
        theta = w.value()
        g = torch.zeros_like(theta) if g is None else g
        result[n] = (theta.double().abs() * g).to(theta.dtype)
    return result


def _param_names(weights: Weights) -> set[str]:
    return {w.param_name for w in weights.values()}


def _fisher(model, weights, batches, loss_fn, fisher_batch_size, chunk_size, max_memory):
    names = [w.param_name for w in weights.values()]
    return _at(
        weights,
        empirical_fisher_diag(
            model,
            loss_fn,
            batches,
            fisher_batch_size=fisher_batch_size,
            names=names,
            chunk_size=chunk_size,
            max_memory=max_memory,
        ),
    )


def fisher_scores(
    model, weights, batches, loss_fn, *, fisher_batch_size=1, chunk_size=None, max_memory=None
):
    """½ θ² ⊙ F (Optimal Brain Damage with the empirical Fisher)."""
    f = _fisher(model, weights, batches, loss_fn, fisher_batch_size, chunk_size, max_memory)
    return {n: obd(t, f[n]) for n, t in _theta(weights).items()}


def fts_scores(
    model, weights, batches, loss_fn, *, fisher_batch_size=1, chunk_size=None, max_memory=None
):
    """|θ ⊙ g + ½ θ² ⊙ F| (Fisher-Taylor Sensitivity)."""
    g = _at(weights, loss_gradient(model, loss_fn, batches))
    f = _fisher(model, weights, batches, loss_fn, fisher_batch_size, chunk_size, max_memory)
    return {n: taylor_sensitivity(t, g[n], f[n]) for n, t in _theta(weights).items()}


def _hutch(model, weights, batches, loss_fn, num_probes, seed, temperature):
    loss_fn = with_temperature(loss_fn, temperature)
    d, g = _hutchinson(
        model, loss_fn, batches, num_probes=num_probes, seed=seed, with_gradient=True
    )
    return _at(weights, d), _at(weights, g)


def hp_scores(model, weights, batches, loss_fn, *, num_probes=10, seed=0, temperature=1.0):
    """½ θ² ⊙ D (Optimal Brain Damage with the Hutchinson diagonal)."""
    d, _ = _hutch(model, weights, batches, loss_fn, num_probes, seed, temperature)
    return {n: obd(t, d[n]) for n, t in _theta(weights).items()}


def hts_scores(model, weights, batches, loss_fn, *, num_probes=10, seed=0, temperature=1.0):
    """|θ ⊙ g + ½ θ² ⊙ D| (Hutchinson-Taylor Sensitivity)."""
    d, g = _hutch(model, weights, batches, loss_fn, num_probes, seed, temperature)
    return {n: taylor_sensitivity(t, g[n], d[n]) for n, t in _theta(weights).items()}


def oba_scores(model, weights, batches, loss_fn, *, normalize="none", add_magnitude=False):
    """|θ ⊙ (Hθ)| (Optimal Brain Apoptosis), optionally / its max per tensor, + |θ|."""
    if normalize not in ("none", "max"):
        raise InvalidArgument(f"normalize must be 'none' or 'max', got {normalize!r}")
    theta = _theta(weights)
    h_theta = _restricted_hvp(model, weights, batches, loss_fn, theta)
    out = {}
    for n, t in theta.items():
        s = hessian_term(t, h_theta[n]).abs()
        if normalize == "max" and s.max() > 0:
            s = s / s.max()
        out[n] = s + t.abs() if add_magnitude else s
    return out


def woodfisher_blocks(
    model, weights, batches, loss_fn, **options
) -> tuple[dict[str, Tensor], InverseFisherBlocks, dict[str, Tensor]]:
    """WoodFisher scores θ_q² / (2 [F⁻¹]_qq), with the blocks and diag(F⁻¹) by weight name.

    `options` are `woodfisher_scores`'s, passed on to `inverse_fisher_blocks`.
    """
    names = [w.param_name for w in weights.values()]
    blocks = inverse_fisher_blocks(model, loss_fn, batches, names, **options)
    by_param = blocks.diag()
    diag = _at(weights, by_param)
    # key the blocks by weight name too, so the OBS update speaks the same names
    blocks = blocks.renamed({w.param_name: n for n, w in weights.items()})
    scores = {
        n: (t.to(torch.float64) ** 2 / (2 * diag[n])).to(t.dtype)
        for n, t in _theta(weights).items()
    }
    return scores, blocks, diag


def woodfisher_scores(
    model,
    weights,
    batches,
    loss_fn,
    *,
    dampening=DEFAULT_DAMPENING,
    block_size=DEFAULT_BLOCK_SIZE,
    num_grads=None,
    fisher_batch_size=1,
    chunk_size=None,
    max_memory=None,
):
    """θ_q² / (2 [F⁻¹]_qq), F = λI + (1/N) Σ g gᵀ per block (WoodFisher)."""
    return woodfisher_blocks(
        model,
        weights,
        batches,
        loss_fn,
        dampening=dampening,
        block_size=block_size,
        num_grads=num_grads,
        fisher_batch_size=fisher_batch_size,
        chunk_size=chunk_size,
        max_memory=max_memory,
    )[0]
