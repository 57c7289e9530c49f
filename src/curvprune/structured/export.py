"""ONNX export of (pruned) models, checked by running the file with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from curvprune._core.state import modes_kept
from curvprune.errors import InvalidArgument
from curvprune.structured.measure import as_inputs


def _require_export_deps():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise InvalidArgument(
            f"export_onnx needs onnx, onnxruntime and onnxscript ({err.name} is missing): "
            "pip install 'curvprune[export]'"
        ) from None
    return onnxruntime


def export_onnx(
    model: nn.Module,
    example_inputs,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> float:
    """Export `model` (in eval mode) to ONNX and verify the file with onnxruntime.

    Uses PyTorch's ``torch.export``-based exporter. The file is run by onnxruntime on the CPU
    on `example_inputs` (and, with a dynamic batch, on one more sample than that) and its
    outputs are compared with the model's.

    Args:
        model: the network; its train/eval flags are restored afterwards.
        example_inputs: a tensor or a tuple of tensors the model accepts (moved to the CPU).
        path: the ``.onnx`` file to write.
        dynamic_batch: make the first dimension of every input a symbolic batch size.
        rtol: relative tolerance of the check.
        atol: absolute tolerance of the check.

    Returns:
        The largest absolute difference between onnxruntime's and PyTorch's outputs.

    Raises:
        InvalidArgument: missing export dependencies or a bad `example_inputs`.
        RuntimeError: the exported file's outputs differ from the model's.
    """
    ort = _require_export_deps()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = model if all(p.device.type == "cpu" for p in model.parameters()) else None
    if cpu is None:
        import copy

        cpu = copy.deepcopy(model).cpu()
    inputs = tuple(t.cpu() for t in as_inputs(cpu, example_inputs))
    names = [f"input{i}" if len(inputs) > 1 else "input" for i in range(len(inputs))]
    dynamic = tuple({0: torch.export.Dim("batch")} for _ in inputs) if dynamic_batch else None
    with modes_kept(cpu, eval=True):
        # the exporter reports its progress on stdout and warns about its internals
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                cpu,
                inputs,
                str(path),
                dynamo=True,
                input_names=names,
                dynamic_shapes=dynamic,
                verbose=False,
            )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        checks = [inputs]
        if dynamic_batch:
            gen = torch.Generator().manual_seed(0)
            checks.append(
                tuple(
                    torch.randn((t.shape[0] + 1, *t.shape[1:]), generator=gen, dtype=t.dtype)
                    if t.is_floating_point()
                    else torch.cat([t, t[:1]])
                    for t in inputs
                )
            )
        worst = 0.0
        for args in checks:
            with torch.no_grad():
                want = cpu(*args)
            want = [want] if isinstance(want, torch.Tensor) else list(want)
            got = session.run(None, {n: t.numpy() for n, t in zip(names, args)})
            for w, g in zip(want, got):
                g = torch.from_numpy(g).to(w.dtype)
                worst = max(worst, (g - w).abs().max().item())
                if not torch.allclose(g, w, rtol=rtol, atol=atol):
                    raise RuntimeError(
                        f"ONNX file {path} disagrees with the model: max abs difference "
                        f"{(g - w).abs().max().item():.3g} (batch {args[0].shape[0]})"
                    )
    return worst


__all__ = ["export_onnx"]
