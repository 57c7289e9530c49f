"""The ``curvprune export`` subcommand: its arguments and what it prints.

Registered by `curvprune.cli.parser` and `curvprune.cli.commands`; the work is
`curvprune.experiments.exporting.export_checkpoint`.
"""

from __future__ import annotations

import argparse


def add_export_parser(sub) -> None:
    """Add ``export CHECKPOINT --out FILE [--format safetensors|onnx]`` to the subparsers."""
    p = sub.add_parser("export", help="a checkpoint as plain weights (masks folded in) or as ONNX")
    p.add_argument("checkpoint", help="model.safetensors from train or prune --out")
    p.add_argument("--out", required=True, help="file to write (.safetensors or .onnx)")
    p.add_argument(
        "--format",
        choices=("safetensors", "onnx"),
        help="safetensors: plain weights that a freshly built model loads with strict=True; "
        "onnx: checked with onnxruntime (needs curvprune[export]); default: from --out",
    )


def run_export(args: argparse.Namespace) -> None:
    """Write the file and print one line saying what was written."""
    from curvprune.experiments.exporting import export_checkpoint

    done = export_checkpoint(args.checkpoint, args.out, format=args.format)
    what = (
        f"{done['folded']} masks folded into their weights"
        if done["format"] == "safetensors"
        else f"onnxruntime matches PyTorch within {done['max_abs_diff']:.2g}"
    )
    print(f"wrote {done['out']} ({done['format']}, {done['tensors']} tensors; {what})")


__all__ = ["add_export_parser", "run_export"]
