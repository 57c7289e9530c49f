"""Hessian-vector products and the Hutchinson estimate of the Hessian diagonal.

H is the Hessian of L, the mean per-sample loss over all batches, with respect to the
trainable parameters. Products are exact: double backward through each batch, weighted by the
batch's share of the samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from curvprune._core import distributed
from curvprune._core.batches import iter_batches
from curvprune._core.params import check_param_dict, trainable_parameters
from curvprune._core.state import preserved
from curvprune.curvature.gradient import LossFn, batch_loss, default_loss
from curvprune.errors import InvalidArgument


def _hvp_pass(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable,
    vectors,
    *,
    with_gradient: bool = False,
):
    """One pass over the data: Σ_batches (B/N)·H_b v for every v produced by `vectors`.

    `vectors(params)` is called once per batch and returns a list of dicts (the same vectors
    for every batch). Returns the list of products and, if asked, the gradient ∇L.
    """
    params = trainable_parameters(model)
    plist = list(params.values())
    products = None
    grad_total = {n: torch.zeros_like(p) for n, p in params.items()} if with_gradient else None
    count = 0
    with preserved(model):
        for x, y in iter_batches(batches, model):
            b = x.shape[0]
            loss = batch_loss(model, loss_fn, x, y)
            grads = torch.autograd.grad(loss, plist, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(plist, grads)]
            vs = vectors(params)
            if products is None:
                products = [{n: torch.zeros_like(p) for n, p in params.items()} for _ in vs]
            for k, hv in _batched_hvps(grads, plist, list(params), vs):
                for n, h in hv.items():
                    products[k][n].add_(h, alpha=b)
            if with_gradient:
                for (n, _), g in zip(params.items(), grads):
                    grad_total[n].add_(g.detach(), alpha=b)
            count += b
    if products is None:  # no local batch: this rank contributes zeros
        vs = vectors(params)
        products = [{n: torch.zeros_like(p) for n, p in params.items()} for _ in vs]
    if with_gradient:
        *products, grad = distributed.mean_over_samples(count, *products, grad_total)
        return products, grad
    return distributed.mean_over_samples(count, *products)


# probes per vmapped backward pass: more is faster until memory runs out
_PROBE_GROUP = 16


def _batched_hvps(grads, plist, names, vs):
    """Yield (k, H_b v_k) for every vector, `_PROBE_GROUP` vectors per backward pass.

    One backward of the gradient with a batch of cotangents (``is_grads_batched``, a vmap
    over the backward) replaces a Python loop of backward passes.
    """
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if not live:  # the loss is linear in every parameter: H = 0
        return
    for start in range(0, len(vs), _PROBE_GROUP):
        group = vs[start : start + _PROBE_GROUP]
        cotangents = [
            torch.stack([v.get(names[i], torch.zeros_like(plist[i])) for v in group]) for i in live
        ]
        batched = len(group) > 1
        hv = torch.autograd.grad(
            [grads[i] for i in live],
            plist,
            grad_outputs=cotangents if batched else [c[0] for c in cotangents],
            retain_graph=start + _PROBE_GROUP < len(vs),
            allow_unused=True,
            is_grads_batched=batched,
        )
        for j in range(len(group)):
            yield (
                start + j,
                {n: (h[j] if batched else h).detach() for n, h in zip(names, hv) if h is not None},
            )


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable,
    vector: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """Exact H·v for every trainable parameter.

    Args:
        model: the network; its parameters, modes and buffers are left unchanged.
        loss_fn: batch-mean loss ``loss_fn(outputs, targets)``; None for cross-entropy.
        batches: iterable of ``(inputs, targets)``.
        vector: dict keyed by ``named_parameters()`` names; missing parameters count as zero.

    Returns:
        dict with one tensor per trainable parameter, shaped like it.
    """
    v = check_param_dict(vector, model, "vector")
    v = {n: t.detach() for n, t in v.items()}
    return _hvp_pass(model, default_loss(loss_fn), batches, lambda params: [v])[0]


def rademacher_probes(
    params: Mapping[str, Tensor], num_probes: int, seed: int
) -> list[dict[str, Tensor]]:
    """`num_probes` Rademacher vectors (entries ±1), reproducible from `seed` alone.

    Drawn on the CPU in float64 order of ``named_parameters()``, so the probes do not depend on
    the device or dtype.
    """
    gen = torch.Generator().manual_seed(seed)
    probes = []
    for _ in range(num_probes):
        z = {}
        for n, p in params.items():
            bits = torch.randint(0, 2, p.shape, generator=gen, dtype=torch.int8)
            z[n] = (bits.to(p.dtype) * 2 - 1).to(p.device)
        probes.append(z)
    return probes


def hutchinson_diag(
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable,
    *,
    num_probes: int = 10,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Hutchinson's unbiased estimate of diag(H): mean over probes z of z ⊙ (H z).

    z has independent Rademacher entries, so E[z ⊙ Hz] = diag(H); the error falls as
    1/sqrt(num_probes). The same `seed` gives the same probes and the same result.
    """
    return _hutchinson(model, loss_fn, batches, num_probes=num_probes, seed=seed)[0]


def _hutchinson(model, loss_fn, batches, *, num_probes, seed, with_gradient=False):
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise InvalidArgument(f"num_probes must be a positive integer, got {num_probes!r}")
    probes: list = []

    def vectors(params):
        if not probes:
            probes.extend(rademacher_probes(params, num_probes, seed))
        return probes

    out = _hvp_pass(model, default_loss(loss_fn), batches, vectors, with_gradient=with_gradient)
    products, grad = out if with_gradient else (out, None)
    diag = {
        n: sum(z[n] * hz[n] for z, hz in zip(probes, products)) / num_probes for n in products[0]
    }
    return diag, grad
