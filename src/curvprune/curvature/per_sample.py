"""Per-chunk gradients: the gradient of the loss averaged over each chunk of consecutive samples.

One ordinary forward and backward pass per batch records, for every layer with a handler below,
its input x and the gradient δ of the batch loss with respect to its output. Per-sample
gradients then follow in closed form, batched over samples:

- Linear: g_n = δ_nᵀ x_n (summed over any token dimensions); Σ_n g_n⊙g_n = (δ⊙δ)ᵀ(x⊙x)
  needs one matmul when there are no token dimensions;
- Conv1d/2d/3d: g_n = the weight-gradient convolution of x_n with δ_n, vmapped over samples;
- BatchNorm in eval mode and LayerNorm: g_n = Σ δ_n ⊙ x̂_n, bias Σ δ_n.

Parameters of any other layer (and of a handled layer whose gradient the closed form does not
reproduce, say because its weight is also used outside its forward) are differentiated per
chunk with `torch.func.vmap`, or, for models whose forward vmap cannot run (transformers'
attention masks branch on tensor values), with one autograd pass per chunk. The closed forms
are checked once per call against autograd on a few samples; a layer that fails the check
moves to the vmap path.

Models whose BatchNorm layers use batch statistics (train mode) mix samples: per-sample
gradients are undefined there, and chunks of several samples are run one by one, each with its
own batch statistics.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap

from curvprune._core.batches import iter_batches, rechunk
from curvprune._core.checks import positive_int
from curvprune._core.inputs import functional_forward, num_samples, split_chunks, take
from curvprune._core.memory import auto_chunk_size, parse_memory
from curvprune.curvature.gradient import LossFn, batch_loss
from curvprune.errors import InvalidArgument

# (samples in the piece, samples per chunk): a batch splits into at most two pieces, the full
# chunks and the final short chunk of the stream.
Piece = tuple[slice, int]


def mixes_samples(model: nn.Module) -> list[str]:
    """Names of BatchNorm layers that normalize with batch statistics (and so mix samples)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
    ]


# ---- closed forms, one per layer type -------------------------------------------------------
# Each takes the module, the recorded (input, output-gradient) of one call scaled to per-sample
# loss gradients, and the pieces; it returns per-chunk gradients {attr: (C, *param.shape)}.


def _chunk_sum(t: Tensor, pieces: list[Piece]) -> Tensor:
    """Average dim 0 (samples) within each chunk: (B, ...) -> (C, ...)."""
    out = []
    for sl, s in pieces:
        p = t[sl]
        out.append(p.reshape(p.shape[0] // s, s, *p.shape[1:]).mean(1))
    return torch.cat(out)


def _linear(module: nn.Linear, x: Tensor, d: Tensor, pieces: list[Piece]) -> dict[str, Tensor]:
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    d = d.reshape(d.shape[0], -1, d.shape[-1])
    out = {}
    gw = []
    for sl, s in pieces:
        xs, ds = x[sl], d[sl]
        c = xs.shape[0] // s
        xs = xs.reshape(c, -1, xs.shape[-1])
        ds = ds.reshape(c, -1, ds.shape[-1])
        gw.append(torch.bmm(ds.transpose(1, 2), xs) / s)
    out["weight"] = torch.cat(gw)
    if module.bias is not None:
        out["bias"] = _chunk_sum(d.sum(1), pieces)
    return out


def _linear_square(module: nn.Linear, x: Tensor, d: Tensor) -> dict[str, Tensor]:
    """Σ_n g_n⊙g_n for single samples without token dimensions: one matmul."""
    out = {"weight": (d * d).T @ (x * x)}
    if module.bias is not None:
        out["bias"] = (d * d).sum(0)
    return out


_CONV_WEIGHT_GRAD = {
    1: torch.nn.grad.conv1d_weight,
    2: torch.nn.grad.conv2d_weight,
    3: torch.nn.grad.conv3d_weight,
}


def _conv(module: nn.Module, x: Tensor, d: Tensor, pieces: list[Piece]) -> dict[str, Tensor]:
    """g_c = Σ_{n∈c} ∂ℓ_n/∂W / |c| via `vmap` over chunks of the weight-gradient convolution.

    PyTorch batches ``convolution_backward`` as one grouped convolution, so per-chunk weight
    gradients cost about what the ordinary weight gradient costs (unfold + bmm is 2-3x slower
    on CPU).
    """
    padding = module.padding
    if isinstance(padding, str) or module.padding_mode != "zeros":
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    weight_grad = _CONV_WEIGHT_GRAD[x.dim() - 2]
    shape = module.weight.shape

    def chunk_grad(xc: Tensor, dc: Tensor) -> Tensor:
        return weight_grad(xc, shape, dc, module.stride, padding, module.dilation, module.groups)

    gw = []
    for sl, s in pieces:
        xs, ds = x[sl], d[sl]
        c = xs.shape[0] // s
        g = vmap(chunk_grad)(xs.reshape(c, s, *xs.shape[1:]), ds.reshape(c, s, *ds.shape[1:]))
        gw.append(g / s)
    out = {"weight": torch.cat(gw)}
    if module.bias is not None:
        out["bias"] = _chunk_sum(d.sum(tuple(range(2, d.dim()))), pieces)
    return out


def _batchnorm(module: nn.Module, x: Tensor, d: Tensor, pieces: list[Piece]) -> dict[str, Tensor]:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    xhat = (x - module.running_mean.view(shape)) / torch.sqrt(
        module.running_var.view(shape) + module.eps
    )
    dims = tuple(range(2, x.dim()))
    out = {}
    if module.weight is not None:
        out["weight"] = _chunk_sum((d * xhat).sum(dims) if dims else d * xhat, pieces)
    if module.bias is not None:
        out["bias"] = _chunk_sum(d.sum(dims) if dims else d, pieces)
    return out


def _layernorm(
    module: nn.LayerNorm, x: Tensor, d: Tensor, pieces: list[Piece]
) -> dict[str, Tensor]:
    k = len(module.normalized_shape)
    dims = tuple(range(x.dim() - k, x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, keepdim=True, unbiased=False)
    xhat = (x - mean) / torch.sqrt(var + module.eps)
    lead = tuple(range(1, x.dim() - k))
    out = {}
    if module.weight is not None:
        gw = d * xhat
        out["weight"] = _chunk_sum(gw.sum(lead) if lead else gw, pieces)
    if getattr(module, "bias", None) is not None:
        out["bias"] = _chunk_sum(d.sum(lead) if lead else d, pieces)
    return out


def _eval_batchnorm(module: nn.Module) -> bool:
    return not module.training and module.running_mean is not None


# The registry: layer type -> (closed form, condition under which it applies).
HANDLERS: dict[type, tuple[Callable, Callable[[nn.Module], bool]]] = {
    nn.Linear: (_linear, lambda m: True),
    nn.Conv1d: (_conv, lambda m: True),
    nn.Conv2d: (_conv, lambda m: True),
    nn.Conv3d: (_conv, lambda m: True),
    nn.BatchNorm1d: (_batchnorm, _eval_batchnorm),
    nn.BatchNorm2d: (_batchnorm, _eval_batchnorm),
    nn.BatchNorm3d: (_batchnorm, _eval_batchnorm),
    nn.LayerNorm: (_layernorm, lambda m: True),
}


def _handler(module: nn.Module) -> Callable | None:
    for cls in type(module).__mro__:
        if cls in HANDLERS:
            fn, applies = HANDLERS[cls]
            return fn if applies(module) else None
    return None


# ---- which parameter is computed how ---------------------------------------------------------


class _Plan:
    """Maps requested parameter names to (module, attr, mask) for closed forms, or to vmap."""

    def __init__(self, model: nn.Module, names: Iterable[str]):
        wanted = set(names)
        self.closed: dict[str, tuple[nn.Module, str, Tensor | None]] = {}
        owners: dict[int, int] = {}
        for module in model.modules():
            for p in module.parameters(recurse=False):
                owners[id(p)] = owners.get(id(p), 0) + 1
        for mod_name, module in model.named_modules():
            if _handler(module) is None:
                continue
            for p_name, p in module.named_parameters(recurse=False):
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                if full not in wanted or owners[id(p)] > 1:
                    continue
                attr, mask = p_name, None
                if p_name.endswith("_orig") and hasattr(module, p_name[:-5] + "_mask"):
                    attr = p_name[:-5]
                    mask = getattr(module, attr + "_mask")
                if attr in ("weight", "bias"):
                    self.closed[full] = (module, attr, mask)
        self.vmapped = [n for n in names if n not in self.closed]

    def modules(self) -> list[nn.Module]:
        seen: dict[int, nn.Module] = {}
        for module, _, _ in self.closed.values():
            seen[id(module)] = module
        return list(seen.values())

    def demote(self, names: Iterable[str]) -> None:
        for n in names:
            if n in self.closed:
                del self.closed[n]
                self.vmapped.append(n)


class _Recorder:
    """Forward hooks that keep each call's input and the gradient of its output."""

    def __init__(self, modules: list[nn.Module]):
        self.calls: dict[int, list[list]] = {id(m): [] for m in modules}
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module, inputs, output):
        record = [inputs[0].detach(), None, inputs[0]._version]
        self.calls[id(module)].append(record)
        if output.requires_grad:
            output.register_hook(lambda g: record.__setitem__(1, g))

    def close(self):
        for h in self.handles:
            h.remove()


def _closed_form_chunks(plan, recorder, batch_size, pieces, square: bool):
    """Per-chunk gradients (or their squares summed over chunks) of the closed-form params."""
    per_module: dict[int, dict[str, Tensor]] = {}
    for module in plan.modules():
        calls = recorder.calls[id(module)]
        total: dict[str, Tensor] = {}
        fast = square and isinstance(module, nn.Linear) and len(calls) == 1
        fast = fast and calls[0][0].dim() == 2 and all(s == 1 for _, s in pieces)
        for x, d, version in calls:
            if d is None:  # output did not reach the loss
                continue
            if x._version != version:
                raise RuntimeError(
                    f"the input of {module.__class__.__name__} was modified in place after use; "
                    "per-sample gradients need it intact (use inplace=False)"
                )
            d = d * batch_size  # δ of the batch mean -> δ of each sample's own loss
            if fast:
                part = _linear_square(module, x, d)
            else:
                part = _handler(module)(module, x, d, pieces)
            for attr, t in part.items():
                total[attr] = total[attr] + t if attr in total else t
        if square and not fast:
            total = {a: (t * t).sum(0) for a, t in total.items()}
        per_module[id(module)] = total
    out = {}
    for name, (module, attr, mask) in plan.closed.items():
        t = per_module[id(module)].get(attr)
        if t is None:  # the layer never reached the loss: zero gradient
            p = getattr(module, attr + ("_orig" if mask is not None else ""))
            t = torch.zeros_like(p) if square else p.new_zeros((_num_chunks(pieces), *p.shape))
        if mask is not None:
            t = t * mask  # the gradient of weight_orig: pruned entries get none
        out[name] = t
    return out


def _num_chunks(pieces: list[Piece]) -> int:
    return sum((sl.stop - sl.start) // s for sl, s in pieces)


def _vmap_chunks(model, loss_fn, x, y, names, pieces, square):
    """Per-chunk gradients of `names` via torch.func, in slices to bound memory."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    sub = {n: params[n] for n in names}

    def chunk_loss(p, xc, yc):
        out = functional_forward(model, {**params, **buffers, **p}, xc)
        return loss_fn(out, yc)

    per_chunk = vmap(grad(chunk_loss), in_dims=(None, 0, 0), randomness="different")
    collected: dict[str, list[Tensor]] = {n: [] for n in names}
    for sl, s in pieces:
        xs, ys = take(x, sl.start, sl.stop), y[sl]
        c = ys.shape[0] // s
        xs = split_chunks(xs, c, s)
        ys = ys.reshape(c, s, *ys.shape[1:])
        step = max(1, 4096 // max(1, s))
        for i in range(0, c, step):
            g = per_chunk(sub, take(xs, i, i + step), ys[i : i + step])
            for n in names:
                collected[n].append((g[n] * g[n]).sum(0) if square else g[n])
    if square:
        return {n: torch.stack(v).sum(0) for n, v in collected.items()}
    return {n: torch.cat(v) for n, v in collected.items()}


def _loop_chunks(model, loss_fn, x, y, names, pieces, square):
    """Per-chunk gradients of `names` by one autograd pass per chunk (what vmap cannot run)."""
    params = dict(model.named_parameters())
    plist = [params[n] for n in names]
    collected: dict[str, list[Tensor]] = {n: [] for n in names}
    for sl, s in pieces:
        for start in range(sl.start, sl.stop, s):
            loss = batch_loss(model, loss_fn, take(x, start, start + s), y[start : start + s])
            grads = torch.autograd.grad(loss, plist, allow_unused=True)
            for n, p, g in zip(names, plist, grads):
                g = torch.zeros_like(p) if g is None else g
                collected[n].append(g * g if square else g)
    if square:
        return {n: torch.stack(v).sum(0) for n, v in collected.items()}
    return {n: torch.stack(v) for n, v in collected.items()}


# models whose forward vmap cannot run (data-dependent control flow, .item(), ...): their
# parameters without a closed form are differentiated chunk by chunk
_NO_VMAP: weakref.WeakSet = weakref.WeakSet()


def _other_chunks(model, loss_fn, x, y, names, pieces, square):
    """Per-chunk gradients of the parameters without a closed form: vmap, else a loop."""
    if model not in _NO_VMAP:
        try:
            return _vmap_chunks(model, loss_fn, x, y, names, pieces, square)
        except RuntimeError as err:
            if "vmap" not in str(err):
                raise
            _NO_VMAP.add(model)  # e.g. transformers' attention masks branch on tensor values
    return _loop_chunks(model, loss_fn, x, y, names, pieces, square)


def _backward_for_deltas(loss: Tensor, x: Tensor, params: list[Tensor], retain: bool = False):
    """Run the backward pass that fills the recorded output gradients δ.

    With a floating input, differentiating with respect to the input alone computes every
    layer's δ but none of the weight gradients, which the closed forms replace.
    """
    targets = [x] if isinstance(x, Tensor) and x.requires_grad else params
    torch.autograd.grad(loss, targets, allow_unused=True, retain_graph=retain)


def _input(x):
    """`x` as a leaf that requires grad when it is a floating tensor (`_backward_for_deltas`)."""
    return x.detach().requires_grad_(True) if isinstance(x, Tensor) and x.is_floating_point() else x


# model -> {requested names: names that failed verification}; the verdict is a property of the
# architecture, so each model pays for the check once
_VERDICTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _verify(model, loss_fn, plan, x, y) -> None:
    """Move closed-form params whose per-sample sum disagrees with autograd to vmap.

    Catches weights also used outside their layer's forward, layers the input-only backward
    does not reach, and subclasses whose forward differs from their base class.
    """
    if not plan.closed:
        return
    verdicts = _VERDICTS.setdefault(model, {})
    key = tuple(plan.closed)
    if key in verdicts:
        plan.demote(verdicts[key])
        return
    k = min(4, num_samples(x))
    xs, ys = _input(take(x, 0, k)), y[:k]
    names = list(plan.closed)
    params = dict(model.named_parameters())
    plist = [params[n] for n in names]
    recorder = _Recorder(plan.modules())
    try:
        loss = batch_loss(model, loss_fn, xs, ys)
        _backward_for_deltas(loss, xs, plist, retain=True)
        per_chunk = _closed_form_chunks(plan, recorder, k, [(slice(0, k), 1)], square=False)
    finally:
        recorder.close()
    auto = torch.autograd.grad(loss, plist, allow_unused=True)
    bad = []
    for n, a in zip(names, auto):
        mean = per_chunk[n].mean(0)
        a = torch.zeros_like(mean) if a is None else a
        scale = per_chunk[n].abs().amax() + a.abs().amax()
        tol = (1e-9 if a.dtype == torch.float64 else 1e-4) * (scale + 1e-12)
        if (mean - a).abs().amax() > tol:
            bad.append(n)
    verdicts[key] = bad
    plan.demote(bad)


def chunk_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable,
    names: list[str],
    chunk: int,
    *,
    square: bool,
    chunk_size: int | None = None,
    max_memory: int | str | None = None,
) -> Iterator[tuple[dict[str, Tensor], int]]:
    """Per batch: gradients of the mean loss over each chunk of `chunk` consecutive samples.

    Yields ``(result, num_chunks)``; with ``square=False`` the result holds (C, *shape) tensors
    of per-chunk gradients, with ``square=True`` their squares summed over the C chunks.
    Chunks run across the user's batch boundaries; only the stream's last chunk may be short.
    Gradients of ``<module>.weight_orig`` (pruned with torch.nn.utils.prune) are masked.

    `chunk_size` caps the samples per forward/backward pass (rounded down to whole chunks);
    without it, `max_memory` (bytes or a size string) chooses it from an estimate of the
    per-sample cost. Neither: the batches as given.
    """
    positive_int("fisher_batch_size", chunk)
    if chunk_size is not None:
        positive_int("chunk_size", chunk_size)
    budget = None if max_memory is None else parse_memory(max_memory)
    batches = _split(iter_batches(batches, model), model, chunk, chunk_size, budget)
    mixing = mixes_samples(model)
    if mixing:
        if chunk == 1:
            raise InvalidArgument(
                f"per-sample gradients are undefined while BatchNorm layers {mixing[:3]} use "
                "batch statistics (train mode); call model.eval() first (after bn_warmup), or "
                "pass fisher_batch_size > 1 to use mini-batch gradients"
            )
        yield from _chunk_loop(model, loss_fn, batches, names, chunk, square=square)
        return
    plan = _Plan(model, names)
    params = dict(model.named_parameters())
    verified = False
    for (x, y), n_full in rechunk(batches, chunk):
        if not verified:
            _verify(model, loss_fn, plan, x, y)
            verified = True
        b = num_samples(x)
        pieces: list[Piece] = []
        if n_full:
            pieces.append((slice(0, n_full * chunk), chunk))
        if b > n_full * chunk:
            pieces.append((slice(n_full * chunk, b), b - n_full * chunk))
        result: dict[str, Tensor] = {}
        if plan.closed:
            recorder = _Recorder(plan.modules())
            try:
                xin = _input(x)
                loss = batch_loss(model, loss_fn, xin, y)
                _backward_for_deltas(loss, xin, [params[n] for n in plan.closed])
                result.update(_closed_form_chunks(plan, recorder, b, pieces, square))
            finally:
                recorder.close()
        if plan.vmapped:
            result.update(_other_chunks(model, loss_fn, x, y, plan.vmapped, pieces, square))
        yield {n: result[n] for n in names}, _num_chunks(pieces)


def _split(stream, model, chunk: int, chunk_size: int | None, budget: int | None):
    """The validated stream with batches cut to at most `chunk_size` samples.

    Without `chunk_size`, batches are cut to what fits `budget` bytes; sizes are rounded down
    to whole chunks of `chunk`.
    """
    for x, y in stream:
        if chunk_size is None and budget is not None:
            chunk_size = auto_chunk_size(model, x, budget)
        n = num_samples(x)
        step = n if chunk_size is None else max(chunk, chunk_size // chunk * chunk)
        for i in range(0, n, step):
            yield take(x, i, i + step), y[i : i + step]


def _chunk_loop(model, loss_fn, batches, names, chunk, *, square):
    """Chunk by chunk with plain autograd (for models that mix samples within a batch)."""
    params = dict(model.named_parameters())
    plist = [params[n] for n in names]
    for (x, y), _ in rechunk(batches, chunk):
        bounds = list(range(0, num_samples(x), chunk))
        grads: list[Mapping[str, Tensor]] = []
        for start in bounds:
            xc = take(x, start, start + chunk)
            loss = batch_loss(model, loss_fn, xc, y[start : start + chunk])
            g = torch.autograd.grad(loss, plist, allow_unused=True)
            grads.append(
                {n: torch.zeros_like(p) if t is None else t for n, p, t in zip(names, plist, g)}
            )
        if square:
            yield {n: sum(g[n] * g[n] for g in grads) for n in names}, len(grads)
        else:
            yield {n: torch.stack([g[n] for g in grads]) for n in names}, len(grads)
