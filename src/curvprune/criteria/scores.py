"""Per-weight pruning scores: higher score = keep.

Each function takes ``(model, weights, batches, loss_fn, **options)``, with `weights` the
prunable weights (`curvprune._core.params.PrunableWeight` by name), and returns ``{name: score}``
shaped like each weight. θ is the effective weight (zero where already pruned), g = ∇L,
F the empirical Fisher diagonal, D the Hutchinson diagonal, H the Hessian of L, G its
Gauss-Newton part. In Hg and Hθ, g and θ are the prunable weights' parts, zero on every other
parameter (the perturbation that pruning makes), and the product is read off at the prunable
weights.

Criteria named after a paper compute what that paper's official code computes, with its
defaults; other variants are options (``variant``, ``temperature``, ...).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from curvprune._core.batches import first_batch
from curvprune._core.params import prunable_weights, trainable_parameters
from curvprune.criteria.terms import first_order, hessian_term, obd, taylor_sensitivity
from curvprune.curvature.fisher import empirical_fisher_diag
from curvprune.curvature.gauss_newton import oba_curvature_product
from curvprune.curvature.gradient import loss_gradient
from curvprune.curvature.hessian import _hutchinson, hessian_vector_product
from curvprune.curvature.woodfisher import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_DAMPENING,
    InverseFisherBlocks,
    inverse_fisher_blocks,
    mean_gradient,
)
from curvprune.errors import InvalidArgument

Weights = dict  # name -> PrunableWeight

#: Temperature T of the Hutchinson criteria and GraSP: the loss sees logits / T, as in the HTS
#: code (T = 200 for the Hutchinson diagonal and the gradient) and GraSP's original code.
DEFAULT_TEMPERATURE = 200.0

#: ``variant`` of the criteria whose seed repositories disagree: "original" follows the
#: method's own paper and code, "pai_code" the FTS/HTS repositories' reimplementation.
SeedVariant = Literal["original", "pai_code"]
#: ``variant`` of `oba` and `oba_full`: "original" the paper's θ ⊙ (Mθ) over the prunable
#: weights, "oba_code" the choices of the OBA repository's unstructured pruners.
ObaVariant = Literal["original", "oba_code"]

#: What the OBA code adds to the max in its ``max`` normalizer (``importance._normalize``).
OBA_CODE_EPS = 1e-6

#: λ added to F in FBSS. The FTS code has none and divides by zero where F = 0.
FBSS_DAMPENING = 1e-8


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
    return lambda out, y: loss_fn(_divided(out, temperature), y)


def _divided(out, temperature: float):
    """Logits / T: the output tensor, or the ``logits`` of an output object (transformers)."""
    if isinstance(out, Tensor):
        return out / temperature
    if isinstance(out, Mapping) and isinstance(out.get("logits"), Tensor):
        return type(out)(**{**out, "logits": out["logits"] / temperature})
    raise InvalidArgument(
        f"temperature needs the model's outputs as logits, got {type(out).__name__}; pass "
        "temperature=1, or forward=lambda model, x: model(**x).logits"
    )


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


def _restricted_hvp(
    model, weights, batches, loss_fn, vector: dict[str, Tensor], product=hessian_vector_product
):
    v = {weights[n].param_name: t for n, t in vector.items()}
    return _at(weights, product(model, loss_fn, batches, v))


def grasp_scores(
    model,
    weights,
    batches,
    loss_fn,
    *,
    temperature=None,
    variant: SeedVariant = "original",
    reinit: bool = False,
    seed: int = 0,
):
    """θ ⊙ (Hg) at logits / T; ``variant="pai_code"``: −θ ⊙ (Hg) at T = 1, g over everything.

    GraSP's S = −θ ⊙ Hg removes the largest S, i.e. keeps the largest θ ⊙ Hg: the original
    paper and code (``pruner/GraSP.py``), which also divide the logits by T = 200 and take g,
    and the vector of the Hessian product, over the Conv2d/Linear weights only (classifier
    included): here, over the prunable weights, by default exactly those (zero elsewhere).
    The FTS/HTS repositories (``compressors.grasp_sensitivity``) keep the largest −θ ⊙ Hg
    instead, the opposite ranking, use no temperature, and take g and the product over every
    parameter with a gradient (biases, BatchNorm γ/β, the classifier they keep dense); Hg is
    then read off at the prunable weights. ``temperature=None`` takes the variant's own: 200
    for "original", 1 for "pai_code". Their normalisation by |Σ S| does not change the ranking
    and is left out.

    ``reinit=True`` is the GraSP entry point's default: a copy of the model has every
    ``nn.Linear`` weight redrawn Xavier-normal (reproducible from `seed`) and the copy is
    scored, its redrawn θ included; the model keeps its own weights. curvprune's default is
    False (the scores are those of the weights that are kept or pruned).
    """
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE if variant == "original" else 1.0
    if reinit:
        model, weights = _linear_redrawn(model, weights, seed)
    loss_fn = with_temperature(loss_fn, temperature)
    if variant == "original":
        g = _at(weights, loss_gradient(model, loss_fn, batches))
        hg = _restricted_hvp(model, weights, batches, loss_fn, g)
    else:
        g = loss_gradient(model, loss_fn, batches)
        hg = _at(weights, hessian_vector_product(model, loss_fn, batches, g))
    sign = 1 if variant == "original" else -1
    return {n: sign * t * hg[n] for n, t in _theta(weights).items()}


def _linear_redrawn(model, weights, seed: int):
    """A copy of `model` with every ``nn.Linear`` weight redrawn Xavier-normal, its weights."""
    clone = copy.deepcopy(model)
    gen = torch.Generator(device=next(clone.parameters()).device).manual_seed(int(seed))
    with torch.no_grad():
        for module in clone.modules():
            if isinstance(module, nn.Linear):
                target = getattr(module, "weight_orig", None)
                target = module.weight if target is None else target
                nn.init.xavier_normal_(target, generator=gen)
    return clone, prunable_weights(clone, list(weights))


def synflow_scores(model, weights, batches, loss_fn, *, variant: SeedVariant = "original"):
    """|θ| ⊙ ∂R/∂|θ|, R the summed output for one all-ones input, |parameters|, float64.

    Data-free: `batches` gives only the input shape. Runs the model functionally, in the
    scoring mode (eval by default, as SynFlow's ``prune_loop`` without ``train_mode``), with
    every parameter and floating buffer replaced by its absolute value in float64, so the
    model itself is untouched.

    `variant` leaves the scores unchanged and chooses `prune`'s schedule: "original" is
    SynFlow's exponential schedule of the kept fraction, "pai_code" the HTS repository's
    ``sparsity ** (t/k)`` applied to the pruned fraction ("exponential_pruned").
    """
    x, _ = first_batch(batches, model)
    if not isinstance(x, Tensor):
        raise InvalidArgument("synflow needs tensor inputs (it feeds the model an all-ones input)")
    params = {
        n: p.detach().abs().double().requires_grad_(n in _param_names(weights))
        for n, p in model.named_parameters()
    }
    buffers = {
        n: b.detach().abs().double() if b.is_floating_point() else b
        for n, b in model.named_buffers()
    }
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
    model,
    weights,
    batches,
    loss_fn,
    *,
    fisher_batch_size=1,
    chunk_size=None,
    max_memory=None,
    variant: Literal["original", "fts_v1"] = "original",
):
    """|θ ⊙ g + ½ θ² ⊙ F| (Fisher-Taylor Sensitivity); ``variant="fts_v1"``: F times B.

    F is the mean of squared gradients of the loss averaged over `fisher_batch_size` = B
    samples (the FTS codes' mask batch). The HTS repository's FTS (v2) uses F as it is; the FTS
    repository (v1, ``compressors.fd_taylor``) multiplies it by B, ``batch_size*fisher_diag``,
    a rescaling towards the per-sample Fisher. At B = 1 (both repositories' configs) the two
    are the same.
    """
    g = _at(weights, loss_gradient(model, loss_fn, batches))
    f = _fisher(model, weights, batches, loss_fn, fisher_batch_size, chunk_size, max_memory)
    scale = fisher_batch_size if variant == "fts_v1" else 1
    return {n: taylor_sensitivity(t, g[n], scale * f[n]) for n, t in _theta(weights).items()}


def _hutch(model, weights, batches, loss_fn, num_probes, seed, temperature):
    loss_fn = with_temperature(loss_fn, temperature)
    d, g = _hutchinson(
        model, loss_fn, batches, num_probes=num_probes, seed=seed, with_gradient=True
    )
    return _at(weights, d), _at(weights, g)


def hp_scores(
    model, weights, batches, loss_fn, *, num_probes=10, seed=0, temperature=DEFAULT_TEMPERATURE
):
    """½ θ² ⊙ D (Optimal Brain Damage with the Hutchinson diagonal), D of the loss of logits / T.

    T = 200 by default, as the HTS code; ``temperature=1`` is the plain loss.
    """
    d, _ = _hutch(model, weights, batches, loss_fn, num_probes, seed, temperature)
    return {n: obd(t, d[n]) for n, t in _theta(weights).items()}


def hts_scores(
    model, weights, batches, loss_fn, *, num_probes=10, seed=0, temperature=DEFAULT_TEMPERATURE
):
    """|θ ⊙ g + ½ θ² ⊙ D| (Hutchinson-Taylor Sensitivity), g and D both of logits / T.

    T = 200 by default, as the HTS code; ``temperature=1`` is the plain loss.
    """
    d, g = _hutch(model, weights, batches, loss_fn, num_probes, seed, temperature)
    return {n: taylor_sensitivity(t, g[n], d[n]) for n, t in _theta(weights).items()}


def _oba(theta, product, normalize, add_magnitude, *, eps=0.0, magnitude_scale=1.0):
    """|θ ⊙ product| / (its max per tensor + eps) + |θ| / magnitude_scale."""
    out = {}
    for n, t in theta.items():
        s = hessian_term(t, product[n]).abs()
        if normalize == "max" and s.max() + eps > 0:
            s = s / (s.max() + eps)
        out[n] = s + t.abs() / magnitude_scale if add_magnitude else s
    return out


def oba_scores(
    model,
    weights,
    batches,
    loss_fn,
    *,
    normalize: Literal["none", "max"] = "max",
    add_magnitude=True,
    variant: ObaVariant = "original",
    biases: bool | None = None,
):
    """|θ ⊙ ((H − G)θ)| / its max per tensor + |θ| (Optimal Brain Apoptosis).

    H − G is the network's own curvature Σ_k (∂L/∂f_k) ∇²f_k, with the output gradient held
    fixed (`curvprune.curvature.oba_curvature_product`): no Gauss-Newton part. The OBA paper
    sums (∂L/∂Y_l)ᵀ ∂²Y_l/∂θ_a∂θ_b over pairs of layers connected in series or in parallel,
    with no block within one layer. For networks that are piecewise linear in each layer
    (Linear/Conv, ReLU, max-pooling, BatchNorm in eval mode, residual sums) that is exactly
    θ ⊙ ((H − G)θ), since H − G has no intra-layer block there. Through attention softmax,
    GELU and LayerNorm the official code propagates tangents with its own jvp rules and still
    keeps only inter-layer pairs, while H − G here also contains those layers' own
    second-derivative terms. Its first-order term (``delta``) defaults to 0 and is left out.

    θ is the prunable tensors, zero elsewhere. ``variant="oba_code"`` takes the choices of the
    OBA code's unstructured pruner (``OBAPruner.unstructured_prune``): ``biases=True`` (the
    biases of the prunable layers join θ and the one threshold; the registry adds them to
    `weights`), the max normalizer's + 1e-6, and scoring in train mode (the registry's
    default `mode` for this variant). ``biases=None`` takes the variant's.
    """
    theta = _theta(weights)
    product = _restricted_hvp(model, weights, batches, loss_fn, theta, oba_curvature_product)
    eps = OBA_CODE_EPS if variant == "oba_code" else 0.0
    return _oba(theta, product, normalize, add_magnitude, eps=eps)


def oba_full_scores(
    model,
    weights,
    batches,
    loss_fn,
    *,
    normalize: Literal["none", "max"] = "max",
    add_magnitude=True,
    variant: ObaVariant = "original",
    biases: bool | None = None,
):
    """|θ ⊙ (Hθ)| / its max per tensor + |θ|, H the full Hessian.

    The OBA repository's fastOBA variant of order 2: all blocks, the Gauss-Newton part and the
    intra-layer blocks included; θ the prunable tensors, zero elsewhere.
    ``variant="oba_code"`` as ``FastOBAPruner.unstructured_prune``: θ is every trainable
    parameter (BatchNorm included) while the prunable tensors and, with ``biases`` (the
    variant's default), their layers' biases are scored; the magnitude term is |θ| / max|θ|
    over all parameters; train mode. The official code averages the biases' |θ ⊙ Hθ| over
    batches after the absolute value, this takes it of the mean: equal with one batch.
    """
    theta = _theta(weights)
    if variant != "oba_code":
        product = _restricted_hvp(model, weights, batches, loss_fn, theta)
        return _oba(theta, product, normalize, add_magnitude)
    everything = {n: p.detach() for n, p in trainable_parameters(model).items()}
    everything.update({w.param_name: theta[n] for n, w in weights.items()})
    product = _at(weights, hessian_vector_product(model, loss_fn, batches, everything))
    largest = max(t.abs().max() for t in everything.values())
    return _oba(theta, product, normalize, add_magnitude, magnitude_scale=largest)


def gradnorm_scores(model, weights, batches, loss_fn):
    """|g| (the FTS/HTS tables' GradNorm baseline), g = ∇L the mean gradient."""
    g = _at(weights, loss_gradient(model, loss_fn, batches))
    return {n: g[n].abs() for n in weights}


def fisher_diag_scores(
    model, weights, batches, loss_fn, *, fisher_batch_size=1, chunk_size=None, max_memory=None
):
    """F, the empirical Fisher diagonal itself (the FTS/HTS tables' Fisher Diagonal, FD)."""
    return _fisher(model, weights, batches, loss_fn, fisher_batch_size, chunk_size, max_memory)


def fbss_scores(
    model,
    weights,
    batches,
    loss_fn,
    *,
    dampening=FBSS_DAMPENING,
    fisher_batch_size=1,
    chunk_size=None,
    max_memory=None,
):
    """((F + λ)/2) (θ − g/(F + λ))² (Fisher Brain Surgeon Sensitivity, FTS paper).

    The diagonal OBS statistic with the gradient term. The FTS code has λ = 0 and divides by
    zero wherever F = 0 (weights that never get a gradient): its score is NaN there, which its
    top-k keeps before every number, so at high sparsity its kept set is made of exactly those
    weights. λ = `dampening` > 0 (default 1e-8) keeps the scores finite, ≈ (λ/2)θ² there, so
    they are pruned first. With
    ``fisher_batch_size=1`` F is the per-sample empirical Fisher, the FTS code's B·F̂ at B = 1.
    """
    g = _at(weights, loss_gradient(model, loss_fn, batches))
    f = _fisher(model, weights, batches, loss_fn, fisher_batch_size, chunk_size, max_memory)
    out = {}
    for n, t in _theta(weights).items():
        fd = f[n] + dampening
        out[n] = 0.5 * fd * (t - g[n] / fd) ** 2
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


def woodtaylor_blocks(model, weights, batches, loss_fn, *, woodtaylor_abs=False, **options):
    """WoodTaylor scores, with the blocks, diag(F⁻¹) and h = F⁻¹ḡ by weight name.

    ḡ is the mean of the same N gradients that make F (`mean_gradient`). The score is the
    official ``pruners/woodtaylorblock.py`` statistic of each tensor,
    ρ_q = ½ (θ_q − h_q)² / [F⁻¹]_qq − ½ ḡᵀF⁻¹ḡ (ḡᵀF⁻¹ḡ over the tensor's blocks), optionally
    its absolute value (``woodtaylor_abs``), minus its minimum over the tensor: a per-tensor
    shift, which changes a global ranking slightly. Other `options` are `woodtaylor_scores`'s
    but ``normalize_update``, which only the update reads (`curvprune.criteria.updates`).
    """
    names = [w.param_name for w in weights.values()]
    blocks = inverse_fisher_blocks(model, loss_fn, batches, names, **options)
    blocks = blocks.renamed({w.param_name: n for n, w in weights.items()})
    diag = blocks.diag()
    g = mean_gradient(blocks)
    h = blocks.solve(g)
    scores = {}
    for n, t in _theta(weights).items():
        stat = 0.5 * (t.to(torch.float64) - h[n]) ** 2 / diag[n] - 0.5 * (g[n] * h[n]).sum()
        if woodtaylor_abs:
            stat = stat.abs()
        scores[n] = (stat - stat.min()).to(t.dtype)
    return scores, blocks, diag, h


def woodtaylor_scores(
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
    woodtaylor_abs=False,
    normalize_update=None,
):
    """½ (θ_q − h_q)² / [F⁻¹]_qq − ½ḡᵀF⁻¹ḡ − min, h = F⁻¹ḡ (WoodTaylor, per tensor).

    F = λI + (1/N) Σ g gᵀ per block as in `woodfisher_scores`, ḡ the mean of the same N
    gradients; the constant and the minimum are taken per tensor, as the official code
    (`woodtaylor_blocks`). ``woodtaylor_abs``: rank by the statistic's absolute value before
    the minimum is subtracted (the official ``--woodtaylor-abs``). `prune` applies the update
    δθ = F⁻¹s − h, s_q = −(θ_q − h_q)/[F⁻¹]_qq on the newly pruned q
    (`curvprune.curvature.woodfisher.woodtaylor_update`); ``normalize_update=m`` scales a
    tensor's update whose norm exceeds its weights' norm ‖θ‖ down to m·‖θ‖ (the official
    ``--normalize-update --normalize-update-mult m``; off by default, as there).
    """
    return woodtaylor_blocks(
        model,
        weights,
        batches,
        loss_fn,
        woodtaylor_abs=woodtaylor_abs,
        dampening=dampening,
        block_size=block_size,
        num_grads=num_grads,
        fisher_batch_size=fisher_batch_size,
        chunk_size=chunk_size,
        max_memory=max_memory,
    )[0]
