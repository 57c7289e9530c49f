"""Saving and reloading physically pruned models: safetensors plus plain data, no pickle.

A pruned model has the dense model's modules with smaller tensors and a few changed
attributes (``out_channels``, ``num_features``, ``num_heads``, ...). `save_pruned` writes the
weights as safetensors and, in the file's metadata, a JSON description: every module's name,
class and plain attributes (numbers, strings, tuples). `load_pruned` builds the dense model
(from the recorded `build_model` arguments, or a factory you pass), checks that its modules
match, sets the recorded attributes, resizes every parameter and buffer to the stored shape and
loads the weights. Nothing in the file is ever executed or unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping

import torch
from torch import nn

from curvprune.checkpoint import read_checkpoint, save_checkpoint
from curvprune.errors import CheckpointError, InvalidArgument, InvalidType

FORMAT = "curvprune-pruned"
VERSION = 1
#: `build_model` arguments recorded in the metadata (the same keys as run checkpoints).
SPEC_KEYS = ("model", "in_channels", "num_classes", "image_size")

_PLAIN = (bool, int, float, str, type(None))


def _plain(value: object) -> bool:
    if isinstance(value, _PLAIN):
        return True
    return isinstance(value, (tuple, list)) and all(_plain(v) for v in value)


def _class_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def describe(model: nn.Module) -> dict:
    """The plain-data architecture description that `save_pruned` stores."""
    modules = {}
    for name, m in model.named_modules():
        attrs = {
            k: v
            for k, v in vars(m).items()
            if not k.startswith("_") and k != "training" and _plain(v)
        }
        modules[name] = {"class": _class_name(m), "attrs": attrs}
    return {"format": FORMAT, "version": VERSION, "training": model.training, "modules": modules}


def _check_spec(spec: object) -> dict[str, str]:
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise InvalidType(
            "spec must be a dict of build_model arguments, e.g. {'model': 'resnet20', "
            "'in_channels': 1, 'num_classes': 10, 'image_size': 28}"
        )
    missing = [k for k in SPEC_KEYS if k not in spec]
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if missing or unknown:
        raise InvalidArgument(
            f"spec needs exactly the keys {', '.join(SPEC_KEYS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    return {k: str(spec[k]) for k in SPEC_KEYS}


def save_pruned(
    model: nn.Module, path: str | os.PathLike, *, spec: Mapping[str, object] | None = None
) -> None:
    """Write a (structurally pruned) model to a safetensors file that `load_pruned` rebuilds.

    Args:
        model: the network, e.g. from `prune_channels`.
        path: target file, conventionally ``*.safetensors`` (written atomically).
        spec: the `build_model` arguments of the dense model (``model``, ``in_channels``,
            ``num_classes``, ``image_size``), so that `load_pruned` needs no factory. Without
            it, `load_pruned` must be given a factory that builds the dense model.

    Raises:
        InvalidArgument: a model with `torch.nn.utils.prune` masks, or a bad `spec`.
    """
    if not isinstance(model, nn.Module):
        raise InvalidType(f"model must be a torch.nn.Module, got {type(model).__name__}")
    masked = [n for n, _ in model.named_buffers() if n.endswith("_mask")]
    if masked:
        raise InvalidArgument(
            f"the model carries torch.nn.utils.prune masks ({masked[0]}); save it with "
            "curvprune.checkpoint.save_checkpoint, or make the masks permanent first"
        )
    metadata = {**_check_spec(spec), "format": FORMAT, "architecture": json.dumps(describe(model))}
    save_checkpoint(model, path, metadata=metadata)


def load_pruned(
    path: str | os.PathLike,
    *,
    factory: Callable[[], nn.Module] | None = None,
    device: str | torch.device = "cpu",
    builder: Callable[..., nn.Module] | None = None,
) -> nn.Module:
    """Rebuild a model saved by `save_pruned`: identical modules, shapes and weights.

    `curvprune.load_pruned` is this function with the model registry's `build_model` as
    `builder`, so that files saved with a ``spec`` need no factory; this layer imports no model.

    Args:
        path: the ``.safetensors`` file.
        factory: builds the *dense* model; needed when the file records no `build_model`
            arguments or no `builder` is given (and then overrides them).
        device: where the tensors go.
        builder: ``builder(name, in_channels=..., num_classes=..., image_size=...)`` builds
            the dense model from the arguments the file records; only it is ever called on
            the file's say.

    Returns:
        The pruned model, in the train/eval mode it was saved in.

    Raises:
        CheckpointError: missing or corrupt file, not a `save_pruned` file, or a dense model
            whose modules differ from the recorded ones.
    """
    state, metadata = read_checkpoint(path)
    if metadata.get("format") != FORMAT or "architecture" not in metadata:
        raise CheckpointError(
            f"{path} was not written by save_pruned (no {FORMAT!r} architecture in its "
            "metadata); load plain checkpoints with curvprune.checkpoint.load_checkpoint"
        )
    try:
        arch = json.loads(metadata["architecture"])
        recorded = arch["modules"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable architecture description ({err})") from err
    if arch.get("version") != VERSION:
        raise CheckpointError(f"{path}: architecture version {arch.get('version')!r} unknown")
    model = _dense_model(path, metadata, factory, builder)
    _shrink(model, recorded, state, path)
    model.load_state_dict(state, strict=True)
    model.train(bool(arch.get("training", False)))
    return model.to(device)


def _dense_model(path, metadata: dict[str, str], factory, builder) -> nn.Module:
    if factory is not None:
        model = factory()
        if not isinstance(model, nn.Module):
            raise InvalidType(f"factory must return an nn.Module, got {type(model).__name__}")
        return model
    if "model" not in metadata:
        raise CheckpointError(
            f"{path} records no build_model arguments; pass factory=lambda: <dense model> "
            "(or save with spec={...})"
        )
    if builder is None:
        raise CheckpointError(
            f"{path} records build_model arguments: load it with curvprune.load_pruned, or "
            "pass factory=lambda: <dense model>"
        )

    try:
        sizes = {k: int(metadata[k]) for k in SPEC_KEYS[1:]}
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: bad build_model arguments in metadata ({err})") from err
    return builder(metadata["model"], **sizes)


def _shrink(model: nn.Module, recorded: dict, state: dict, path) -> None:
    """Give each module the recorded attributes and the stored tensor shapes."""
    modules = dict(model.named_modules())
    if set(modules) != set(recorded):
        extra = sorted(set(modules) - set(recorded))[:3]
        absent = sorted(set(recorded) - set(modules))[:3]
        raise CheckpointError(
            f"{path} does not match the dense model: modules only in the model {extra}, "
            f"only in the file {absent}"
        )
    for name, module in modules.items():
        entry = recorded[name]
        if entry.get("class") != _class_name(module):
            raise CheckpointError(
                f"{path} does not match the dense model: module {name!r} is "
                f"{entry.get('class')} in the file, {_class_name(module)} in the model"
            )
        for key, value in entry.get("attrs", {}).items():
            current = getattr(module, key, None)
            if key not in vars(module) or not _plain(current):
                continue  # only plain attributes that the fresh module has
            setattr(module, key, tuple(value) if isinstance(current, tuple) else value)
        prefix = f"{name}." if name else ""
        with torch.no_grad():
            for pname, param in list(module._parameters.items()):
                saved = state.get(prefix + pname)
                if param is not None and saved is not None and saved.shape != param.shape:
                    module._parameters[pname] = nn.Parameter(
                        torch.empty(saved.shape, dtype=saved.dtype),
                        requires_grad=param.requires_grad,
                    )
            for bname, buf in list(module._buffers.items()):
                saved = state.get(prefix + bname)
                if buf is not None and saved is not None and saved.shape != buf.shape:
                    module._buffers[bname] = torch.empty(saved.shape, dtype=saved.dtype)


__all__ = ["describe", "load_pruned", "save_pruned"]
