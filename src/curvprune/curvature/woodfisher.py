"""Block-diagonal inverse empirical Fisher (WoodFisher) and the Optimal-Brain-Surgeon update.

Per block of at most `block_size` consecutive weights of one tensor (blocks never span two
tensors), with A the N×d matrix of the block's gradients divided by sqrt(N),

    F = λI + AᵀA = λI + (1/N) Σ_n g_n g_nᵀ,
    F⁻¹ = (1/λ) [I − Aᵀ (λI_N + AAᵀ)⁻¹ A]        (Woodbury identity).

When N < d this needs one N×N Cholesky factorization per block, batched over the blocks of a
tensor, instead of N sequential rank-1 updates of a d×d matrix; when d ≤ N the d×d block is
factorized directly (whichever needs fewer flops). No dense matrix larger than max(N, d)² per
block is formed, and the linear algebra runs in float64 because diag(F⁻¹) is a small difference
of two numbers near 1/λ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from curvprune._core import distributed
from curvprune._core.memory import available_memory, parse_memory
from curvprune._core.state import preserved
from curvprune.curvature.gradient import LossFn, default_loss
from curvprune.curvature.per_sample import chunk_gradients
from curvprune.errors import InvalidArgument

DEFAULT_DAMPENING = 1e-5
DEFAULT_BLOCK_SIZE = 2000
# float64 bytes of per-block work matrices processed at once
_WORK_BYTES = 256 * 2**20
# factors kept between `diag` and `solve` (the OBS update), so the update costs no refactoring
_CACHE_BYTES = 2 * 2**30


@dataclass
class InverseFisherBlocks:
    """F⁻¹ for some tensors, block-diagonal; holds the gradients, factorizes on demand.

    Attributes:
        grads: ``{name: (N, numel)}`` gradients (one row per chunk of samples).
        shapes: ``{name: shape}`` of each tensor.
        dampening: λ.
        block_size: weights per block.
    """

    grads: dict[str, Tensor]
    shapes: dict[str, torch.Size]
    dampening: float
    block_size: int
    # Cholesky factors from `diag`, reused by `solve` while they fit `_CACHE_BYTES`
    _cache: dict = field(default_factory=dict, repr=False)
    _cached_bytes: int = field(default=0, repr=False)

    def renamed(self, names: Mapping[str, str]) -> InverseFisherBlocks:
        """The same blocks under new tensor names (old -> new), cached factors included."""
        return InverseFisherBlocks(
            grads={names[n]: g for n, g in self.grads.items()},
            shapes={names[n]: s for n, s in self.shapes.items()},
            dampening=self.dampening,
            block_size=self.block_size,
            _cache={(names[n], start): f for (n, start), f in self._cache.items()},
            _cached_bytes=self._cached_bytes,
        )

    @property
    def num_grads(self) -> int:
        """N, the number of gradients in the Fisher."""
        return next(iter(self.grads.values())).shape[0]

    def _blocks(self, name: str):
        """Yield (start, stop, A) with A = (nb, N, d) float64 for runs of equal-size blocks."""
        g = self.grads[name]
        n, numel = g.shape
        d = self.block_size
        full = numel // d
        scale = 1.0 / n**0.5
        per_group = max(1, _WORK_BYTES // (8 * max(n, d) ** 2))
        for first in range(0, full, per_group):
            last = min(full, first + per_group)
            a = g[:, first * d : last * d].to(torch.float64) * scale
            yield first * d, last * d, a.reshape(n, last - first, d).transpose(0, 1)
        if numel > full * d:
            a = g[:, full * d :].to(torch.float64) * scale
            yield full * d, numel, a.unsqueeze(0)

    def _factor(self, name: str, start: int, a: Tensor) -> tuple[str, Tensor]:
        """('woodbury', chol of λI_N + AAᵀ) or ('dense', chol of λI_d + AᵀA), cheaper first.

        Woodbury costs about 3N²d + N³/3 flops per block (Gram, factor, one triangular solve
        for the diagonal), the dense block N·d² + 2d³/3.
        """
        if (name, start) in self._cache:
            return self._cache[name, start]
        lam = self.dampening
        _, n, d = a.shape
        if 3 * n * n * d + n**3 / 3 < n * d * d + 2 * d**3 / 3:
            k = a @ a.transpose(1, 2)
            k.diagonal(dim1=1, dim2=2).add_(lam)
            factor = "woodbury", torch.linalg.cholesky(k)
        else:
            f = a.transpose(1, 2) @ a
            f.diagonal(dim1=1, dim2=2).add_(lam)
            factor = "dense", torch.linalg.cholesky(f)
        size = factor[1].numel() * 8
        if self._cached_bytes + size <= _CACHE_BYTES:
            self._cache[name, start] = factor
            self._cached_bytes += size
        return factor

    def diag(self) -> dict[str, Tensor]:
        """The diagonal of F⁻¹ per tensor, shaped like the tensor (float64).

        Woodbury: [F⁻¹]_qq = (1 − ‖L⁻¹a_q‖²)/λ with LLᵀ = λI + AAᵀ and a_q the q-th column of
        A; dense: [F⁻¹]_qq = ‖(L⁻¹)_{:,q}‖² with LLᵀ = F.
        """
        lam = self.dampening
        out = {}
        for name, shape in self.shapes.items():
            parts = []
            for start, _, a in self._blocks(name):
                kind, chol = self._factor(name, start, a)
                if kind == "woodbury":
                    w = torch.linalg.solve_triangular(chol, a, upper=False)
                    parts.append(((1.0 - (w * w).sum(1)) / lam).reshape(-1))
                else:
                    eye = torch.eye(chol.shape[-1], dtype=chol.dtype).expand_as(chol)
                    linv = torch.linalg.solve_triangular(chol, eye, upper=False)
                    parts.append((linv * linv).sum(1).reshape(-1))
            out[name] = torch.cat(parts).reshape(shape)
        return out

    def solve(self, u: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """F⁻¹u per tensor (float64), u keyed like `shapes`."""
        lam = self.dampening
        out = {}
        for name, shape in self.shapes.items():
            flat = u[name].reshape(-1).to(torch.float64)
            parts = []
            for start, stop, a in self._blocks(name):
                nb, _, d = a.shape
                ub = flat[start:stop].reshape(nb, d, 1)
                kind, chol = self._factor(name, start, a)
                if kind == "woodbury":
                    r = torch.cholesky_solve(a @ ub, chol)
                    parts.append(((ub - a.transpose(1, 2) @ r) / lam).reshape(-1))
                else:
                    parts.append(torch.cholesky_solve(ub, chol).reshape(-1))
            out[name] = torch.cat(parts).reshape(shape)
        return out


def _check_positive(name: str, value, kind=float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok or value != value:
        raise InvalidArgument(f"{name} must be a positive {kind.__name__}, got {value!r}")


def _gradient_bytes(num_grads: int, weights: int) -> int:
    """Stored gradients (float32) plus one block's float64 work matrix."""
    return num_grads * weights * 4 + 8 * min(num_grads, DEFAULT_BLOCK_SIZE) ** 2


def _refuse(need: int, budget: int, num_grads: int, weights: int) -> None:
    if need > budget:
        raise InvalidArgument(
            f"WoodFisher needs about {need / 2**30:.1f} GiB for {num_grads} gradients of "
            f"{weights:,} weights, more than the {budget / 2**30:.1f} GiB budget; lower "
            "num_grads, prune fewer tensors per call (prunable=...), or raise max_memory"
        )


def _expected_grads(batches, num_grads: int | None, fisher_batch_size: int) -> int | None:
    """Gradients the call will hold on every rank (all ranks' together), if knowable upfront."""
    if num_grads is not None:
        return num_grads
    if not isinstance(batches, (list, tuple)):
        return None  # a stream: checked as the gradients arrive
    samples = distributed.sum_count(sum(len(b[1]) for b in batches))  # targets: dict inputs
    return -(-samples // fisher_batch_size)


def inverse_fisher_blocks(
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable,
    names: list[str],
    *,
    dampening: float = DEFAULT_DAMPENING,
    block_size: int = DEFAULT_BLOCK_SIZE,
    num_grads: int | None = None,
    fisher_batch_size: int = 1,
    chunk_size: int | None = None,
    max_memory: int | str | None = None,
) -> InverseFisherBlocks:
    """Collect N gradients of the parameters `names` and return their block inverse Fisher.

    Args:
        names: parameter names (``named_parameters()``); gradients of pruned ``*_orig``
            parameters are masked, so pruned weights stay out of the Fisher.
        dampening: λ > 0 added to the diagonal.
        block_size: weights per block; a tensor's last block may be smaller.
        num_grads: N, the number of gradients (default: all that `batches` yields).
        fisher_batch_size: samples averaged into each gradient.
        chunk_size: at most this many samples per forward/backward pass.
        max_memory: memory budget (bytes or "8GiB"); chooses `chunk_size` if not given, and the
            stored gradients (N × weights × 4 bytes) must fit it, else an error gives the
            estimate. Default: the memory available now.
    """
    _check_positive("dampening", dampening)
    _check_positive("block_size", block_size, int)
    if num_grads is not None:
        _check_positive("num_grads", num_grads, int)
    loss_fn = default_loss(loss_fn)
    params = dict(model.named_parameters())
    weights = sum(params[n].numel() for n in names)
    budget = available_memory() if max_memory is None else parse_memory(max_memory)
    expected = _expected_grads(batches, num_grads, fisher_batch_size)
    if expected is not None:
        _refuse(_gradient_bytes(expected, weights), budget, expected, weights)
    collected: dict[str, list[Tensor]] = {n: [] for n in names}
    have = 0
    with preserved(model):
        for grads, count in chunk_gradients(
            model,
            loss_fn,
            batches,
            names,
            fisher_batch_size,
            square=False,
            chunk_size=chunk_size,
            max_memory=max_memory,
        ):
            take = count if num_grads is None else min(count, num_grads - have)
            for n in names:
                collected[n].append(grads[n][:take].detach().reshape(take, -1))
            have += take
            # every rank ends up holding all ranks' gradients
            _refuse(
                _gradient_bytes(have * distributed.world_size(), weights), budget, have, weights
            )
            if num_grads is not None and have >= num_grads:
                break
    grads = {
        n: torch.cat(v) if v else params[n].new_zeros((0, params[n].numel()))
        for n, v in collected.items()
    }
    if distributed.world_size() > 1:  # every rank gets all gradients, in rank order
        grads = {n: distributed.gather_rows(g) for n, g in grads.items()}
        have = next(iter(grads.values())).shape[0]
        if num_grads is not None:
            grads = {n: g[:num_grads] for n, g in grads.items()}
            have = min(have, num_grads)
    if have == 0:
        raise InvalidArgument("batches is empty: pass at least one (inputs, targets) batch")
    if num_grads is not None and have < num_grads:
        raise InvalidArgument(
            f"num_grads={num_grads} but batches yield only {have} gradients "
            f"(fisher_batch_size={fisher_batch_size}); pass more data or a smaller num_grads"
        )
    return InverseFisherBlocks(
        grads=grads,
        shapes={n: params[n].shape for n in names},
        dampening=float(dampening),
        block_size=int(block_size),
    )


def obs_update(
    blocks: InverseFisherBlocks,
    theta: Mapping[str, Tensor],
    keep: Mapping[str, Tensor],
    diag: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The WoodFisher weight update δθ = −F⁻¹ Σ_q e_q θ_q / [F⁻¹]_qq over the pruned q.

    Args:
        blocks: the inverse Fisher.
        theta: current weights per tensor.
        keep: bool masks per tensor, False where the weight is pruned.
        diag: diag(F⁻¹) if already computed (saves one factorization per block).

    Returns:
        δθ per tensor, in the weights' dtype; add it, then apply the mask.
    """
    diag = blocks.diag() if diag is None else diag
    u = {n: torch.where(keep[n], 0.0, theta[n].to(torch.float64) / diag[n]) for n in blocks.shapes}
    step = blocks.solve(u)
    return {n: (-step[n]).to(theta[n].dtype) for n in blocks.shapes}


def mean_gradient(blocks: InverseFisherBlocks) -> dict[str, Tensor]:
    """ḡ = (1/N) Σ_n g_n per tensor (float64), the mean of the N gradients that make F."""
    return {
        n: g.to(torch.float64).mean(0).reshape(blocks.shapes[n]) for n, g in blocks.grads.items()
    }


def woodtaylor_update(
    blocks: InverseFisherBlocks,
    theta: Mapping[str, Tensor],
    keep: Mapping[str, Tensor],
    diag: Mapping[str, Tensor] | None = None,
    h: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The WoodTaylor weight update δθ = F⁻¹s − h over the pruned q (WoodFisher paper, §1.6).

    h = F⁻¹ḡ and s_q = −(θ_q − h_q)/[F⁻¹]_qq where the weight is pruned, 0 elsewhere: the
    single-weight solution of min ḡᵀδ + ½δᵀFδ subject to (θ + δ)_q = 0, summed over q under
    WoodFisher's independence assumption (for one q it zeroes θ_q exactly). −h, a Newton step
    with F, moves every weight of the blocks, kept or not.

    Args:
        blocks: the inverse Fisher (its gradients give ḡ).
        theta: current weights per tensor.
        keep: bool masks per tensor, False where the weight is pruned.
        diag: diag(F⁻¹) if already computed.
        h: F⁻¹ḡ if already computed.

    Returns:
        δθ per tensor, in the weights' dtype; add it, then apply the mask.
    """
    diag = blocks.diag() if diag is None else diag
    h = blocks.solve(mean_gradient(blocks)) if h is None else h
    s = {
        n: torch.where(keep[n], 0.0, -(theta[n].to(torch.float64) - h[n]) / diag[n])
        for n in blocks.shapes
    }
    step = blocks.solve(s)
    return {n: (step[n] - h[n]).to(theta[n].dtype) for n in blocks.shapes}
