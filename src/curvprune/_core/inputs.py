"""Model inputs: a tensor or a dict of tensors, and how the model is called on them.

Inputs are a tensor (the sample dimension first) or a dict of such tensors, all with the same
number of samples, such as a Hugging Face tokenizer's ``{"input_ids", "attention_mask"}``. The
model is called as ``model(x)`` for a tensor and ``model(**x)`` for a dict, unless the caller
gave a ``forward(model, inputs) -> outputs`` callable (`custom_forward`), which every
estimator then uses instead: ``forward=lambda model, x: model(**x).logits`` turns a Hugging
Face model's output object into a logits tensor.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from curvprune.errors import InvalidType

Inputs = Tensor | dict[str, Tensor]
Forward = Callable[[nn.Module, Inputs], Any]

# model -> the caller's forward(model, inputs), while a public function runs with forward=
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def num_samples(x: Inputs) -> int:
    """Samples in `x`: the first dimension of the tensor (of the dict's first tensor)."""
    if isinstance(x, Mapping):
        return next(iter(x.values())).shape[0]
    return x.shape[0]


def take(x: Inputs, start: int, stop: int) -> Inputs:
    """Samples ``start:stop`` of `x`."""
    if isinstance(x, Mapping):
        return {k: v[start:stop] for k, v in x.items()}
    return x[start:stop]


def cat(xs: list[Inputs]) -> Inputs:
    """`xs` concatenated along the sample dimension."""
    if isinstance(xs[0], Mapping):
        return {k: torch.cat([x[k] for x in xs]) for k in xs[0]}
    return torch.cat(xs)


def split_chunks(x: Inputs, chunks: int, size: int) -> Inputs:
    """(chunks·size, ...) → (chunks, size, ...), tensor by tensor."""
    if isinstance(x, Mapping):
        return {k: v.reshape(chunks, size, *v.shape[1:]) for k, v in x.items()}
    return x.reshape(chunks, size, *x.shape[1:])


def call_model(model: nn.Module, x: Inputs) -> Any:
    """The model's outputs on `x`: the caller's forward if set, else model(x) or model(**x)."""
    forward = _FORWARDS.get(model)
    if forward is not None:
        return forward(model, x)
    return model(**x) if isinstance(x, Mapping) else model(x)


class _Forward(nn.Module):
    """``forward(model, x)`` as a module, so that `functional_call` can swap the model's tensors."""

    def __init__(self, model: nn.Module, forward: Forward) -> None:
        super().__init__()
        self.model = model
        self.fn = forward

    def forward(self, x):  # noqa: D102
        return self.fn(self.model, x)


def functional_forward(model: nn.Module, tensors: dict[str, Tensor], x: Inputs) -> Any:
    """`call_model` with the model's parameters and buffers replaced by `tensors` (by name)."""
    forward = _FORWARDS.get(model)
    if forward is not None:
        wrapper = _Forward(model, forward)
        return functional_call(wrapper, {f"model.{k}": v for k, v in tensors.items()}, (x,))
    if isinstance(x, Mapping):
        return functional_call(model, tensors, (), dict(x))
    return functional_call(model, tensors, (x,))


@contextlib.contextmanager
def custom_forward(model: nn.Module, forward: Forward | None) -> Iterator[None]:
    """Within the block, every estimator calls `model` through ``forward(model, inputs)``."""
    if forward is None:
        yield
        return
    if not callable(forward):
        raise InvalidType(
            f"forward must be a callable forward(model, inputs) -> outputs, got "
            f"{type(forward).__name__}"
        )
    previous = _FORWARDS.get(model)
    _FORWARDS[model] = forward
    try:
        yield
    finally:
        if previous is None:
            del _FORWARDS[model]
        else:
            _FORWARDS[model] = previous


def accepts_forward(fn: Callable) -> Callable:
    """Give a public ``fn(model, ...)`` a ``forward=`` keyword that wraps it in `custom_forward`."""

    @functools.wraps(fn)
    def wrapper(model, *args, forward: Forward | None = None, **kwargs):
        with custom_forward(model, forward):
            return fn(model, *args, **kwargs)

    return wrapper


__all__ = [
    "Forward",
    "Inputs",
    "accepts_forward",
    "call_model",
    "cat",
    "custom_forward",
    "functional_forward",
    "num_samples",
    "split_chunks",
    "take",
]
