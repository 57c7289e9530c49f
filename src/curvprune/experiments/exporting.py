"""``curvprune export``: a run's checkpoint as plain weights (masks folded in) or as ONNX.

A masked checkpoint (``prune --out``) stores each pruned weight as ``<name>_orig`` and
``<name>_mask``; the plain file has ``<name> = orig · mask`` instead, which a freshly built
dense model loads with ``load_state_dict(strict=True)`` and which any tool that reads a
PyTorch state dict understands. ONNX export rebuilds the model (`build_model` from the
checkpoint's recorded arguments, or `load_pruned` for a structurally pruned file) and runs
`curvprune.structured.export_onnx`, which checks the file with onnxruntime.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from curvprune.checkpoint import fold_masks, load_checkpoint, read_checkpoint
from curvprune.errors import CheckpointError, InvalidArgument

#: Formats of ``curvprune export``.
EXPORT_FORMATS = ("safetensors", "onnx")
#: Metadata keys that `build_model` needs (written by ``train`` / ``prune --out``).
_SPEC = ("model", "in_channels", "num_classes", "image_size")


def export_format(out: str | os.PathLike, format: str | None) -> str:
    """`format`, or the one that `out`'s suffix names (``.onnx``; else safetensors)."""
    if format is None:
        return "onnx" if Path(out).suffix == ".onnx" else "safetensors"
    if format not in EXPORT_FORMATS:
        raise InvalidArgument(f"unknown format {format!r}; valid: {', '.join(EXPORT_FORMATS)}")
    return format


def _write_safetensors(state: dict, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _spec(metadata: dict[str, str], checkpoint) -> tuple[str, dict[str, int]]:
    missing = [k for k in _SPEC if k not in metadata]
    if missing:
        raise CheckpointError(
            f"{checkpoint} records no {', '.join(missing)} (curvprune train/prune --out write "
            "them); to export your own model, load it and call curvprune.export_onnx"
        )
    try:
        return metadata["model"], {k: int(metadata[k]) for k in _SPEC[1:]}
    except ValueError as err:
        raise CheckpointError(f"{checkpoint}: bad model arguments in metadata ({err})") from None


def _rebuild(checkpoint, metadata: dict[str, str]) -> torch.nn.Module:
    from curvprune.models import build_model
    from curvprune.models.pruned import load_pruned
    from curvprune.pruning.masks import make_permanent

    if metadata.get("format") == "curvprune-pruned":
        return load_pruned(checkpoint)
    name, sizes = _spec(metadata, checkpoint)
    model = build_model(name, **sizes)
    load_checkpoint(model, checkpoint)
    make_permanent(model)
    return model


def export_checkpoint(
    checkpoint: str | os.PathLike, out: str | os.PathLike, *, format: str | None = None
) -> dict[str, object]:
    """Write `checkpoint` as plain safetensors weights or as an ONNX file.

    Args:
        checkpoint: a ``.safetensors`` (or ``.pt``) file from ``curvprune train`` or
            ``prune --out``: dense, masked, or structurally pruned (``--structured``).
        out: the file to write.
        format: "safetensors" or "onnx" (default: from `out`'s suffix).

    Returns:
        ``{"format", "out", "tensors", "folded"}``: what was written, and how many masks were
        folded into their weights (safetensors); ``max_abs_diff`` of onnxruntime against
        PyTorch (onnx).

    Raises:
        CheckpointError: unreadable checkpoint, or (onnx) one without the model's arguments.
        InvalidArgument: an unknown format, or plain weights asked of a structurally pruned
            file (its smaller shapes need `curvprune.load_pruned`; export it to ONNX instead).
    """
    fmt = export_format(out, format)
    out = Path(out)
    state, metadata = read_checkpoint(checkpoint)
    if fmt == "safetensors":
        if metadata.get("format") == "curvprune-pruned":
            raise InvalidArgument(
                f"{checkpoint} already holds plain weights, of a model with channels removed: "
                "rebuild it with curvprune.load_pruned, or export it with --format onnx"
            )
        plain = fold_masks(state)
        folded = len(state) - len(plain)  # each fold: _orig and _mask become one tensor
        _write_safetensors(plain, out, {**metadata, "masks": "folded"})
        return {"format": fmt, "out": str(out), "tensors": len(plain), "folded": folded}
    from curvprune.structured.export import export_onnx

    model = _rebuild(checkpoint, metadata).eval()
    _, sizes = _spec(metadata, checkpoint)
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(
        2, sizes["in_channels"], sizes["image_size"], sizes["image_size"], generator=gen
    )
    diff = export_onnx(model, example, out)
    return {"format": fmt, "out": str(out), "tensors": len(state), "max_abs_diff": diff}


__all__ = ["EXPORT_FORMATS", "export_checkpoint", "export_format"]
