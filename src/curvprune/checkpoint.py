"""Checkpoints: safetensors on disk, masks restored on load, never code execution.

A pruned model's state dict holds ``<module>.weight_orig`` and ``<module>.weight_mask`` (the
`torch.nn.utils.prune` parametrization). `load_checkpoint` re-applies those masks to a freshly
built dense model before loading, so a pruned checkpoint comes back pruned. A ``.pt`` / ``.pth``
file is read only with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from curvprune.errors import CheckpointError, OutputError

__all__ = [
    "check_checkpoint_file",
    "fold_masks",
    "load_checkpoint",
    "load_state",
    "read_checkpoint",
    "register_masks",
    "save_checkpoint",
    "save_tensors",
]

_MASK_SUFFIX = "_mask"
_PT_SUFFIXES = (".pt", ".pth")


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, metadata: dict[str, str] | None = None
) -> None:
    """Write ``model.state_dict()`` as safetensors, atomically (temp file, then rename).

    Args:
        model: The network, pruned (``weight_orig`` + ``weight_mask``) or dense.
        path: Target file, conventionally ``model.safetensors``.
        metadata: String pairs stored in the header, e.g. ``{"model": "mlp"}``; `load_checkpoint`
            checks them against what the caller expects.

    Raises:
        OutputError: If the file cannot be written (read-only folder, full disk); no temporary
            file is left behind.
    """
    save_tensors(model.state_dict(), path, metadata=metadata)


def save_tensors(
    tensors: dict[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write named tensors as safetensors, atomically, with the umask's file mode.

    Raises:
        OutputError: If the file cannot be written; the temporary file is removed.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    # clone() breaks storage sharing, which safetensors refuses to write.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    for key in _mask_keys(state):  # pruning masks as bool: a quarter of float32's bytes
        state[key] = state[key].bool()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        # safetensors creates its files with mode 0600; give it the mode open() would.
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:200]
        raise OutputError(f"cannot write {path}: {reason}") from err


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a checkpoint's tensors and metadata without touching any model.

    Returns:
        ``(state_dict, metadata)``; metadata is empty for ``.pt`` files.

    Raises:
        CheckpointError: If the file is missing, unreadable, not a flat dict of tensors, or of
            an unknown format.
    """
    path = check_checkpoint_file(Path(path))
    if path.suffix in _PT_SUFFIXES:
        state, metadata = _read_pt(path), {}
    else:
        state, metadata = _read_safetensors(path)
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"checkpoint {path} holds NaN or infinite values in {key}: it was saved from a "
                "diverged run"
            )
    return state, metadata


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` if it is an existing file; else a `CheckpointError` that says what it is.

    Raises:
        CheckpointError: Not found, a directory, a broken symlink or a symlink loop.
    """
    path = Path(path)
    try:
        path.resolve(strict=False)
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, RuntimeError):  # Python 3.11 raises RuntimeError on a symlink loop
        raise CheckpointError(f"checkpoint {path} is a symlink loop") from None
    if is_dir:
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not exists:
        if path.is_symlink():
            raise CheckpointError(f"checkpoint {path} is a broken symlink (or a symlink loop)")
        raise CheckpointError(f"checkpoint not found: {path} (looked in {path.resolve().parent})")
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"unsupported checkpoint format {path.suffix or '(none)'!r} for {path}; "
            "use .safetensors (or .pt / .pth, read with weights_only=True)"
        )
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except Exception as err:  # safetensors raises several types for a damaged header
        raise CheckpointError(f"corrupt checkpoint {path}: not a valid safetensors file") from err
    return state, metadata


def _read_pt(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types; all mean "refused"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read {path} with torch.load(weights_only=True) (corrupt, or it holds "
            f"objects other than tensors): {reason[:200]}"
        ) from err
    # Common wrappers: {"state_dict": ...} or {"model": ...}.
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a dict of name -> tensor)")
    return dict(obj)


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, expect: dict[str, str] | None = None
) -> dict[str, str]:
    """Load a checkpoint into ``model`` in place, re-applying any pruning masks it holds.

    Args:
        model: A model of the same architecture (dense or already pruned the same way).
        path: ``.safetensors`` (preferred) or ``.pt`` / ``.pth``.
        expect: Metadata the checkpoint must agree with where it records the key, e.g.
            ``{"model": "lenet5"}``.

    Returns:
        The checkpoint's metadata.

    Raises:
        CheckpointError: Missing, corrupt or unsafe file; metadata, keys or shapes that do not
            match the model.
    """
    state, metadata = read_checkpoint(path)
    if metadata.get("format") == "curvprune-pruned":
        raise CheckpointError(
            f"{path} holds a model with channels removed (written by save_pruned, e.g. by "
            "`prune --structured`): load it with curvprune.load_pruned; this takes "
            "dense or masked checkpoints"
        )
    for key, want in (expect or {}).items():
        have = metadata.get(key)
        if have is not None and have != str(want):
            raise CheckpointError(f"checkpoint {path} is for {key} {have!r}, not {want!r}")
    load_state(model, state, path)
    return metadata


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: os.PathLike) -> None:
    """Load a state dict read from ``source`` into ``model``, re-applying its pruning masks.

    Raises:
        CheckpointError: Keys, shapes or dtypes that do not match the model (an integer or
            bool tensor for a float parameter is refused, not cast).
    """
    _apply_masks(model, state, source)
    _check_keys(model, state, source)
    _check_dtypes(model, state, source)
    # The masks registered above are buffers in the state dict, so this overwrites them too.
    model.load_state_dict(state, strict=True)


def _check_dtypes(model: nn.Module, state: dict[str, torch.Tensor], path: os.PathLike) -> None:
    for name, param in model.named_parameters():
        saved = state.get(name)
        if param.is_floating_point() and saved is not None and not saved.is_floating_point():
            raise CheckpointError(
                f"checkpoint {path} stores {name} as {str(saved.dtype).removeprefix('torch.')}, "
                f"but the parameter is {str(param.dtype).removeprefix('torch.')}; refusing to "
                "cast it"
            )


def _mask_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """Keys of `torch.nn.utils.prune` masks: ``<name>_mask`` next to ``<name>_orig``."""
    return [
        k for k in state if k.endswith(_MASK_SUFFIX) and k[: -len(_MASK_SUFFIX)] + "_orig" in state
    ]


def fold_masks(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A masked state dict as plain weights: ``<name> = <name>_orig * <name>_mask``.

    The ``_orig`` and ``_mask`` entries go, so a freshly built dense model of the same
    architecture loads the result with ``load_state_dict(strict=True)``. Masks may be bool
    (`save_checkpoint` writes them so) or float (older checkpoints). Other entries are kept.
    """
    out = dict(state)
    for key in _mask_keys(state):
        name = key[: -len(_MASK_SUFFIX)]
        orig = out.pop(name + "_orig")
        mask = out.pop(key)
        out[name] = orig * mask.to(orig.dtype)
    return out


def register_masks(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give a fresh model the `torch.nn.utils.prune` masks that the masked `state` holds.

    Afterwards ``model.load_state_dict(state)`` finds its ``weight_orig`` / ``weight_mask``
    keys. Registered as a load-state-dict pre-hook, it lets a framework that loads the model's
    weights itself (Lightning resuming a run) restore a pruned model::

        model.register_load_state_dict_pre_hook(lambda m, sd, *rest: register_masks(m, sd))

    Raises:
        CheckpointError: a mask whose shape differs from its parameter's.
    """
    _apply_masks(model, state, "the state dict")


def _apply_masks(model: nn.Module, state: dict[str, torch.Tensor], path: os.PathLike) -> None:
    """Register `torch.nn.utils.prune` masks for every ``*_mask`` entry the model lacks."""
    own = model.state_dict()
    for key, mask in state.items():
        if not key.endswith(_MASK_SUFFIX) or key in own:
            continue
        module_name, _, tensor_name = key[: -len(_MASK_SUFFIX)].rpartition(".")
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            continue  # reported as an unexpected key by _check_keys
        param = getattr(module, tensor_name, None)
        if not isinstance(param, nn.Parameter):
            continue
        if param.shape != mask.shape:
            raise CheckpointError(
                f"checkpoint {path} does not match the model: mask {key} has shape "
                f"{tuple(mask.shape)}, the parameter {tuple(param.shape)}"
            )
        torch_prune.custom_from_mask(module, tensor_name, mask=mask.to(param.device).bool())


def _check_keys(model: nn.Module, state: dict[str, torch.Tensor], path: os.PathLike) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{what}: {', '.join(items[:3])}{more}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the model ({'; '.join(problems)})")
